"""benchmarks/mini_paper.py: the protocol scripts' layout, the statistics, resuming, the claims, and
(slow) the --quick subset end to end."""
import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import mini_paper  # noqa: E402


def test_run_dirs_are_the_protocol_scripts_layout(tmp_path):
    layout = mini_paper.Layout(str(tmp_path), "clip.safetensors")
    script = (f"source {REPO}/scripts/dpl/_lib.sh; run_dir fewshot DPLTrain mini_paper demo_combos 16 2; "
              "run_dir xd_test CoOp mini_paper demo_colors -1 3")
    env = dict(os.environ, OUTPUT=str(tmp_path), DATA=str(tmp_path))
    lines = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                           check=True).stdout.split()
    assert lines == [layout.run_dir("fewshot", "DPLTrain", "mini_paper", "demo_combos", 16, 2),
                     layout.run_dir("xd_test", "CoOp", "mini_paper", "demo_colors", -1, 3)]


def test_chains_cover_every_method_protocol_and_seed(tmp_path):
    layout = mini_paper.Layout(str(tmp_path), "clip")
    counts = {t: 10 for t in mini_paper.FEWSHOT_TASKS + mini_paper.DG_TARGETS}
    chains = mini_paper.build_chains(layout, mini_paper.FEWSHOT_TASKS, mini_paper.SHOTS, mini_paper.SEEDS,
                                     ("fewshot", "base2new", "transfer"), counts)
    dirs = {r.out for c in chains for r in c.runs}
    rel = {os.path.relpath(d, tmp_path) for d in dirs}
    for m in mini_paper.METHODS:
        for seed in mini_paper.SEEDS:
            assert f"base2new_new/{m.trainer}/{m.cfg}/demo_textures/shots_16/seed{seed}" in rel
            assert f"dg_test/{m.trainer}/{m.cfg}/demo_combos_sketch/shots_all/seed{seed}" in rel
            assert f"xd_test/{m.trainer}/{m.cfg}/demo_shapes/shots_all/seed{seed}" in rel
            if m.trainer != "ZeroshotCLIP":
                assert f"fewshot/{m.trainer}/{m.cfg}/demo_colors/shots_1/seed{seed}" in rel
    # searches come before the runs that read their artifact, in the same chain
    for chain in chains:
        for i, run in enumerate(chain.runs):
            if "TRAINER.DPL.CONFIG_FILE" in run.argv:
                artifact = run.argv[run.argv.index("TRAINER.DPL.CONFIG_FILE") + 1]
                assert any(os.path.join(r.out, "prompt_config.json") == artifact for r in chain.runs[:i])
    assert len(dirs) == sum(len(c.runs) for c in chains)          # no run twice


def test_confidence_interval_is_students_t_with_n_minus_1():
    mean, ci = mini_paper.mean_ci([80.0, 82.0, 84.0])
    assert mean == 82.0
    assert ci == pytest.approx(4.302653 * 2.0 / math.sqrt(3), rel=1e-6)
    assert mini_paper.mean_ci([70.0]) == (70.0, None)
    assert mini_paper.fmt(mini_paper.cell([83.0])) == "83.0"


def test_average_over_tasks_is_taken_per_seed():
    row = mini_paper.Results.table_row({"a": {1: 80.0, 2: 90.0}, "b": {1: 60.0, 2: 70.0}})
    assert row["average"]["values"] == [70.0, 80.0]
    assert row["a"]["mean"] == 85.0


def test_finished_runs_are_not_repeated(tmp_path, monkeypatch):
    import train

    calls = []
    monkeypatch.setattr(train, "main", lambda argv: calls.append(argv))
    done = tmp_path / "done"
    done.mkdir()
    (done / "log.txt").write_text("x")
    (done / ".done").write_text("")
    (done / "wall_seconds.txt").write_text("12.5\n")
    todo = tmp_path / "todo"
    chain = mini_paper.Chain("c", [mini_paper.Run(str(done), ["--output-dir", str(done)]),
                                   mini_paper.Run(str(todo), ["--output-dir", str(todo)])], 1.0)
    records = mini_paper.run_chain(chain)
    assert [r["status"] for r in records] == ["done earlier", "ran"]
    assert records[0]["seconds"] == 12.5
    assert calls == [["--output-dir", str(todo)]]
    assert (todo / ".done").is_file() and (todo / "wall_seconds.txt").is_file()


def _row(value, tasks=("t1", "t2")):
    row = {t: mini_paper.cell([value + i, value + i + 1, value + i + 2]) for i, t in enumerate(tasks)}
    row["average"] = mini_paper.cell([value + 0.5, value + 1.5, value + 2.5])
    return row


def test_claims_say_plainly_when_the_searched_configuration_loses():
    tables = {"fewshot_16": {m.key: _row(80.0) for m in mini_paper.METHODS}}
    tables["fewshot_16"]["ivlp"] = _row(90.0)
    res = mini_paper.Results(mini_paper.Layout("/nowhere", "c"), ("t1", "t2"), (16,), (1, 2, 3))
    lengths = {"dpl": {"t1": {1: {"text": [2, 0], "vision": [0, 2]}},
                       "t2": {1: {"text": [2, 0], "vision": [0, 2]}}}, "dpl_fast": {}}
    text = "\n".join(mini_paper.claims(tables, lengths, res, {}))
    assert "few-shot 16 shots: does not hold" in text and "IVLP 91.5" in text
    assert "beats it on 0 of 2 tasks" in text
    assert "differ between tasks: no" in text
    assert "differ between the branches: yes" in text
    assert "within the seed spread" in text        # fast == paper here


@pytest.mark.slow
def test_quick_benchmark_produces_every_cell(tmp_path):
    from tools.parse_test_res import collect

    assert mini_paper.main(["--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "mini_paper.json").read_text())
    assert report["meta"]["runs_finished"] == report["meta"]["runs"]
    tasks = list(mini_paper.QUICK_TASKS)
    for key, row in report["tables"]["fewshot_16"].items():
        for task in tasks + ["average"]:
            assert row[task]["n"] == 1 and 0 <= row[task]["mean"] <= 100, (key, task)
    for key, parts in report["tables"]["base2new"].items():
        for part in ("base", "new", "hm"):
            assert all(parts[part][t]["n"] == 1 for t in tasks), (key, part)
        hm = parts["hm"]["demo_colors"]["mean"]
        b, n = parts["base"]["demo_colors"]["mean"], parts["new"]["demo_colors"]["mean"]
        assert hm == pytest.approx(2 * b * n / (b + n))
    zs = report["tables"]["fewshot_16"]["zeroshot"]["demo_colors"]["mean"]
    assert zs > 50                                   # the shipped depth-12 CLIP knows colours
    for loop in ("dpl", "dpl_fast"):
        for task in tasks:
            config = report["searched_lengths"][loop][task]["1"]
            assert len(config["text"]) == len(config["vision"]) == 12
    md = (tmp_path / "mini_paper.md").read_text()
    assert "## Few-shot, 16 shots" in md and "## The paper's claims" in md and "HM" in md
    found = collect(str(tmp_path / "fewshot"))       # tools/parse_test_res.py reads the layout
    assert len({experiment for experiment, _ in found}) == len(mini_paper.METHODS)
    # a second call resumes: nothing runs again
    assert mini_paper.main(["--quick", "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "mini_paper.json").read_text())
    assert again["tables"] == report["tables"]
