"""train.py end to end, in-process: a toy trainer on a generated dataset, checkpoints, eval-only
reproduction, re-run resumes, seed handling, and one-line user errors."""
import os
import re

import pytest
import torch

import train
from tests.helpers.mini_dataset import make_mini_dtd  # registers MiniDTD and ToyLinear

TRAINER_YAML = """\
INPUT:
  SIZE: (8, 8)
  TRANSFORMS: ["random_flip", "normalize"]
DATALOADER:
  NUM_WORKERS: 0
  TRAIN_X:
    BATCH_SIZE: 4
  TEST:
    BATCH_SIZE: 5
OPTIM:
  NAME: sgd
  LR: 0.002
  MAX_EPOCH: 2
  LR_SCHEDULER: cosine
  WARMUP_EPOCH: 1
  WARMUP_TYPE: constant
  WARMUP_CONS_LR: 1e-5
TRAIN:
  PRINT_FREQ: 5
SEED: 5
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    make_mini_dtd(base / "data")
    (base / "mini_dtd.yaml").write_text("DATASET:\n  NAME: MiniDTD\n")
    (base / "toy.yaml").write_text(TRAINER_YAML)
    return base


def _argv(base, out, *extra, opts=("DATASET.NUM_SHOTS", "4")):
    return ["--root", str(base / "data"), "--trainer", "ToyLinear",
            "--dataset-config-file", str(base / "mini_dtd.yaml"), "--config-file", str(base / "toy.yaml"),
            "--output-dir", str(out), *extra, *opts]


def _log(out, name="log.txt"):
    return (out / name).read_text()


def _result_block(text):
    """The last evaluator block: '=> result' and its '* ...' lines."""
    lines = text.splitlines()
    start = len(lines) - 1 - lines[::-1].index("=> result")
    return lines[start:start + 6]


@pytest.fixture(scope="module")
def trained(setup):
    out = setup / "train_out"
    train.main(_argv(setup, out, "--seed", "1"))
    return out


def test_training_writes_log_and_checkpoints(trained):
    log = _log(trained)
    for line in ("** Arguments **", "** Config **", "** System info **", "Loading trainer: ToyLinear",
                 "Loading dataset: MiniDTD", "Building transform_train", "Loading evaluator: Classification",
                 "Finish training", "Deploy the last-epoch model", "Evaluate on the *test* set"):
        assert line + "\n" in log
    assert "Setting fixed seed" not in log  # printed before the logger starts, as in Dassl
    assert "seed: 1\n" in log and "opts: ['DATASET.NUM_SHOTS', '4']\n" in log
    assert re.search(r"^\* accuracy: \d+\.\d%$", log, re.M) and re.search(r"^Elapsed: ", log, re.M)
    assert len(re.findall(r"^epoch \[\d/2\] batch \[\d/3\] ", log, re.M)) == 6

    ckpt_dir = trained / "toy_model"
    assert sorted(os.listdir(ckpt_dir)) == ["checkpoint", "model.pth.tar-2"]
    assert (ckpt_dir / "checkpoint").read_text() == "model.pth.tar-2\n"
    ckpt = torch.load(ckpt_dir / "model.pth.tar-2", weights_only=True)
    assert {"state_dict", "epoch", "optimizer", "scheduler", "val_result"} <= set(ckpt) and ckpt["epoch"] == 2


def test_eval_only_reproduces_test_accuracy(setup, trained):
    out = setup / "eval_out"
    train.main(_argv(setup, out, "--seed", "1", "--eval-only", "--model-dir", str(trained),
                     "--load-epoch", "2"))
    log = _log(out)
    assert f"Load {trained / 'toy_model' / 'model.pth.tar-2'} to toy_model (epoch=2, val_result=None)" in log
    assert _result_block(log) == _result_block(_log(trained))
    assert "Finish training" not in log and not (out / "toy_model").exists()


def test_rerun_in_same_dir_resumes_and_keeps_old_log(setup, trained):
    before = _log(trained)
    train.main(_argv(setup, trained, "--seed", "1"))
    assert _log(trained) == before  # never overwritten
    new_logs = [f for f in os.listdir(trained) if re.fullmatch(r"log\.txt-\d{4}(-\d\d){5}", f)]
    assert len(new_logs) == 1
    log = _log(trained, new_logs[0])
    assert "Previous epoch: 2" in log and "epoch [" not in log.split("Previous epoch: 2")[1]
    assert _result_block(log) == _result_block(before)


def test_no_train_builds_and_stops(setup):
    out = setup / "no_train"
    train.main(_argv(setup, out, "--no-train"))
    log = _log(out)
    assert "Loading evaluator: Classification\n" in log and "epoch [" not in log
    assert "Finish training" not in log and not (out / "toy_model").exists()


@pytest.mark.parametrize("flags, opts, expected", [
    ((), (), 5),                          # SEED from the trainer YAML is kept
    (("--seed", "0"), (), 0),             # --seed 0 is honoured (real CoOp ignored it)
    (("--seed", "3"), (), 3),             # the flag beats the YAML
    (("--seed", "3"), ("SEED", "7"), 7),  # opts beat the flag
])
def test_seed_precedence(setup, flags, opts, expected):
    args = train.get_parser().parse_args(_argv(setup, setup / "unused", *flags, opts=opts))
    cfg = train.setup_cfg(args)
    assert cfg.SEED == expected and cfg.is_frozen()


def test_merge_order(setup, tmp_path):
    ds_yaml = tmp_path / "ds.yaml"
    ds_yaml.write_text("DATASET:\n  NAME: MiniDTD\nOPTIM:\n  MAX_EPOCH: 9\n  GAMMA: 0.5\n")
    argv = _argv(setup, setup / "unused", "--transforms", "normalize", "--head", "h",
                 opts=("OPTIM.LR", "0.5", "INPUT.TRANSFORMS", "['random_flip']"))
    argv[argv.index(str(setup / "mini_dtd.yaml"))] = str(ds_yaml)
    cfg = train.setup_cfg(train.get_parser().parse_args(argv))
    assert cfg.OPTIM.GAMMA == 0.5 and cfg.OPTIM.MAX_EPOCH == 2  # trainer YAML beats dataset YAML
    assert cfg.MODEL.HEAD.NAME == "h"  # flags beat YAML
    assert cfg.OPTIM.LR == 0.5 and list(cfg.INPUT.TRANSFORMS) == ["random_flip"]  # opts beat flags


@pytest.mark.parametrize("flags, opts, message", [
    (("--trainer", "ToyLinea"), (), r"but got \[ToyLinea\] \(do you mean \[ToyLinear\]\?\)"),
    ((), ("OPTIM.MAX_EPOCHS", "3"), r"unknown config key OPTIM.MAX_EPOCHS .*did you mean OPTIM.MAX_EPOCH\?"),
    ((), ("OPTIM.LR", "1"), r"Type mismatch"),
    ((), ("OPTIM.LR",), r"must be KEY VALUE pairs"),
    ((), ("DATASET.NUM_SHOTS", "0"), r"DATASET.NUM_SHOTS must be -1 .* got 0"),
    ((), ("DATALOADER.TRAIN_X.BATCH_SIZE", "0"), r"DATALOADER.TRAIN_X.BATCH_SIZE must be positive, got 0"),
    (("--config-file", "missing.yaml"), (), r"config file 'missing.yaml' \(--config-file\) does not exist"),
    (("--eval-only", "--model-dir", "nowhere", "--load-epoch", "2"), (), r"No model at nowhere"),
])
def test_user_errors_are_one_line_with_exit_code_2(setup, tmp_path, capsys, monkeypatch,
                                                   flags, opts, message):
    monkeypatch.delenv("DPL_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exc:
        train.main(_argv(setup, tmp_path / "out", *flags, opts=opts))
    assert exc.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("train.py: error: ")
    assert re.search(message, err[0]), err[0]


def test_unknown_key_in_yaml_names_the_file(setup, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("OPTIM:\n  WARMUP_EPOCHS: 1\n")
    with pytest.raises(SystemExit):
        train.main(_argv(setup, tmp_path / "out", "--config-file", str(bad)))
    assert capsys.readouterr().err.strip() == (
        f"train.py: error: unknown config key OPTIM.WARMUP_EPOCHS in {bad}; did you mean OPTIM.WARMUP_EPOCH?")


def test_unwritable_output_dir(setup, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit):
        train.main(_argv(setup, blocker / "out"))
    assert re.match(r"train.py: error: OUTPUT_DIR '.*' is not writable", capsys.readouterr().err)


def test_dpl_debug_shows_the_exception(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("DPL_DEBUG", "1")
    with pytest.raises(ValueError, match="do you mean"):
        train.main(_argv(setup, tmp_path / "out", "--trainer", "Nope"))
