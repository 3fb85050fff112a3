"""The README's first command, shortened: the demo pipeline end to end on the quick demo CLIP."""
import json
import os

import pytest

from demo import quickstart
from tools.parse_test_res import run_result

pytestmark = pytest.mark.slow


def test_quickstart_dpl_beats_zero_shot(demo_clip, tmp_path, capsys):
    out = tmp_path / "qs"
    quickstart.main(["--clip", demo_clip, "--output", str(out), "--dataset", "demo_combos",
                     "--shots", "8", "--search-epochs", "3", "--train-epochs", "6"])
    printed = capsys.readouterr().out
    acc = {name: run_result(str(out / name)) for name in ("zeroshot", "dpl", "uniform")}
    assert acc["dpl"] > acc["zeroshot"] + 2.0, acc
    art = json.load(open(out / "search" / "prompt_config.json"))
    assert os.path.getsize(out / "search" / "alpha_heatmap.png") > 1000
    # the printed table and summary carry the same numbers and paths
    for value in acc.values():
        assert f"{value:.1f}" in printed
    assert str(art["text"]["lengths"]) in printed and str(out / "search" / "prompt_config.json") in printed
