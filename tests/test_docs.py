"""The docs state facts about this repository; check them against it (paths, names, numbers, recipes)."""
import glob
import importlib.metadata
import os
import re
from types import SimpleNamespace

import pytest
import torch
from yacs.config import CfgNode as CN

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))
TOP_LEVEL = ("benchmarks", "clip", "configs", "dassl", "datasets", "demo", "docs", "dpl", "scripts", "tests",
             "tools", "trainers")
# Files of other repositories that the docs name on purpose (a trainer to copy in, the real repos' files).
FOREIGN = {"trainers/kgcoop.py", "configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml",
           "trainers/independentVL.py", "trainers/cocoop.py"}


def read(rel):
    with open(os.path.join(REPO, rel), encoding="utf-8") as f:
        return f.read()


def doc_paths(text):
    """Backquoted repository paths (``dir/...``), braces expanded; placeholders like <Trainer> dropped."""
    for span in re.findall(r"`([^`\s]+)`", text):
        if span.split("/")[0] not in TOP_LEVEL or "/" not in span or "<" in span:
            continue
        brace = re.search(r"\{([^}]*)\}", span)
        options = brace.group(1).split(",") if brace else [""]
        for option in options:
            yield span.replace(brace.group(0), option) if brace else span


@pytest.mark.parametrize("doc", DOCS)
def test_every_repository_path_a_doc_names_exists(doc):
    missing = [p for p in doc_paths(read(doc))
               if p not in FOREIGN and not glob.glob(os.path.join(REPO, p.rstrip("/")))]
    assert not missing, f"{doc} names paths that are not in the repository: {missing}"


def test_no_file_points_to_project_only_docs():
    """The Dassl API notes and dependency notes live outside the repository; nothing may cite them."""
    project_only = re.compile(r"DASSL_API\.md|(?<![A-Z_])" + "NOTES" + r"\.md")
    offenders = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("output", "__pycache__")]
        for name in files:
            path = os.path.join(root, name)
            if name.endswith((".py", ".md", ".sh", ".yaml")) and path != os.path.abspath(__file__):
                with open(path, encoding="utf-8", errors="replace") as f:
                    if project_only.search(f.read()):
                        offenders.append(os.path.relpath(path, REPO))
    assert not offenders


# --- docs/BRING_YOUR_TRAINER.md: the KgCoOp recipe (issue 15, point 12) -----------------------------

def python_block_defining(doc, name):
    for block in re.findall(r"```python\n(.*?)```", read(doc), flags=re.S):
        if f"def {name}(" in block:
            return block
    raise AssertionError(f"{doc} has no python block defining {name}")


def test_kgcoop_recipe_from_the_doc_builds_kgcoops_keys_and_keeps_ours(tmp_path):
    from dassl.config import get_cfg_default
    from trainers.config import extend_cfg

    namespace = {"CN": CN}
    exec(python_block_defining("docs/BRING_YOUR_TRAINER.md", "_add_kgcoop"), namespace)
    cfg = get_cfg_default()
    extend_cfg(cfg)
    namespace["_add_kgcoop"](cfg)
    assert (cfg.TRAINER.COOP.W, cfg.TRAINER.COOP.ALPHA) == (1.0, 1.0)
    assert set(cfg.LOSS) == {"GM", "NAME", "ALPHA", "T", "LAMBDA"}
    assert cfg.TRAINER.COOP.N_CTX == 16 and cfg.TRAINER.COOP.CLASS_TOKEN_POSITION == "end"  # node kept

    yaml_fix = re.search(r"```yaml\n(.*?)```", read("docs/BRING_YOUR_TRAINER.md"), flags=re.S).group(1)
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text("TRAINER:\n  COOP:\n" + yaml_fix.strip("\n") + "\n")
    cfg.merge_from_file(str(fixed))
    assert cfg.TRAINER.COOP.CTX_INIT == "a photo of a"  # truthy: KgCoOp then uses "a photo of a"

    original = tmp_path / "kgcoop.yaml"
    original.write_text("TRAINER:\n  COOP:\n    CTX_INIT: True\n")
    with pytest.raises(ValueError, match="CTX_INIT"):  # what the doc says: refused, type mismatch
        cfg.merge_from_file(str(original))


def test_bring_your_trainer_names_kgcoops_real_config_and_both_scripts():
    text = read("docs/BRING_YOUR_TRAINER.md")
    assert "KGCOOP = CN()" not in text and "vit_b16_ep50_ctxv1" not in text
    assert "CFG=vit_b16_ep100_ctxv1" in text
    assert "scripts/dpl/train.sh" in text and "scripts/dpl/fewshot.sh" in text
    assert "needs a CUDA GPU" in text
    assert "ZeroshotCLIP2" in text and "load_clip_to_cpu" in text


# --- docs/COOP_CHECKOUT.md (issue 15, point 11) ----------------------------------------------------

def test_coop_checkout_puts_the_dpl_line_after_the_docstring():
    block = python_block_defining("docs/COOP_CHECKOUT.md", "extend_cfg")
    body = block.split("def extend_cfg(cfg):\n", 1)[1]
    first_statement = body.split('"""')[2].strip().splitlines()[0]  # after the closing docstring quotes
    assert body.lstrip().startswith('"""') and first_statement.startswith("extend_dpl_cfg(cfg)")


def test_coop_checkout_states_coops_layout_and_the_torch_cap_right():
    text = read("docs/COOP_CHECKOUT.md")
    assert "CoOp has no `trainers/__init__.py`" not in text and "empty `trainers/__init__.py`" in text
    assert "mkdir -p tools" in text
    assert "`CoOp`, `CoCoOp`, `ZeroshotCLIP` and\n`ZeroshotCLIP2`" in text
    # The torch cap is Dassl's: open_clip itself asks only for torch >= 2.0.
    torch_requirements = [r for r in importlib.metadata.requires("open_clip_torch") if r.startswith("torch>")
                          and "extra" not in r]
    assert torch_requirements == ["torch>=2.0"]
    assert "open_clip 3.3 accepts torch 2.0–2.5" not in text and "only torch ≥ 2.0" in text


# --- docs/BASELINES.md and docs/ANALYSIS.md: the baselines' sizes (issue 15, point 13) ------------------------------------------

def script_default_cfg(trainer):
    match = re.search(rf"^\s*{trainer}\) echo \"([^\"]+)\"", read("scripts/dpl/_lib.sh"), flags=re.M)
    return match.group(1)


def test_docs_state_the_ivlp_depth_and_parameters_the_scripts_run():
    """The same count tools/complexity.py reports, on a ViT-B/16-shaped CLIP built on the meta device."""
    import train
    from dassl.engine import TRAINER_REGISTRY
    from dpl.cost import trainable_parameters
    from tests.helpers.tiny_clip import VIT_B16, build_tiny_clip

    name = script_default_cfg("IVLP")
    cfg = train.setup_cfg(train.get_parser().parse_args(
        ["--config-file", os.path.join(REPO, "configs", "trainers", "IVLP", f"{name}.yaml")]))
    with torch.device("meta"):
        clip_model = build_tiny_clip(VIT_B16).requires_grad_(False)
    model = TRAINER_REGISTRY.get("IVLP").build_baseline(SimpleNamespace(cfg=cfg), clip_model, ["x"])
    depth = cfg.TRAINER.IVLP.PROMPT_DEPTH_TEXT
    assert (depth, cfg.TRAINER.IVLP.PROMPT_DEPTH_VISION, trainable_parameters(model)) == (12, 12, 30720)
    baselines, analysis = (" ".join(read(f"docs/{page}.md").split()) for page in ("BASELINES", "ANALYSIS"))
    assert f"`{name}` (IVLP: 2+2 tokens at **depth 12** in both encoders, 30,720 parameters" in baselines
    assert "23,040 at depth 9 (its key defaults) and 30,720 at depth 12" in analysis
