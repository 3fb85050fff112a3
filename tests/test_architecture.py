"""What may import what (docs/ARCHITECTURE.md, "What may import what"): the imports of every module,
parsed with ``ast`` (lazy imports inside functions included), checked against one table."""
import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = ("dpl", "dassl", "clip", "datasets", "trainers", "tools", "demo", "benchmarks", "tests", "train")
# The foundation modules of dpl that the engine may use: the user errors, the atomic writes and
# checkpoint names, the table of config keys, the image loader, the torch-only rank helpers.
DPL_FOUNDATION = ("dpl.errors", "dpl.io", "dpl.run_keys", "dpl.images", "dpl.distributed")
# Layer -> the modules of ours it may import (a name allows the module and everything below it).
# Imports inside one's own layer are always allowed. "*" allows everything.
ALLOWED = {
    "dpl": (),
    "clip": ("dpl",),
    "dassl": DPL_FOUNDATION,
    "datasets": ("dassl", "dpl", "demo.world"),
    "trainers": ("dassl", "dpl", "clip"),
    "demo": ("dpl",),
    "demo.quickstart": ("demo", "dpl", "dassl", "datasets", "trainers", "clip", "train", "tools"),
    "train": ("dpl", "dassl", "datasets", "trainers", "clip"),
    "tools": ("dpl", "dassl", "datasets", "trainers", "clip", "train", "demo"),
    "benchmarks": ("dpl", "dassl", "datasets", "trainers", "clip", "train", "demo", "tools",
                   "tests.helpers"),
    "tests": ("*",),
}


def layer_of(module):
    """The ALLOWED row of a module: its most specific entry (``demo.quickstart`` before ``demo``)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in ALLOWED:
            return ".".join(parts[:n])
    raise AssertionError(f"{module}: no row in ALLOWED")


def imported_modules(source, module, is_package=False):
    """Absolute names of the modules of ours that ``source`` (the text of ``module``; an ``__init__``
    when ``is_package``) imports."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if package else []
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module]
        else:
            continue
        for name in names:
            if name and name.split(".")[0] in OURS:
                yield name


def violations(module, source, is_package=False):
    layer = layer_of(module)
    allowed = ALLOWED[layer]
    own = layer.split(".")[0]
    bad = []
    for name in imported_modules(source, module, is_package):
        if "*" in allowed or name.split(".")[0] == own and layer == own:
            continue
        if not any(name == a or name.startswith(a + ".") for a in allowed + ((layer,) if layer != own else ())):
            bad.append(f"{module} imports {name}")
    return bad


def repository_modules():
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("output", "__pycache__", "data")]
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, name), REPO)
                module = rel[:-3].replace(os.sep, ".").removesuffix(".__init__")
                if module.split(".")[0] in OURS:
                    yield module, os.path.join(REPO, rel), name == "__init__.py"


def test_every_module_imports_only_what_its_layer_may():
    bad, seen = [], set()
    for module, path, is_package in repository_modules():
        with open(path, encoding="utf-8") as f:
            bad += violations(module, f.read(), is_package)
        seen.add(module.split(".")[0])
    assert {"dpl", "dassl", "trainers", "datasets", "tools", "benchmarks", "demo", "clip"} <= seen
    assert not bad, bad


@pytest.mark.parametrize("module, source, expected", [
    ("dpl.model", "from dassl.engine import TRAINER_REGISTRY\n", ["dpl.model imports dassl.engine"]),
    ("dpl.model", "def f():\n    import trainers.config\n", ["dpl.model imports trainers.config"]),
    ("dpl.baselines.model", "from .. import io\nfrom ..model import DPLCLIP\n", []),
    ("dassl.utils.torchtools", "from dpl.io import atomic_write\n", []),
    ("dassl.utils.torchtools", "from dpl.search import BilevelSearch\n", ["dassl.utils.torchtools imports dpl.search"]),
    ("trainers.dpl_search", "import tools.plot_alpha\n", ["trainers.dpl_search imports tools.plot_alpha"]),
    ("datasets.demo_shapes", "from demo.pretrain import get_demo_clip\n", ["datasets.demo_shapes imports demo.pretrain"]),
    ("demo.world", "import train\n", ["demo.world imports train"]),
    ("demo.quickstart", "import train\nfrom tools.parse_test_res import run_result\n", []),
    ("tools.predict", "from benchmarks import bench_eval\n", ["tools.predict imports benchmarks"]),
    ("benchmarks.bench_eval", "from tests.helpers.tiny_clip import build_tiny_clip\nimport tests.conftest\n",
     ["benchmarks.bench_eval imports tests.conftest"]),
])
def test_the_import_rule_fails_on_a_forbidden_import(module, source, expected):
    assert violations(module, source) == expected


def test_the_engine_does_not_load_the_method_through_dpls_foundation():
    """dassl imports dpl.errors/io/images/run_keys; that must not run the method's modules (dpl's
    public names load lazily), nor open_clip."""
    import subprocess
    import sys

    code = ("import sys, dassl.utils.tools, dassl.utils.torchtools, dassl.data.datasets.base_dataset; "
            "import dpl.errors, dpl.io, dpl.images, dpl.run_keys; "
            "print(sorted(m for m in sys.modules if m in ('open_clip', 'dpl.model', 'dpl.attention', "
            "'dpl.encoders', 'dpl.classifier', 'dpl.prompts')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    from dpl import PromptLearner, load_classifier  # the public names still work
    import dpl

    assert callable(load_classifier) and PromptLearner.__name__ == "PromptLearner"
    assert set(dpl.__all__) >= {"DPLCLIP", "load_classifier", "supernet_block"}
