"""The protocol scripts end to end on miniature datasets with a tiny CLIP (CPU, seconds per run)."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers.dataset_fixtures import write_fixture
from tests.helpers.runs import REPO, final_accuracy, tiny_opts
from tools import parse_test_res

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fixture("DescribableTextures", root)
    write_fixture("EuroSAT", root)
    return root


def run_script(name, args, data_root, output, clip_path, epochs=1, **env_extra):
    env = dict(os.environ, DATA=str(data_root), OUTPUT=str(output), CLIP_CHECKPOINT=str(clip_path),
               PYTHON=sys.executable, SEEDS="1", **env_extra)
    # CLIP_CHECKPOINT already sets MODEL.BACKBONE.PATH; drop it from the shared tiny overrides.
    opts = tiny_opts(clip_path, epochs=epochs)
    i = opts.index("MODEL.BACKBONE.PATH")
    del opts[i:i + 2]
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "dpl", name), *args, *opts],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_search_sh_writes_artifact_and_skips_when_finished(data_root, tmp_path, tiny_clip_path):
    out = run_script("search.sh", ["dtd", "1", "2"], data_root, tmp_path, tiny_clip_path, epochs=2)
    run_dir = tmp_path / "fewshot" / "DPLSearch" / "vit_b16" / "dtd" / "shots_2" / "seed1"
    art = json.load(open(run_dir / "prompt_config.json"))
    assert art["provenance"]["num_shots"] == 2 and art["provenance"]["epochs_run"] == 2
    for f in ("alpha_history.json", "alpha_heatmap.png", "alpha_convergence.png", "log.txt"):
        assert (run_dir / f).is_file()
    assert str(run_dir / "prompt_config.json") in out
    again = run_script("search.sh", ["dtd", "1", "2"], data_root, tmp_path, tiny_clip_path, epochs=2)
    assert "Skip (finished)" in again


def test_fewshot_sh_and_table(data_root, tmp_path, tiny_clip_path, capsys):
    run_script("fewshot.sh", ["dtd", "eurosat"], data_root, tmp_path, tiny_clip_path, SHOTS_LIST="1")
    accs = {}
    for ds in ("dtd", "eurosat"):
        run = tmp_path / "fewshot" / "DPLTrain" / "vit_b16" / ds / "shots_1" / "seed1"
        assert (run / ".done").is_file()
        # the train stage used its own search artifact
        cfg = json.load(open(run / "prompt_config.json"))
        search = json.load(open(tmp_path / "fewshot" / "DPLSearch" / "vit_b16" / ds / "shots_1" / "seed1"
                                / "prompt_config.json"))
        assert cfg["text"]["lengths"] == search["text"]["lengths"]
        accs[ds] = final_accuracy(run / "log.txt")
    parse_test_res.main([str(tmp_path / "fewshot"), "--csv", str(tmp_path / "t.csv")])
    rows = [line.split(",") for line in open(tmp_path / "t.csv").read().splitlines()]
    assert len(rows) == 2  # the DPLSearch runs are not listed
    header, row = rows[0], rows[1]
    assert header[1:3] == ["dtd", "eurosat"]
    assert row[1] == f"{accs['dtd']:.2f} ± 0.00" and row[2] == f"{accs['eurosat']:.2f} ± 0.00"
    assert row[3] == f"{(accs['dtd'] + accs['eurosat']) / 2:.2f}"


def test_base2new_sh_and_table(data_root, tmp_path, tiny_clip_path, capsys):
    run_script("base2new.sh", ["dtd"], data_root, tmp_path, tiny_clip_path)
    base_run = tmp_path / "base2new_base" / "DPLTrain" / "vit_b16_base2new" / "dtd" / "shots_16" / "seed1"
    new_run = tmp_path / "base2new_new" / "DPLTrain" / "vit_b16_base2new" / "dtd" / "shots_16" / "seed1"
    search = json.load(open(tmp_path / "base2new_base" / "DPLSearch" / "vit_b16_base2new" / "dtd"
                            / "shots_16" / "seed1" / "prompt_config.json"))
    assert search["provenance"]["subsample_classes"] == "base"
    base, new = final_accuracy(base_run / "log.txt"), final_accuracy(new_run / "log.txt")
    assert "SUBSAMPLE NEW CLASSES" in open(new_run / "log.txt").read()
    parse_test_res.main([str(tmp_path), "--base2new"])
    out = capsys.readouterr().out
    hm = 2 * base * new / (base + new) if base + new else 0.0
    line = next(l for l in out.splitlines() if "dtd" in l and "average" not in l)
    assert f"{base:.2f}" in line and f"{new:.2f}" in line and f"{hm:.2f}" in line
