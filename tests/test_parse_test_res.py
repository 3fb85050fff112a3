import math
import os

import pytest

from tools import parse_test_res as ptr


def write_log(run_dir, acc, eval_only=False, name="log.txt", extra_before=None):
    os.makedirs(run_dir, exist_ok=True)
    lines = ["epoch [1/2] batch [1/1] loss 1.0", "=> result", "* accuracy: 11.1%"]  # a val result
    if extra_before is not None:
        lines += ["=> result", f"* accuracy: {extra_before}%"]
    if not eval_only:
        lines += ["Finish training", "Deploy the last-epoch model"]
    lines += ["Evaluate on the *test* set", "=> result", "* total: 10", f"* accuracy: {acc}%",
              "* error: 0%", "Elapsed: 0:00:01"]
    with open(os.path.join(run_dir, name), "w") as fh:
        fh.write("\n".join(lines) + "\n")


def test_fewshot_table_mean_ci_and_average(tmp_path, capsys):
    vals = {"caltech101": [90.0, 92.0, 94.0], "dtd": [60.0, 61.0]}
    for ds, accs in vals.items():
        for seed, acc in enumerate(accs, 1):
            write_log(tmp_path / "DPLTrain" / "vit_b16" / ds / "shots_16" / f"seed{seed}", acc)
    # a resumed run: the newest log wins
    write_log(tmp_path / "DPLTrain" / "vit_b16" / "dtd" / "shots_16" / "seed2", 63.0,
              name="log.txt-2026-01-01-00-00-00")
    csv = tmp_path / "r.csv"
    assert ptr.main([str(tmp_path), "--csv", str(csv), "--md", str(tmp_path / "r.md")]) == 0
    out = capsys.readouterr().out

    def ci(v):
        m = sum(v) / len(v)
        return m, 1.96 * math.sqrt(sum((x - m) ** 2 for x in v) / len(v)) / math.sqrt(len(v))

    m1, c1 = ci([90.0, 92.0, 94.0])
    m2, c2 = ci([60.0, 63.0])
    assert f"{m1:.2f} ± {c1:.2f}" in out and f"{m2:.2f} ± {c2:.2f}" in out
    assert f"{(m1 + m2) / 2:.2f}" in out
    row = csv.read_text().splitlines()[1].split(",")
    assert row[0] == "DPLTrain/vit_b16/shots_16" and row[-2] == f"{(m1 + m2) / 2:.2f}"


def test_eval_only_logs_and_coop_layout(tmp_path):
    # CoOp: output/<dataset>/CoOp/<cfg>_16shots/nctx16_cscFalse_ctpend/seedS
    write_log(tmp_path / "eurosat" / "CoOp" / "vit_b16_16shots" / "nctx16" / "seed1", 80.5)
    write_log(tmp_path / "eurosat" / "CoOp" / "vit_b16_16shots" / "nctx16" / "seed2", 81.5, eval_only=True)
    found = ptr.collect(str(tmp_path))
    assert found == {("CoOp/vit_b16_16shots/nctx16", "eurosat"): {1: 80.5, 2: 81.5}}


def test_base2new_harmonic_mean(tmp_path, capsys):
    for seed, (b, n) in enumerate([(80.0, 70.0), (82.0, 72.0)], 1):
        write_log(tmp_path / "base2new_base" / "DPLTrain" / "c" / "dtd" / "shots_16" / f"seed{seed}", b)
        write_log(tmp_path / "base2new_new" / "DPLTrain" / "c" / "dtd" / "shots_16" / f"seed{seed}", n,
                  eval_only=True)
    ptr.main([str(tmp_path), "--base2new"])
    out = capsys.readouterr().out
    hm = 2 * 81 * 71 / (81 + 71)
    assert f"{hm:.2f}" in out and "81.00" in out and "71.00" in out


def test_nothing_found(tmp_path):
    with pytest.raises(SystemExit, match="Nothing found"):
        ptr.main([str(tmp_path)])
