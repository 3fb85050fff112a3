"""Install footprint (issue 26, point 4): the wheel ``pip install .`` installs holds only the
project's own package names at its top level (no generic module such as ``user_errors``)."""
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = {"clip", "dassl", "dpl"}


def wheel_top_level(wheel):
    """The top-level names a wheel installs into site-packages: packages and modules, metadata
    (``*.dist-info``) left out."""
    with zipfile.ZipFile(wheel) as zf:
        names = {n.split("/")[0] for n in zf.namelist()}
    return sorted(n[:-3] if n.endswith(".py") else n for n in names if not n.endswith((".dist-info", ".data")))


@pytest.mark.slow
def test_the_wheel_installs_only_the_projects_packages(tmp_path):
    source = tmp_path / "src"  # a copy, so the build's build/ and *.egg-info stay out of the checkout
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "output", "data", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--no-index", "-q", "-w", str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    wheels = list((tmp_path / "dist").glob("*.whl"))
    assert len(wheels) == 1
    top = wheel_top_level(wheels[0])
    print("wheel top-level names:", top)
    assert set(top) == PACKAGES, top
    with zipfile.ZipFile(wheels[0]) as zf:
        assert "dpl/errors.py" in zf.namelist() and "dpl/run_keys.py" in zf.namelist()


def test_wheel_top_level_lists_modules_and_packages(tmp_path):
    wheel = tmp_path / "x-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name in ("dpl/__init__.py", "dpl/errors.py", "user_errors.py", "x-0.dist-info/METADATA"):
            zf.writestr(name, "")
    assert wheel_top_level(wheel) == ["dpl", "user_errors"]
