"""scripts/gpu_check.sh / benchmarks/gpu_check.py on a CPU: the no-GPU exit, the tiny pipeline's table,
and how failed steps are reported."""
import os
import re
import subprocess
import sys

import pytest

from benchmarks import gpu_check
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
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "gpu_check.py"), "--device", "cpu",
                           "--tiny", "--pytest-paths", "tests/test_cuda.py", "--workdir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = table_rows(proc.stdout)
    assert list(rows) == ["pytest -m cuda", "bench_supernet", "DPLSearch fp32", "DPLTrain fp32",
                          "eval-only fp32"]
    assert re.fullmatch(r"ok: \d+ skipped", rows["pytest -m cuda"][0])  # marked, collected, skipped on CPU
    assert re.fullmatch(r"ok: fused [\d.]+-[\d.]+x faster than reference, max abs diff [\d.e+-]+",
                        rows["bench_supernet"][0])
    assert re.fullmatch(r"ok: artifact: \d+ text \+ \d+ image prompt tokens", rows["DPLSearch fp32"][0])
    trained = re.fullmatch(r"ok: test accuracy ([\d.]+)%", rows["DPLTrain fp32"][0]).group(1)
    assert rows["eval-only fp32"][0] == f"ok: test accuracy {trained}% (= training's)"
    for result, seconds, memory in rows.values():
        assert re.fullmatch(r"[\d.]+ s", seconds) and re.fullmatch(r"[\d,]+ MiB", memory)
    assert proc.stdout.rstrip().endswith("gpu_check: all 5 checks passed")
    assert (tmp_path / "runs" / "fp32" / "eval" / "log.txt").is_file()
    assert sorted(os.listdir(tmp_path / "logs")) == ["bench_supernet.log", "eval_fp32.log", "pytest.log",
                                                     "search_fp32.log", "train_fp32.log"]


def test_a_failed_search_is_a_failed_row_and_skips_what_needs_its_artifact(tmp_path, monkeypatch):
    def failing_step(device, target, log, env):
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

    def step(device, target, log, env):
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
