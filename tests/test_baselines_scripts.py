"""Swap one word: every baseline runs through scripts/dpl/base2new.sh (TRAINER=...) and lands in the
same parse_test_res.py --base2new table as DPL.

The script's ``$PYTHON train.py ARGS`` calls are forwarded to this test process and run there with
``train.main(ARGS)``: starting a fresh interpreter (importing torch) costs more than a tiny run.
DPL's own rows are produced in-process too, in the script's output layout.
"""
import os
import subprocess
import sys

import pytest

from tests.helpers.dataset_fixtures import write_fixture
from tests.helpers.in_process import InProcessPython
from tests.helpers.runs import REPO, run_train, tiny_opts, train_args

pytestmark = pytest.mark.slow

BASELINES = ("ZeroshotCLIP", "CoOp", "IVLP", "MaPLe")
# Trailing KEY VALUE overrides reach every train.py call of the script, whatever the trainer.
CPU_OPTS = ["TRAINER.COOP.PREC", "fp32", "TRAINER.IVLP.PREC", "fp32", "TRAINER.MAPLE.PREC", "fp32",
            "TRAINER.ZEROSHOTCLIP.PREC", "fp32"]

@pytest.fixture(scope="module")
def base2new_output(tmp_path_factory, tiny_clip_path):
    data = tmp_path_factory.mktemp("data")
    write_fixture("DescribableTextures", data)
    output = tmp_path_factory.mktemp("output")
    python = InProcessPython(tmp_path_factory.mktemp("shim"))
    try:
        for trainer in BASELINES:
            env = dict(os.environ, TRAINER=trainer, SEEDS="1", DATA=str(data), OUTPUT=str(output),
                       CLIP_CHECKPOINT=str(tiny_clip_path), PYTHON=str(python.path),
                       SHIM_DIR=str(python.dir))
            env.pop("CFG", None)
            opts = tiny_opts(tiny_clip_path, epochs=1)[4:]  # the script passes MODEL.BACKBONE.PATH
            result = subprocess.run(["bash", "scripts/dpl/base2new.sh", "dtd", "MODEL.BACKBONE.NAME",
                                     "tiny", *opts, *CPU_OPTS], cwd=REPO, env=env,
                                    capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, result.stderr
    finally:
        python.close()
    assert len(python.calls) == 2 * len(BASELINES)  # train on base + evaluate on new, per trainer
    dpl_base2new(data, output, tiny_clip_path)
    return output


def dpl_base2new(data, output, clip_path):
    """What base2new.sh does for TRAINER=DPLTrain (search, train on base, evaluate on new)."""
    def run_dir(stage, trainer, cfg):
        return output / stage / trainer / cfg / "dtd" / "shots_16" / "seed1"

    opts = ["DATASET.NUM_SHOTS", "16"] + tiny_opts(clip_path, epochs=1)
    search = run_dir("base2new_base", "DPLSearch", "vit_b16_base2new")
    run_train(train_args("DPLSearch", "vit_b16_base2new", "dtd", data, search)
              + opts + ["DATASET.SUBSAMPLE_CLASSES", "base"])
    trained = run_dir("base2new_base", "DPLTrain", "vit_b16_base2new")
    run_train(train_args("DPLTrain", "vit_b16_base2new", "dtd", data, trained) + opts
              + ["DATASET.SUBSAMPLE_CLASSES", "base", "TRAINER.DPL.CONFIG_FILE",
                 str(search / "prompt_config.json")])
    run_train(train_args("DPLTrain", "vit_b16_base2new", "dtd", data,
                         run_dir("base2new_new", "DPLTrain", "vit_b16_base2new"),
                         extra=["--eval-only", "--model-dir", str(trained), "--load-epoch", "1"])
              + opts + ["DATASET.SUBSAMPLE_CLASSES", "new", "TRAINER.DPL.CONFIG_FILE",
                        str(trained / "prompt_config.json")])


def test_every_trainer_lands_in_the_base2new_table(base2new_output):
    result = subprocess.run([sys.executable, "tools/parse_test_res.py", str(base2new_output), "--base2new"],
                            cwd=REPO, capture_output=True, text=True, check=True)
    print(result.stdout)  # shown when the test fails
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()
            if line.split() and line.split()[0].split("/")[0] in ("DPLTrain",) + BASELINES
            and "dtd" in line}
    expected = {
        "DPLTrain": "DPLTrain/vit_b16_base2new/shots_16",
        "ZeroshotCLIP": "ZeroshotCLIP/vit_b16/shots_16",
        "CoOp": "CoOp/vit_b16_ep50/shots_16",
        "IVLP": "IVLP/vit_b16_c2_ep5_batch4_2+2ctx/shots_16",
        "MaPLe": "MaPLe/vit_b16_c2_ep5_batch4_2ctx/shots_16",
    }
    assert set(rows) == set(expected.values()), result.stdout
    for row in rows.values():
        # experiment, dataset, base, ±, ci, new, ±, ci, HM, seeds "1/1"
        base, new, hm = float(row[2]), float(row[5]), float(row[8])
        assert 0 <= base <= 100 and 0 <= new <= 100 and 0 <= hm <= 100
        assert row[-1] == "1/1"


def test_prompt_baselines_train_on_base_and_load_those_prompts_for_new(base2new_output):
    for trainer, cfg, module in (("CoOp", "vit_b16_ep50", "prompt_learner"),
                                 ("IVLP", "vit_b16_c2_ep5_batch4_2+2ctx", "VLPromptLearner"),
                                 ("MaPLe", "vit_b16_c2_ep5_batch4_2ctx", "MultiModalPromptLearner")):
        base = base2new_output / "base2new_base" / trainer / cfg / "dtd" / "shots_16" / "seed1"
        new = base2new_output / "base2new_new" / trainer / cfg / "dtd" / "shots_16" / "seed1"
        assert (base / module / "model.pth.tar-1").is_file()
        new_log = (new / "log.txt").read_text()
        assert f'Loading weights to {module} from "{base / module / "model.pth.tar-1"}"' in new_log
        assert "SUBSAMPLE NEW CLASSES!" in new_log and "# classes  2" in new_log
    zs_new = base2new_output / "base2new_new" / "ZeroshotCLIP" / "vit_b16" / "dtd" / "shots_16" / "seed1"
    assert "load_model() is skipped" in (zs_new / "log.txt").read_text()
