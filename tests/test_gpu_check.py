"""scripts/gpu_check.sh / benchmarks/gpu_check.py / benchmarks/flex_check.py on a CPU: the no-GPU exit,
the tiny pipeline's table and result file, how failed and over-time steps are reported, the interpreter
and wheel handling of the shell script (with a fake interpreter), and the flex verdict on fabricated
numbers."""
import json
import math
import os
import re
import stat
import subprocess
import sys
import time

import pytest

from benchmarks import flex_check, gpu_check
from tests.helpers.runs import REPO


def table_rows(stdout):
    """{check: (result, time, memory)} from the GitHub-style table the check ends with."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 4 and cells[0] not in ("check",) and "---" not in line:
            rows[cells[0]] = tuple(cells[1:])
    return rows


def test_without_a_gpu_the_script_says_so_and_exits_0_after_nothing(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TMPDIR=str(tmp_path),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "gpu_check.sh")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("gpu_check: no CUDA GPU here")
    assert "nothing was run" in proc.stdout and "|" not in proc.stdout  # no table: nothing ran
    assert os.listdir(tmp_path) == []  # no work folder was made


@pytest.mark.slow
def test_tiny_cpu_run_ends_with_one_table_of_passed_checks(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "gpu_check.py"), "--device", "cpu",
                           "--tiny", "--pytest-paths", "tests/test_cuda.py", "--workdir", str(tmp_path),
                           "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = table_rows(proc.stdout)
    assert list(rows) == ["flex vs scores", "pytest -m cuda", "bench_supernet", "DPLSearch fp32",
                          "DPLTrain fp32", "eval-only fp32"]
    # On the CPU the torch twin stands in for flex (no flex backward there): the plumbing, not a verdict.
    assert rows["flex vs scores"][0].startswith("ok: flex verdict: ")
    assert re.fullmatch(r"ok: \d+ skipped", rows["pytest -m cuda"][0])  # marked, collected, skipped on CPU
    assert re.fullmatch(r"ok: fused [\d.]+-[\d.]+x faster than reference, max abs diff [\d.e+-]+",
                        rows["bench_supernet"][0])
    assert re.fullmatch(r"ok: artifact: \d+ text \+ \d+ image prompt tokens", rows["DPLSearch fp32"][0])
    trained = re.fullmatch(r"ok: test accuracy ([\d.]+)%", rows["DPLTrain fp32"][0]).group(1)
    assert rows["eval-only fp32"][0] == f"ok: test accuracy {trained}% (= training's)"
    for result, seconds, memory in rows.values():
        assert re.fullmatch(r"[\d.]+ s", seconds) and re.fullmatch(r"[\d,]+ MiB", memory)
    assert proc.stdout.rstrip().endswith("gpu_check: all 6 checks passed")
    assert (tmp_path / "runs" / "fp32" / "eval" / "log.txt").is_file()
    assert sorted(os.listdir(tmp_path / "logs")) == ["bench_supernet.log", "eval_fp32.log", "flex_check.json",
                                                     "flex_check.log", "pytest.log", "search_fp32.log",
                                                     "train_fp32.log"]
    result = json.loads((out / "gpu_check_result.json").read_text())
    assert os.listdir(out) == ["gpu_check_result.json"]
    assert result["verdict"] == "gpu_check: all 6 checks passed"
    assert [c["name"] for c in result["checks"]] == list(rows) and {c["ok"] for c in result["checks"]} == {"ok"}
    assert result["flex_verdict"] == rows["flex vs scores"][0][len("ok: "):]
    assert len(result["flex_comparisons"]) == 8  # 4 sizes x (fp32, bf16) on the CPU


def test_a_failed_search_is_a_failed_row_and_skips_what_needs_its_artifact(tmp_path, monkeypatch):
    def failing_step(device, target, log, env, timeout=None):
        return gpu_check.Step(2, "train.py: error: something the user can fix\n", 1.5, 3 * 2**20)

    monkeypatch.setattr(gpu_check, "run_step", failing_step)
    rows = gpu_check.check_pipeline("cuda", tmp_path, {}, tmp_path, tmp_path / "clip.pt", "bf16", False)
    assert [(r.name, r.ok) for r in rows] == [("DPLSearch bf16", False), ("DPLTrain bf16", None),
                                              ("eval-only bf16", None)]
    table = table_rows(gpu_check.format_table(rows, "cuda"))
    assert table["DPLSearch bf16"] == ("FAIL: exit 2: train.py: error: something the user can fix", "1.5 s",
                                       "3 MiB")
    assert table["DPLTrain bf16"] == ("skip: no artifact", "-", "-")


def test_an_eval_that_disagrees_with_training_fails(tmp_path, monkeypatch):
    outputs = iter([(0, "search done"), (0, "* accuracy: 40.0%\n"), (0, "* accuracy: 20.0%\n")])

    def step(device, target, log, env, timeout=None):
        code, output = next(outputs)
        if "DPLSearch" in target:
            (tmp_path / "runs" / "fp32" / "search").mkdir(parents=True)
            (tmp_path / "runs" / "fp32" / "search" / "prompt_config.json").write_text("{}")
        return gpu_check.Step(code, output, 1.0, None)

    monkeypatch.setattr(gpu_check, "run_step", step)
    monkeypatch.setattr("dpl.artifact.load_artifact",
                        lambda path: {"text": {"lengths": [2, 0]}, "vision": {"lengths": [4, 4]}})
    rows = gpu_check.check_pipeline("cuda", tmp_path, {}, tmp_path, tmp_path / "clip.pt", "fp32", False)
    assert [r.ok for r in rows] == [True, True, False]
    assert rows[0].result == "artifact: 2 text + 8 image prompt tokens"
    assert rows[2].result == "test accuracy 20.0% != training's 40.0%"


def test_the_docs_name_the_gpu_check_in_their_gpu_section():
    page = open(os.path.join(REPO, "docs/REPRODUCIBILITY.md"), encoding="utf-8").read()
    section = page.split("## Check a GPU machine first", 1)[1].split("\n## ", 1)[0]
    assert "bash scripts/gpu_check.sh" in section and os.path.isfile(os.path.join(REPO, "scripts", "gpu_check.sh"))
    assert f"({', '.join(gpu_check.PRECISIONS)})" in section


def test_a_crashing_step_reports_its_traceback_and_peak_memory(tmp_path):
    script = tmp_path / "boom.py"
    script.write_text("print('starting')\nraise RuntimeError('boom')\n")
    step = gpu_check.run_step("cpu", [str(script)], tmp_path / "boom.log", dict(os.environ))
    assert step.code == 1 and "RuntimeError: boom" in step.output and step.peak_bytes > 0
    assert (tmp_path / "boom.log").read_text() == step.output
    row = gpu_check.Check("boom", False, f"exit {step.code}: {gpu_check.tail(step.output)}", step.seconds,
                          step.peak_bytes)
    assert table_rows(gpu_check.format_table([row], "cpu"))["boom"][0].endswith("RuntimeError: boom")


# --- time budget ----------------------------------------------------------------------------------

class FakeTime:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_the_clock_caps_each_step_by_its_section_and_the_whole_check():
    now = FakeTime()
    clock = gpu_check.Clock(450, now)
    assert clock.step_limit("flex") == gpu_check.SECTION_BUDGET_S["flex"]
    now.t = 400
    assert clock.step_limit("pytest") == 50  # what is left of the whole check
    now.t = 450 - gpu_check.MIN_STEP_S + 1
    assert clock.step_limit("pipeline") is None  # too little left to start a step
    now.t = 0
    assert gpu_check.Clock(900, now).step_limit("flex") == 2 * gpu_check.SECTION_BUDGET_S["flex"]


def test_steps_that_do_not_fit_are_skipped_and_one_past_its_time_fails_its_row(tmp_path, monkeypatch):
    now = FakeTime()
    clock = gpu_check.Clock(450, now)
    now.t = 445
    rows = gpu_check.check_pipeline("cuda", tmp_path, {}, tmp_path, tmp_path / "clip.pt", "amp", False, clock)
    assert [(r.name, r.ok) for r in rows] == [("DPLSearch amp", None), ("DPLTrain amp", None),
                                              ("eval-only amp", None)]
    assert rows[0].result == "not run: the check's time budget is spent (5 s left of GPU_CHECK_BUDGET_S)"

    limits = []

    def hung(device, target, log, env, timeout=None):
        limits.append(timeout)
        return gpu_check.Step(-1, "epoch 1/2\nstopped after 60 s (its time budget)", 60.0, None, timed_out=True)

    monkeypatch.setattr(gpu_check, "run_step", hung)
    now.t = 0
    rows = gpu_check.check_pipeline("cuda", tmp_path, {}, tmp_path, tmp_path / "clip.pt", "bf16", False, clock)
    assert limits == [gpu_check.SECTION_BUDGET_S["pipeline"]]
    assert [(r.name, r.ok) for r in rows] == [("DPLSearch bf16", False), ("DPLTrain bf16", None),
                                              ("eval-only bf16", None)]
    assert rows[0].result == "stopped at its time budget (60 s): epoch 1/2 / stopped after 60 s (its time budget)"


def test_a_step_past_its_time_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    script = tmp_path / "hang.py"
    script.write_text("import subprocess, sys, time\n"
                      f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
                      f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
                      "print('started', flush=True)\ntime.sleep(120)\n")
    start = time.perf_counter()  # (the child imports torch first: seconds on a loaded machine)
    step = gpu_check.run_step("cpu", [str(script)], tmp_path / "hang.log", dict(os.environ), timeout=20)
    assert step.timed_out and step.code == -1 and time.perf_counter() - start < 60
    assert "started" in step.output and step.output.rstrip().endswith("stopped after 20 s (its time budget)")
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # killed with the group (reaped by init shortly after)
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        with open(f"/proc/{grandchild}/stat") as f:
            if f.read().split()[2] == "Z":
                break
        time.sleep(0.1)
    else:
        pytest.fail("the step's child process outlived the step")


def test_a_bad_budget_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("GPU_CHECK_BUDGET_S", "8min")
    assert gpu_check.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("gpu_check: GPU_CHECK_BUDGET_S='8min' is not a positive number of seconds; unset it "
                   "(default 450) or set e.g. GPU_CHECK_BUDGET_S=600.")


def test_the_result_file_holds_every_verdict(tmp_path):
    checks = [gpu_check.Check("flex vs scores", True, "flex verdict: NO, ...", 80.0, 2**30),
              gpu_check.Check("pytest -m cuda", False, "1 failed, 9 passed", 50.0, None),
              gpu_check.Check("DPLTrain bf16", None, "no artifact")]
    flex = {"line": "flex verdict: NO, ...", "flex_may_be_default": False, "rows": [{"tokens": 77}]}
    path = gpu_check.write_result(tmp_path / "out", "torch 2.11, H100", checks, flex, 301.23, 450.0)
    assert path == tmp_path / "out" / "gpu_check_result.json" and os.listdir(tmp_path / "out") == [path.name]
    result = json.loads(path.read_text())
    assert result["verdict"] == "gpu_check: 1 of 3 checks failed: pytest -m cuda"
    assert result["flex_verdict"] == "flex verdict: NO, ..." and result["flex_may_be_default"] is False
    assert [(c["name"], c["ok"]) for c in result["checks"]] == [("flex vs scores", "ok"),
                                                                ("pytest -m cuda", "FAIL"),
                                                                ("DPLTrain bf16", "skip")]
    assert result["seconds"] == 301.2 and result["device"] == "torch 2.11, H100"
    assert result["flex_comparisons"] == [{"tokens": 77}]


# --- the interpreter and the wheels (scripts/gpu_check.sh) ----------------------------------------

FAKE_PYTHON = """#!/usr/bin/env bash
# A stand-in interpreter: logs each call; "installs" by touching a marker.
echo "$*" >> "$FAKE_LOG"
case "$*" in
  "benchmarks/gpu_check.py --missing-packages")
      if [[ -f "$FAKE_LOG.installed" ]]; then echo "$FAKE_STILL_MISSING"; else echo "$FAKE_MISSING"; fi ;;
  "-m pip install"*) touch "$FAKE_LOG.installed" ;;
  "benchmarks/gpu_check.py"*) echo "fake gpu_check ran; out=$GPU_CHECK_OUT" ;;
esac
"""
FIVE = "open-clip-torch yacs ftfy wcwidth submitit"


def fake_box(tmp_path, missing, still_missing="", **env):
    """Run gpu_check.sh with GPU_CHECK_PYTHON=python3, a fake python3 first on PATH, from tmp_path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.log"
    base = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECK_")}
    env = dict(base, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_LOG=str(log),
               FAKE_MISSING=missing, FAKE_STILL_MISSING=still_missing, **{"GPU_CHECK_PYTHON": "python3", **env})
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "gpu_check.sh"), "--keep"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return proc, calls


def test_gpu_check_python_is_used_as_it_is_and_only_what_it_lacks_comes_from_the_wheels(tmp_path):
    (tmp_path / "wheels").mkdir()
    venv_before = os.path.exists(os.path.join(REPO, ".venv"))
    proc, calls = fake_box(tmp_path, FIVE, GPU_CHECK_WHEELS="wheels")
    assert proc.returncode == 0, proc.stderr
    assert calls == ["benchmarks/gpu_check.py --missing-packages",
                     f"-m pip install --no-index --no-deps --find-links {tmp_path}/wheels {FIVE}",
                     "benchmarks/gpu_check.py --missing-packages",
                     "benchmarks/gpu_check.py --keep"]
    assert f"fake gpu_check ran; out={tmp_path}/output/gpu_check" in proc.stdout  # the caller's folder
    assert os.path.exists(os.path.join(REPO, ".venv")) == venv_before  # no .venv made


def test_an_interpreter_that_has_everything_installs_nothing(tmp_path):
    proc, calls = fake_box(tmp_path, "", GPU_CHECK_OUT="results")
    assert proc.returncode == 0, proc.stderr
    assert calls == ["benchmarks/gpu_check.py --missing-packages", "benchmarks/gpu_check.py --keep"]
    assert f"out={tmp_path}/results" in proc.stdout and "[setup]" not in proc.stdout


def test_the_dry_run_prints_the_install_and_the_run_and_runs_neither(tmp_path):
    (tmp_path / "wheels").mkdir()
    proc, calls = fake_box(tmp_path, "yacs submitit", GPU_CHECK_WHEELS="wheels", GPU_CHECK_DRY_RUN="1")
    assert proc.returncode == 0, proc.stderr
    assert calls == ["benchmarks/gpu_check.py --missing-packages"]
    assert proc.stdout.splitlines() == [
        f"[setup] installing what python3 lacks from {tmp_path}/wheels: python3 -m pip install --no-index "
        f"--no-deps --find-links {tmp_path}/wheels yacs submitit",
        "[dry run] python3 benchmarks/gpu_check.py --keep"]


@pytest.mark.parametrize("case", ["no wheels", "no torch", "not on PATH", "wheels lack one", "no folder"])
def test_what_cannot_be_set_up_is_one_line_and_exit_2(tmp_path, case):
    env = {}
    missing, still = FIVE, ""
    if case == "no torch":
        missing = "torch yacs"
    elif case == "not on PATH":
        env["GPU_CHECK_PYTHON"] = "python3.99-nowhere"
    elif case == "wheels lack one":
        (tmp_path / "wheels").mkdir()
        env["GPU_CHECK_WHEELS"], still = "wheels", "submitit"
    elif case == "no folder":
        env["GPU_CHECK_WHEELS"] = "missing-folder"
    proc, calls = fake_box(tmp_path, missing, still, **env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: ")
    assert "benchmarks/gpu_check.py --keep" not in calls  # the check itself never started
    expected = {
        "no wheels": f"lacks: {FIVE}. Without internet: on a machine with internet run 'pip download "
                     f"--no-deps -d wheels {FIVE}', copy wheels/ here and set GPU_CHECK_WHEELS=wheels",
        "no torch": "GPU_CHECK_PYTHON=python3 has no torch; point it at the interpreter of your CUDA build",
        "not on PATH": "GPU_CHECK_PYTHON=python3.99-nowhere is not an interpreter on PATH",
        "wheels lack one": f"still missing after installing from {tmp_path}/wheels: submitit",
        "no folder": "GPU_CHECK_WHEELS=missing-folder is not a folder",
    }[case]
    assert expected in lines[0]


def test_missing_packages_names_pip_packages_and_imports_nothing():
    present = {"torch", "torchvision", "numpy", "PIL", "scipy", "matplotlib", "tensorboard", "tqdm", "regex",
               "tabulate"}
    missing = gpu_check.missing_packages(lambda module: object() if module in present else None)
    assert missing == FIVE.split()
    out = subprocess.run([sys.executable, "-X", "importtime", os.path.join(REPO, "benchmarks", "gpu_check.py"),
                          "--missing-packages"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == ""  # this environment has everything
    assert "torch" not in {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines()[1:]}


# --- the flex verdict -------------------------------------------------------------------------------

def flex_rows(**changes):
    """Twelve passing comparisons (fabricated numbers); ``changes``: {"branch tokens prec": {...}}."""
    rows = []
    for branch, tokens in flex_check.CASES:
        for prec in flex_check.PRECISIONS:
            row = {"branch": branch, "tokens": tokens, "prec": prec, "graphs": 2,
                   "out_diff": {"fp32": 2e-6, "amp": 2e-3, "bf16": 1.5e-2}[prec],
                   "grad_diff": {"fp32": 8e-6, "amp": 6e-3, "bf16": 3e-2}[prec]}
            if prec != "fp32":
                row["flex_err"], row["scores_err"] = 0.02, 0.02
            if tokens in flex_check.TIMED_TOKENS:
                row["ms_scores"], row["ms_flex"] = 3.0, 2.0
            row.update(changes.get(f"{branch} {tokens} {prec}", {}))
            rows.append(row)
    return rows


def test_flex_verdict_yes_when_every_comparison_agrees_and_flex_is_faster():
    result = flex_check.verdict(flex_rows())
    assert result == {"flex_may_be_default": True,
                      "line": "flex verdict: YES, flex may become the default: all 12 comparisons within "
                              "tolerance (fp32 0.0001, amp 0.01, bf16 0.05 of the largest value); 1.50x the "
                              "explicit path's speed at 77/197 tokens"}


@pytest.mark.parametrize("change, expected", [
    ({"text 77 fp32": {"grad_diff": 3e-4}}, "text 77 fp32: output 2.0e-06, gradients 3.0e-04"),
    ({"image 197 bf16": {"out_diff": 0.2, "flex_err": 0.1}}, "image 197 bf16: output 2.0e-01"),
    ({"text 8 amp": {"graphs": 3}}, "text 8 amp: graphs 3"),
    ({"text 18 amp": {"error": "InductorError: no kernel"}}, "text 18 amp: InductorError: no kernel"),
    ({"text 77 amp": {"out_diff": math.inf, "flex_err": math.inf}}, "text 77 amp: output inf"),
], ids=["fp32 gradients", "bf16 less accurate", "recompiles", "crash", "not finite"])
def test_flex_verdict_no_names_the_failed_comparison(change, expected):
    result = flex_check.verdict(flex_rows(**change))
    assert result["flex_may_be_default"] is False
    assert result["line"].startswith("flex verdict: NO, keep the explicit-score default: 1 of 12 comparisons "
                                     "failed (tolerance fp32 0.0001, amp 0.01, bf16 0.05 of the largest value): ")
    assert expected in result["line"]


def test_flex_low_precision_beyond_tolerance_passes_when_as_accurate_as_the_scores():
    rows = flex_rows(**{"image 197 bf16": {"grad_diff": 0.08, "flex_err": 0.029, "scores_err": 0.02}})
    assert flex_check.row_ok(rows[5]) and flex_check.verdict(rows)["flex_may_be_default"] is True
    rows[5]["flex_err"] = 0.031  # more than 1.5x the explicit path's error
    assert not flex_check.row_ok(rows[5])


def test_flex_verdict_slower_or_incomplete_is_no_or_undecided():
    slow = flex_check.verdict(flex_rows(**{f"{b} {t} {p}": {"ms_flex": 3.75} for b, t in flex_check.CASES
                                           for p in flex_check.PRECISIONS}))
    assert slow["flex_may_be_default"] is False and slow["line"].endswith(
        "but flex is slower (0.80x the explicit path's speed at 77/197 tokens)")
    rows = flex_rows()
    for row in rows[-3:]:
        row.clear()
        row.update({"branch": "text", "tokens": 18, "prec": "fp32", "graphs": None, "skipped": "time budget"})
    assert flex_check.verdict(rows) == {
        "flex_may_be_default": None,
        "line": "flex verdict: UNDECIDED: 3 of 12 comparisons did not run (time budget); the 9 that ran agree"}


def test_flex_check_runs_end_to_end_on_the_cpu_with_the_torch_twin(tmp_path):
    """The comparison machinery itself (the twin "lse-math" stands in for the kernel: no flex backward
    on the CPU): rows for every size, its JSON, and a verdict line."""
    out = tmp_path / "flex.json"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "flex_check.py"), "--device", "cpu",
                           "--tiny", "--candidate", "lse-math", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert [(r["branch"], r["tokens"], r["prec"]) for r in result["rows"]] == [
        (b, t, p) for b, t in flex_check.CASES for p in ("fp32", "bf16")]
    assert all(r["ok"] and r["out_diff"] <= flex_check.TOLERANCE[r["prec"]] for r in result["rows"])
    assert proc.stdout.rstrip().splitlines()[-1] == result["line"]
    assert result["line"].startswith("flex verdict: ")


def test_flex_check_without_a_gpu_says_so():
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "flex_check.py")], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert proc.returncode == 0 and proc.stdout == "flex_check: no CUDA GPU here; nothing was compared.\n"


# --- the docs say what the scripts do ---------------------------------------------------------------

def read_doc(path):
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        return f.read()


def test_the_gpu_check_section_states_the_scripts_settings():
    section = read_doc("docs/REPRODUCIBILITY.md").split("## Check a GPU machine first", 1)[1].split("\n## ", 1)[0]
    section = " ".join(section.split())  # line breaks are layout
    assert "pip download --no-deps -d wheels open-clip-torch==3.3.* yacs ftfy wcwidth submitit" in section
    assert "GPU_CHECK_PYTHON=python3 GPU_CHECK_WHEELS=wheels bash scripts/gpu_check.sh" in section
    assert "pip install --no-index --no-deps --find-links wheels <missing>" in section
    with open(os.path.join(REPO, "scripts", "gpu_check.sh"), encoding="utf-8") as f:
        script = f.read()
    for name in set(re.findall(r"GPU_CHECK_[A-Z_]+", script)):  # every variable it reads is documented
        assert name in section, name
    assert gpu_check.RESULT_FILE in section and "./output/gpu_check" in section
    assert f"default {gpu_check.TOTAL_BUDGET_S:.0f}" in section
    caps = gpu_check.SECTION_BUDGET_S
    assert (f"flex comparison {caps['flex']:.0f} s, CUDA tests {caps['pytest']:.0f} s, benchmark "
            f"{caps['bench']:.0f} s, each pipeline step {caps['pipeline']:.0f} s") in section
    tol = {p: f"{t:.0e}".replace("e-0", "e-") for p, t in flex_check.TOLERANCE.items()}  # 1e-4
    assert f"{tol['fp32']} (fp32), {tol['amp']} (amp) or {tol['bf16']} (bf16)" in section
    assert f"within {flex_check.ACCURACY_SLACK:g}x" in section and "8, 18 and 77 text tokens and 197" in section


def test_the_config_and_performance_pages_state_the_attention_key():
    from dassl.config import get_cfg_default
    from dpl.attention import FLEX_GRAPH_BOUND, REAL_CHOICES
    from trainers.config import extend_cfg

    cfg = get_cfg_default()
    extend_cfg(cfg)
    row = f"| `TRAINER.DPL.SEARCH.REAL_ATTENTION` | `{cfg.TRAINER.DPL.SEARCH.REAL_ATTENTION}` | " + \
        ", ".join(f"`{c}`" for c in REAL_CHOICES) + " |"
    assert row in read_doc("docs/CONFIG.md")
    performance = " ".join(read_doc("docs/PERFORMANCE.md").split())
    assert "`TRAINER.DPL.SEARCH.REAL_ATTENTION flex`" in performance and "`DPL_SUPERNET_REAL=flex`" in performance
    assert "at most 4 graphs with `PREC fp32` / `fp16` and at most 6 with `amp` / `bf16`" in performance
    assert FLEX_GRAPH_BOUND == 6
