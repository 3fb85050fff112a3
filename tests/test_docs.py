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


MD_REFERENCE = re.compile(r"(?<![\w./-])([\w./-]*\w\.md)\b")
# Names that look like Markdown files and are not references: outputs that commands write
# (`--md r.md`, the quickstart's `table.md`, the benchmark's `mini_paper.md` in its output folder)
# and the attribute `args.md` of tools/parse_test_res.py.
NOT_OURS = {"r.md", "args.md", "table.md", "mini_paper.md"}


def missing_md_references(rel, text):
    """``*.md`` files that ``text`` (the file ``rel``) names and the repository does not have. A name
    resolves against the file's own folder or the repository root, nothing else: a bare
    ``METHOD.md`` in ``dpl/`` is a reference to a file outside the repository, not to docs/METHOD.md."""
    missing = []
    for name in MD_REFERENCE.findall(text):
        if name in NOT_OURS or name.startswith(("http", "//")):
            continue
        here = os.path.join(REPO, os.path.dirname(rel), name)
        if not (os.path.isfile(here) or os.path.isfile(os.path.join(REPO, name))):
            missing.append(name)
    return missing


def repository_text_files():
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("output", "__pycache__", "data")]
        for name in files:
            if name.endswith((".py", ".md", ".sh", ".yaml")):
                yield os.path.relpath(os.path.join(root, name), REPO)


def test_no_file_names_a_markdown_file_the_repository_does_not_have():
    """Developer notes (method spec, paper notes, Dassl API notes, style) live outside the
    repository; code, scripts, configs and docs may only point to its own pages."""
    this = os.path.relpath(os.path.abspath(__file__), REPO)
    offenders = {rel: missing for rel in repository_text_files() if rel != this
                 for missing in [missing_md_references(rel, read(rel))] if missing}
    assert not offenders, offenders


SECTION_REFERENCE = re.compile(r'(docs/[A-Za-z_]+\.md),? \(?"([^"]+)"')


def missing_sections(text):
    """``docs/PAGE.md, "Heading"`` references (in code, scripts, configs) whose page has no such heading."""
    missing = []
    for page, heading in SECTION_REFERENCE.findall(text):
        path = os.path.join(REPO, page)
        if not os.path.isfile(path) or github_slug(heading) not in anchors(read(page)):
            missing.append(f'{page} "{heading}"')
    return missing


def test_every_section_a_file_cites_exists():
    this = os.path.relpath(os.path.abspath(__file__), REPO)
    offenders = {rel: missing for rel in repository_text_files() if rel != this
                 for missing in [missing_sections(read(rel))] if missing}
    assert not offenders, offenders


def test_the_section_checker_fails_on_a_moved_section():
    text = ('(docs/DATASETS.md, "Your own data") docs/SCALING.md "Multi-GPU"\n'
            '(docs/DATASETS.md, "Our own data") docs/NOWHERE.md "Multi-GPU"')
    assert missing_sections(text) == ['docs/DATASETS.md "Our own data"', 'docs/NOWHERE.md "Multi-GPU"']


def test_the_reference_checker_fails_on_names_outside_the_repository():
    assert missing_md_references("dpl/model.py", "(METHOD.md §2), docs/METHOD.md, see PAPER_NOTES.md") == [
        "METHOD.md", "PAPER_NOTES.md"]
    assert missing_md_references("docs/CONFIG.md", "[m](METHOD.md) [r](../README.md) NOTES.md") == ["NOTES.md"]


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


# --- Docs stay true by construction (issue 26, point 2) ---------------------------------------------
# Three checkers, each a function of a document's text that returns its problems, so that the tests
# below can feed them a deliberately broken synthetic document as well as the real ones.

FENCE = re.compile(r"^(```|~~~)(.*?)\n(.*?)^\1[ \t]*$", flags=re.S | re.M)


def without_code(text):
    """The text with fenced blocks and inline code spans blanked (links inside them are examples)."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return re.sub(r"`[^`\n]*`", "``", text)


def github_slug(heading):
    """GitHub's anchor of a Markdown heading: lower case, formatting and punctuation dropped
    (letters, digits, spaces, ``-`` and ``_`` kept), each space a ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link keeps its text
    text = text.replace("`", "").replace("*", "").lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(text):
    """Every heading anchor of a document, with GitHub's -1, -2, ... suffixes for repeated headings."""
    seen, found = {}, set()
    for line in FENCE.sub("", text).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = github_slug(m.group(1))
            found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    found.update(re.findall(r'<a (?:name|id)="([^"]+)"', text))
    return found


def broken_links(doc_path, text):
    """Relative links (``[x](path)``, ``[x](path#anchor)``, ``[x](#anchor)``) that do not resolve."""
    problems = []
    own_anchors = anchors(text)
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", without_code(text)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        if not path:
            if anchor not in own_anchors:
                problems.append(f"{target}: no heading with the anchor #{anchor}")
            continue
        file = os.path.normpath(os.path.join(os.path.dirname(doc_path), path))
        if not os.path.exists(file):
            problems.append(f"{target}: no file {os.path.relpath(file, REPO)}")
        elif anchor:
            if not file.endswith(".md"):
                problems.append(f"{target}: an anchor into a file that is not Markdown")
                continue
            with open(file, encoding="utf-8") as f:
                if anchor not in anchors(f.read()):
                    problems.append(f"{target}: no heading with the anchor #{anchor}")
    return problems


def test_github_slugs_follow_githubs_rules():
    assert github_slug("The artifact `prompt_config.json`") == "the-artifact-prompt_configjson"
    assert github_slug("Run the protocols on a cluster (SLURM)") == "run-the-protocols-on-a-cluster-slurm"
    assert github_slug("Using `train.py` directly") == "using-trainpy-directly"
    assert github_slug("4. Torch versions: the real Dassl's limits") == "4-torch-versions-the-real-dassls-limits"
    assert github_slug("Reproducibility, resuming and GPUs") == "reproducibility-resuming-and-gpus"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_and_anchor_resolves(doc):
    problems = broken_links(os.path.join(REPO, doc), read(doc))
    assert not problems, problems


def test_the_link_checker_fails_on_a_broken_link_and_anchor():
    doc = os.path.join(REPO, "docs", "SYNTHETIC.md")
    text = ("# Top\n[ok](CONFIG.md#the-artifact-prompt_configjson) [ok](#top) [web](https://x.org/#y)\n"
            "[gone](MISSING.md) [bad anchor](CONFIG.md#no-such-section) [self](#nowhere)\n"
            "`[in code](MISSING2.md)`\n")
    assert broken_links(doc, text) == [
        "MISSING.md: no file docs/MISSING.md",
        "CONFIG.md#no-such-section: no heading with the anchor #no-such-section",
        "#nowhere: no heading with the anchor #nowhere"]


# Config keys. The full default config is built the way train.py builds it: Dassl's defaults, then
# every key our trainers and datasets add (trainers/config.py, extend_cfg).

def default_cfg():
    import train

    cfg = train.get_cfg_default()
    train.extend_cfg(cfg)
    return cfg


def config_keys(node, prefix=""):
    """Every key of a config, nodes included (``TRAINER``, ``TRAINER.DPL``, ``TRAINER.DPL.PREC``...)."""
    for key, value in node.items():
        yield prefix + key
        if isinstance(value, dict):
            yield from config_keys(value, prefix + key + ".")


_COMPONENT = r"(?:[A-Z0-9_]*\{[A-Z0-9_,]+\}[A-Z0-9_]*|[A-Z0-9_]+|\*)"
KEY_PATTERN = re.compile(r"(?<![A-Za-z0-9_{,])([A-Z][A-Z0-9_]*(?:\." + _COMPONENT + r")+)")
# Keys of other repositories that the docs name on purpose: the KgCoOp recipe of
# docs/BRING_YOUR_TRAINER.md adds the first two itself (tested above) and says KgCoOp has no third.
FOREIGN_KEYS = {"TRAINER.COOP.W", "TRAINER.COOP.ALPHA", "TRAINER.KGCOOP"}


def expand_braces(key):
    brace = re.search(r"\{([^}]*)\}", key)
    if not brace:
        return [key]
    return [k for option in brace.group(1).split(",")
            for k in expand_braces(key[:brace.start()] + option + key[brace.end():])]


def named_keys(text, top_level):
    """Config keys a document names (``TRAINER.DPL.SEARCH.PATIENCE``, ``MODEL.BACKBONE.{PATH,CONFIG}``,
    ``TRAINER.DPL.SEARCH.*``): dotted upper-case names whose first part is a top-level config node."""
    for match in KEY_PATTERN.findall(text):
        if match.split(".")[0] in top_level:
            yield from expand_braces(match)


def unknown_keys(text, cfg):
    known = set(config_keys(cfg))
    return sorted({key for key in named_keys(text, set(cfg)) if key not in FOREIGN_KEYS
                   and (key[:-2] if key.endswith(".*") else key) not in known})


# Keys this repository adds that no user needs to read about, each with the reason.
INTERNAL_KEYS = {
    # Defined only so that CoCoOp's trainer file, copied in (docs/BRING_YOUR_TRAINER.md), finds its
    # keys; CoCoOp's own README documents them and no trainer of ours reads them.
    "TRAINER.COCOOP.N_CTX": "CoCoOp's key, read only by a copied-in CoCoOp trainer",
    "TRAINER.COCOOP.CTX_INIT": "CoCoOp's key, read only by a copied-in CoCoOp trainer",
}


def user_facing_keys(cfg):
    """The leaf keys this repository adds to Dassl's defaults (trainers/config.py), minus INTERNAL_KEYS."""
    from dassl.config import get_cfg_default

    dassl_keys = set(config_keys(get_cfg_default()))
    leaves = {k for k in config_keys(cfg) if not isinstance(cfg_value(cfg, k), dict)}
    return sorted(leaves - dassl_keys - set(INTERNAL_KEYS))


def cfg_value(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def documented(key, texts):
    """A key is documented where a doc names it in full, or names its last part in backquotes in a
    paragraph that names a sibling in full (``TRAINER.DPL.SEARCH.ALPHA_LR``, `ALPHA_BETAS`)."""
    parent, leaf = key.rsplit(".", 1)
    for text in texts:
        for paragraph in re.split(r"\n\s*\n", text):
            names = set(named_keys(paragraph, {key.split(".")[0]}))
            if key in names:
                return True
            if f"`{leaf}`" in paragraph and any(n.startswith(parent + ".") for n in names):
                return True
    return False


def undocumented_keys(texts, cfg):
    return [key for key in user_facing_keys(cfg) if not documented(key, texts)]


@pytest.mark.parametrize("doc", DOCS)
def test_every_config_key_a_doc_names_exists(doc):
    problems = unknown_keys(read(doc), default_cfg())
    assert not problems, f"{doc} names config keys that do not exist: {problems}"


def test_every_user_facing_config_key_is_documented():
    cfg = default_cfg()
    assert set(INTERNAL_KEYS) <= set(config_keys(cfg)), "an INTERNAL_KEYS entry no longer exists"
    assert len(user_facing_keys(cfg)) > 40
    problems = undocumented_keys([read(doc) for doc in DOCS], cfg)
    assert not problems, f"no doc explains these keys (docs/CONFIG.md is their place): {problems}"


def test_the_key_checkers_fail_on_a_misspelt_key_and_an_undocumented_one():
    cfg = default_cfg()
    text = ("Set `TRAINER.DPL.SEARCH.PATIENCE` or `TRAINER.DPL.SEARCH.PATEINCE`; `MODEL.BACKBONE.{PATH,CONFIGS}`;\n"
            "`TRAINER.DPL.SEARCH.*`, `TRAINER.DPLX.*` and `OPTIM.MAX_EPOCH 20`.\n")
    assert unknown_keys(text, cfg) == ["MODEL.BACKBONE.CONFIGS", "TRAINER.DPL.SEARCH.PATEINCE", "TRAINER.DPLX.*"]
    texts = [read(doc).replace("TRAINER.DPL.SEARCH.PLOT", "TRAINER.DPL.SEARCH.P_LOT") for doc in DOCS]
    assert undocumented_keys(texts, cfg) == ["TRAINER.DPL.SEARCH.PLOT"]
    assert documented("TRAINER.DPL.SEARCH.ALPHA_BETAS", ["`TRAINER.DPL.SEARCH.ALPHA_LR`, `ALPHA_BETAS`"])
    assert not documented("TRAINER.DPL.SEARCH.ALPHA_BETAS", ["`TRAINER.DPL.SEARCH.ALPHA_LR`\n\n`ALPHA_BETAS`"])


# Commands. Every command of a fenced bash block that runs a repository script must name a script
# that exists, and every --flag it gives must be one that script accepts: Python scripts' flags come
# from their own argparse parser (get_parser(), else the parser main() builds, captured before it
# parses); shell scripts' from the script's text (its usage line or its case patterns).

class _Captured(Exception):
    pass


def python_flags(rel):
    """The option strings of a repository Python script (``train.py``, ``tools/x.py``, ``demo/x.py``...)."""
    import argparse
    import importlib

    module = importlib.import_module(rel[:-3].replace("/", "."))
    if hasattr(module, "get_parser"):
        parsers = [module.get_parser()]
    else:
        parsers = []

        def capture(self, args=None, namespace=None):
            parsers.append(self)
            raise _Captured

        original = argparse.ArgumentParser.parse_known_args
        argparse.ArgumentParser.parse_known_args = capture
        try:
            module.main(["--help"])
        except _Captured:
            pass
        finally:
            argparse.ArgumentParser.parse_known_args = original
    assert parsers, f"{rel}: no argparse parser found"
    return {s for action in parsers[0]._actions for s in action.option_strings}


def shell_flags(rel):
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", read(rel)))


def shell_commands(block):
    """The commands of a bash block: continuation lines joined, comments dropped, split at ; && || |."""
    import shlex

    text = re.sub(r"\\\n", " ", block)
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split, lexer.commenters = True, "#"
        try:
            tokens = list(lexer)
        except ValueError:  # an unbalanced quote in a placeholder line
            continue
        command = []
        for token in tokens + [";"]:
            if token in (";", "&&", "||", "|", "&"):
                if command:
                    yield command
                command = []
            else:
                command.append(token)


def repository_script(command):
    """(script, the tokens after it) of a command that runs a repository script, else None."""
    while command and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", command[0]):  # VAR=value prefixes
        command = command[1:]
    if not command:
        return None
    word, rest = os.path.basename(command[0]), command[1:]
    if word in ("bash", "sh"):
        return (rest[0], rest[1:]) if rest and rest[0].endswith(".sh") else None
    if word in ("python", "python3"):
        if rest[:1] == ["-m"] and len(rest) > 1:
            return rest[1].replace(".", "/") + ".py", rest[2:]
        return (rest[0], rest[1:]) if rest and rest[0].endswith(".py") else None
    if word == "torchrun":  # torchrun's own flags come before the script
        for i, token in enumerate(rest):
            if token.endswith(".py"):
                return token, rest[i + 1:]
    return None


def bad_commands(text, flags_of=None):
    flags_of = {} if flags_of is None else flags_of
    problems = []
    for lang, block in ((m.group(2).strip(), m.group(3)) for m in FENCE.finditer(text)):
        if lang not in ("bash", "sh", "shell"):
            continue
        for command in shell_commands(block):
            found = repository_script(command)
            if not found:
                continue
            script, args = found
            if script.startswith("/") or "$" in script or "<" in script:
                continue
            if not os.path.isfile(os.path.join(REPO, script)):
                problems.append(f"{script}: no such script")
                continue
            if script not in flags_of:
                flags_of[script] = python_flags(script) if script.endswith(".py") else shell_flags(script)
            for arg in args:
                flag = arg.strip("[]").split("=", 1)[0]
                if flag.startswith("--") and " " not in arg and flag not in flags_of[script]:
                    problems.append(f"{script}: no flag {flag}")
    return problems


def test_every_command_in_the_docs_names_scripts_and_flags_that_exist():
    flags_of = {}
    problems = {doc: bad_commands(read(doc), flags_of) for doc in DOCS}
    problems = {doc: p for doc, p in problems.items() if p}
    assert not problems, problems
    assert {"train.py", "tools/predict.py", "scripts/dpl/fewshot.sh", "scripts/gpu_check.sh"} <= set(flags_of)


def test_the_command_checker_fails_on_a_missing_script_and_an_unknown_flag():
    text = ("```bash\n"
            "DATA=x bash scripts/dpl/fewshot.sh dtd   # fine\n"
            "bash scripts/dpl/fewshots.sh dtd && python tools/predict.py --run r --topk 5 --top-k 5\n"
            "python train.py --root d \\\n    --trainer DPLTrain --no-such-flag\n"
            "torchrun --nproc_per_node 2 train.py --seed 1 --sed 1\n"
            "bash scripts/gpu_check.sh --keep --keeps\n"
            "python -m demo.quickstart --shots 4 --shot 4\n"
            "```\n"
            "```python\npython tools/predict.py --not-checked\n```\n")
    assert bad_commands(text) == [
        "scripts/dpl/fewshots.sh: no such script", "tools/predict.py: no flag --top-k",
        "train.py: no flag --no-such-flag", "train.py: no flag --sed", "scripts/gpu_check.sh: no flag --keeps",
        "demo/quickstart.py: no flag --shot"]


def test_readme_is_a_short_front_door():
    """Issue 26, point 1: at most 250 lines; the two set-up commands exactly as CI calls them; the
    demo table between its markers; a link to every docs/ page, through the index or directly."""
    text = read("README.md")
    assert len(text.splitlines()) <= 250
    assert "bash scripts/quickstart.sh" in text and "\nbash scripts/test.sh " in text
    start, end = text.index("<!-- demo-table:start -->"), text.index("<!-- demo-table:end -->")
    assert start < end and "| DPL (searched)" in text[start:end]
    linked = set(re.findall(r"\]\((docs/[A-Za-z_]+\.md)", text))
    index = set(re.findall(r"\]\(([A-Za-z_]+\.md)\)", read("docs/README.md")))
    pages = {os.path.basename(p) for p in DOCS if p.startswith("docs/")} - {"README.md"}
    assert "docs/README.md" in linked and pages <= index, pages - index
