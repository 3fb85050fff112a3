"""benchmarks/bench_stages.py (issue 22 §7): search and train steps are timed interleaved, the step
ratio is the median of per-pair ratios with its min-max spread, and R is given for both search
loops. These tests check the bookkeeping on a tiny CLIP; no timing is asserted."""
import json
import os
import sys

import pytest

from tests.helpers.runs import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import bench_stages  # noqa: E402


def test_steps_are_interleaved_pair_by_pair(clip_model, monkeypatch):
    order = []
    monkeypatch.setattr(bench_stages, "FIG2_CALTECH", ([6, 0, 4], [0, 6]))
    monkeypatch.setattr(bench_stages, "BATCH", 2)

    def clocked(fn, device):
        order.append(fn)
        return float(len(order))

    monkeypatch.setattr(bench_stages, "clocked", clocked)
    cfg = bench_stages.load_cfgs()["paper"]
    out = bench_stages.interleaved_steps(clip_model, ["a", "b", "c"], cfg, bench_stages.torch.device("cpu"),
                                         pairs=4)
    assert {k: len(v) for k, v in out.items()} == {"alpha": 4, "prompt": 4, "train": 4}
    # times are the call order: pairs alternate (search, train) and (train, search), back to back
    assert out["alpha"] == [1, 6, 7, 12] and out["prompt"] == [2, 5, 8, 11] and out["train"] == [3, 4, 9, 10]


def test_pair_ratios_per_loop():
    pairs = {"alpha": [8.0, 10.0, 12.0], "prompt": [2.0, 2.0, 4.0], "train": [2.0, 2.0, 4.0]}
    assert bench_stages.pair_ratios(pairs, 1) == [4.0, 5.0, 3.0]  # the paper loop: every step has α
    assert bench_stages.pair_ratios(pairs, 4) == [(8 + 6) / 4 / 2, (10 + 6) / 4 / 2, (12 + 12) / 4 / 4]


def test_both_loops_come_from_their_configs():
    cfgs = bench_stages.load_cfgs()
    assert cfgs["paper"].TRAINER.DPL.SEARCH.ALPHA_EVERY == 1
    assert cfgs["fast"].TRAINER.DPL.SEARCH.ALPHA_EVERY == 4
    assert cfgs["paper"].OPTIM.MAX_EPOCH / cfgs["train"].OPTIM.MAX_EPOCH == 2.0


@pytest.mark.parametrize("label", ["fast", "new"])  # "new": files written before the relabelling
def test_fast_epoch_ratio_reads_the_quality_benchmark(label, tmp_path):
    fast = bench_stages.load_cfgs()["fast"]
    data = {"settings": {"patience": 3, "min_epochs": 40, "alpha_every": 4, "search_epochs": 80,
                         "train_epochs": 40},
            "epochs_run": {label: 40.0},
            "runs": [{"variant": label, "epochs_run": 40}] * 6}
    path = tmp_path / "q.json"
    path.write_text(json.dumps(data))
    ratio, how = bench_stages.fast_epoch_ratio(str(path), fast, 40)
    assert ratio == 1.0 and "every one of its 6 runs stopped at MIN_EPOCHS 40" in how
    # Without the JSON: the soonest the fast loop can stop (epoch 40) over the train epochs.
    ratio, how = bench_stages.fast_epoch_ratio(str(tmp_path / "missing.json"), fast, 40)
    assert ratio == 1.0 and how.startswith("expected") and "up to 80" in how
