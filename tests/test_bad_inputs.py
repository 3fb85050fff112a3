"""The rest of the bad-input matrix through ``train.py`` (issues #15 points 6, 7, 14 and #19 points
7-10): each mistake ends with one actionable ``train.py: error:`` line (exit 2, no traceback,
nothing that looks complete), a legal but surprising input says what was done, and a bug inside
the code keeps its traceback. Helpers and the rest of the matrix: ``test_reliability.py``.
"""
import json
import os

import pytest
import torch

import trainers.dpl_train
from tests.helpers.runs import final_accuracy, run_train, train_args
from tests.test_reliability import (  # noqa: F401  (own_data: a fixture)
    assert_nothing_looks_complete, dtd_split, own_data, run_fails, run_with_artifact,
    search_argv, tiny_artifact, tiny_opts, train_argv)

pytestmark = pytest.mark.slow  # end-to-end through train.py (in-process)

NO_PROMPTS = ["TRAINER.DPL.MANUAL.TEXT_LENGTH", "0", "TRAINER.DPL.MANUAL.VISION_LENGTH", "0"]


@pytest.fixture(scope="module")
def trained(data_root, tiny_clip_path, tmp_path_factory):
    """A finished 1-epoch DPLTrain run (manual configuration: 2 tokens per block)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    run_train(train_argv(data_root, out, tiny_clip_path, epochs=1))
    return out


@pytest.fixture(scope="module")
def searched(data_root, tiny_clip_path, tmp_path_factory):
    """A finished 1-epoch DPLSearch run asked for more shots than the data has (4 per class), with
    keys only DPLTrain reads."""
    out = tmp_path_factory.mktemp("searched") / "run"
    run_train(search_argv(data_root, out, tiny_clip_path, epochs=1,
                          opts=["DATASET.NUM_SHOTS", "100", "TRAINER.DPL.TEXT_INPUT", "ensemble",
                                "TRAINER.DPL.KD_WEIGHT", "1.0"]))
    return out


def newest_log(out):
    """The log of the latest run in ``out`` (a re-run writes ``log.txt-<time>`` next to ``log.txt``)."""
    return out / sorted(f for f in os.listdir(out) if f.startswith("log.txt"))[-1]


def eval_argv(root, out, clip_path, model_dir, opts=(), load_epoch=1):
    flags = ["--eval-only", "--load-epoch", str(load_epoch)]
    flags += ["--model-dir", str(model_dir)] if model_dir else []
    return train_argv(root, out, clip_path, epochs=1, flags=flags, opts=list(opts))


# -------------------------------------------------------------------------------------------------
# 15.7: only user errors are one line; a bug keeps its traceback


@pytest.mark.parametrize("exc", [ValueError, RuntimeError, KeyError])
def test_unexpected_error_inside_the_code_keeps_its_traceback(data_root, tmp_path, tiny_clip_path,
                                                              capsys, monkeypatch, exc):
    def broken(*args, **kwargs):
        raise exc("an internal bug")

    monkeypatch.setattr(trainers.dpl_train, "build_fixed_model", broken)
    monkeypatch.delenv("DPL_DEBUG", raising=False)
    out = tmp_path / "out"
    with pytest.raises(exc, match="an internal bug"):  # not SystemExit(2): Python prints the traceback
        run_train(train_argv(data_root, out, tiny_clip_path))
    assert "train.py: error" not in capsys.readouterr().err
    assert "train.py: error" not in (out / "log.txt").read_text()


# -------------------------------------------------------------------------------------------------
# 15.6 / 14(b): checkpoints of other settings or of another trainer


def test_eval_only_with_a_mismatched_artifact_names_file_and_shapes(data_root, trained, tmp_path,
                                                                    tiny_clip_path, capsys, monkeypatch):
    art = tiny_artifact(text={"lengths": [4] * len(tiny_artifact()["text"]["lengths"]), "options": [0, 4]})
    path = tmp_path / "other_prompt_config.json"
    path.write_text(json.dumps(art))
    out = tmp_path / "eval"
    msg = run_fails(eval_argv(data_root, out, tiny_clip_path, trained,
                              opts=["TRAINER.DPL.CONFIG_FILE", str(path)]), capsys, monkeypatch)
    ckpt = trained / "prompt_learner" / "model.pth.tar-1"
    assert msg.startswith(f'Checkpoint "{ckpt}" does not fit this model ('), msg
    assert "expected (4, " in msg and "found (2, " in msg  # the tensor shapes, not dozens of keys
    # Issue #22 §7: the artifact given is named, and the run's own one as the fix.
    assert f"built from the prompt configuration in TRAINER.DPL.CONFIG_FILE {path}," in msg
    assert f"pass TRAINER.DPL.CONFIG_FILE {trained / 'prompt_config.json'} " in msg
    assert_nothing_looks_complete(out)


def test_eval_only_of_a_search_run_says_whose_run_it_is(data_root, searched, tmp_path, tiny_clip_path,
                                                        capsys, monkeypatch):
    out = tmp_path / "eval"
    msg = run_fails(eval_argv(data_root, out, tiny_clip_path, searched), capsys, monkeypatch)
    assert msg == (f"--model-dir {searched} holds a DPLSearch run (see {searched / 'run_config.json'}), "
                   "but this is a DPLTrain run, which needs a folder of its own DPLTrain run; choose "
                   "another --model-dir.")
    assert_nothing_looks_complete(out)


def test_training_into_another_trainers_folder_is_refused(data_root, searched, trained, tmp_path,
                                                          tiny_clip_path, capsys, monkeypatch):
    before = sorted(os.listdir(searched))
    msg = run_fails(train_argv(data_root, searched, tiny_clip_path, epochs=1), capsys, monkeypatch)
    assert msg.startswith(f"--output-dir {searched} holds a DPLSearch run"), msg
    assert sorted(os.listdir(searched)) == before  # refused before anything was written there
    # A CoOp evaluation of a DPLTrain run: the same sentence.
    coop = train_args("CoOp", "vit_b16_ep50", "dtd", data_root, tmp_path / "coop",
                      extra=["--eval-only", "--model-dir", str(trained), "--load-epoch", "1"])
    msg = run_fails(coop + tiny_opts(tiny_clip_path) + ["TRAINER.COOP.PREC", "fp32"], capsys, monkeypatch)
    assert msg.startswith(f"--model-dir {trained} holds a DPLTrain run"), msg
    # --resume from a search run.
    msg = run_fails(train_argv(data_root, tmp_path / "t", tiny_clip_path, flags=["--resume", str(searched)]),
                    capsys, monkeypatch)
    assert msg.startswith(f"--resume {searched} holds a DPLSearch run"), msg


def test_project_error_classes_are_user_errors():
    """train.py reports exactly the UserError hierarchy; each explained error class belongs to it
    (and keeps its old base, so existing ``except`` clauses still match)."""
    import pickle

    from dassl.data.data_manager import ImageReadError
    from dassl.utils.torchtools import CorruptCheckpointError, UnsafeCheckpointError
    from datasets.errors import DatasetFormatError, DatasetLayoutError, UnsafeCacheError
    from dpl.artifact import ArtifactError
    from dpl.clip_loader import CheckpointError
    from dpl.gradcam import GradCamError
    from dpl.prompts import PromptConfigError
    from tools.predict import PredictError
    from dpl.errors import CheckpointMismatchError, NonFiniteLossError, UserError

    old_bases = {ImageReadError: ValueError, CorruptCheckpointError: ValueError,
                 UnsafeCheckpointError: pickle.UnpicklingError, DatasetFormatError: ValueError,
                 DatasetLayoutError: FileNotFoundError, UnsafeCacheError: pickle.UnpicklingError,
                 ArtifactError: ValueError, CheckpointError: RuntimeError, GradCamError: ValueError,
                 PromptConfigError: ValueError, NonFiniteLossError: FloatingPointError,
                 CheckpointMismatchError: ValueError, PredictError: ValueError}
    for cls, base in old_bases.items():
        assert issubclass(cls, UserError) and issubclass(cls, base), cls


def test_folder_without_a_run_record_still_names_the_checkpoint(data_root, tiny_clip_path, tmp_path,
                                                                capsys, monkeypatch):
    """Runs from before run_config.json: the checkpoint check itself names file and tensors."""
    out = tmp_path / "search"
    run_train(search_argv(data_root, out, tiny_clip_path, epochs=1))
    (out / "run_config.json").unlink()
    msg = run_fails(train_argv(data_root, out, tiny_clip_path), capsys, monkeypatch)  # resume
    assert msg.startswith(f'Checkpoint "{out / "prompt_learner" / "model.pth.tar-1"}" does not fit '
                          "this model ("), msg
    assert "another trainer" in msg and "choose another --output-dir" in msg
    msg = run_fails(eval_argv(data_root, tmp_path / "eval", tiny_clip_path, out), capsys, monkeypatch)
    assert f'{out / "prompt_learner" / "model.pth.tar-1"}" does not fit this model (' in msg


# -------------------------------------------------------------------------------------------------
# 14(a): a truncated checkpoint


def test_truncated_checkpoint_is_named_and_a_rerun_resumes_from_the_newest_that_loads(
        data_root, tiny_clip_path, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = train_argv(data_root, out, tiny_clip_path, epochs=2, opts=["TRAIN.KEEP_CHECKPOINTS", "0"])
    run_train(argv)
    last = out / "prompt_learner" / "model.pth.tar-2"
    last.write_bytes(last.read_bytes()[:-10])  # cut short at its end: torch raises OSError EINVAL

    msg = run_fails(eval_argv(data_root, tmp_path / "eval", tiny_clip_path, out, load_epoch=2),
                    capsys, monkeypatch)
    assert msg.startswith(f'Checkpoint "{last}" is corrupt or truncated'), msg

    run_train(argv)  # the same command again: epoch 2 is redone from epoch 1
    log = newest_log(out).read_text()
    assert (f'Note: checkpoint "{last}" is corrupt or truncated; resuming from epoch 1, the newest '
            "checkpoint that loads.") in log
    assert torch.load(last, weights_only=True)["epoch"] == 2  # rewritten whole
    assert final_accuracy(newest_log(out)) >= 0


def test_truncated_only_checkpoint_is_named_on_rerun(data_root, tiny_clip_path, tmp_path, capsys,
                                                     monkeypatch):
    out = tmp_path / "run"
    argv = train_argv(data_root, out, tiny_clip_path, epochs=2, opts=["TRAIN.KEEP_CHECKPOINTS", "1"])
    run_train(argv)
    last = out / "prompt_learner" / "model.pth.tar-2"
    last.write_bytes(last.read_bytes()[:-10])
    msg = run_fails(argv, capsys, monkeypatch)  # no older epoch kept: nothing to fall back to
    assert msg.startswith(f'Checkpoint "{last}" is corrupt or truncated'), msg
    assert "delete its run folder to train from scratch" in msg


# -------------------------------------------------------------------------------------------------
# 14(c): eval-only without --model-dir


def test_eval_only_without_model_dir_is_refused(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch):
    out = tmp_path / "eval"
    msg = run_fails(eval_argv(data_root, out, tiny_clip_path, None), capsys, monkeypatch)
    assert msg.startswith("DPLTrain --eval-only needs --model-dir"), msg
    assert_nothing_looks_complete(out)


# -------------------------------------------------------------------------------------------------
# 14(d), 14(e): split files


def _edit_split(root, edit):
    path = dtd_split(root)
    split = json.loads(path.read_text())
    edit(split)
    path.write_text(json.dumps(split))
    return path


def test_empty_split_is_named_and_leaves_no_stale_state(own_data, tmp_path, tiny_clip_path, capsys,
                                                        monkeypatch):
    original = dtd_split(own_data).read_text()
    path = _edit_split(own_data, lambda s: s.update(train=[]))
    out = tmp_path / "out"
    msg = run_fails(train_argv(own_data, out, tiny_clip_path, epochs=1), capsys, monkeypatch)
    assert msg.startswith(f"Split file {path}: the train split holds no images"), msg
    assert not (own_data / "dtd" / "split_fewshot").exists()  # no cache derived from the bad file
    assert_nothing_looks_complete(out)

    path.write_text(original)  # the user fixes the file: the same command now runs
    run_train(train_argv(own_data, out, tiny_clip_path, epochs=1))
    assert final_accuracy(newest_log(out)) >= 0


def test_fewshot_cache_older_than_its_split_file_is_rebuilt(own_data, tmp_path, tiny_clip_path):
    run_train(train_argv(own_data, tmp_path / "a", tiny_clip_path, epochs=1))
    cache = own_data / "dtd" / "split_fewshot" / "shot_1-seed_1.pkl"
    assert cache.is_file()
    stamp = cache.stat().st_mtime + 10
    os.utime(dtd_split(own_data), (stamp, stamp))  # the split file changed after the cache was made
    run_train(train_argv(own_data, tmp_path / "b", tiny_clip_path, epochs=1))
    assert f"Note: cache file {cache} is older than {dtd_split(own_data)}" in (tmp_path / "b" / "log.txt").read_text()


def test_split_labels_with_a_gap_are_named(own_data, tmp_path, tiny_clip_path, capsys, monkeypatch):
    def relabel(split):  # labels 0,1,2,3,4 -> 0,1,2,3,7
        for entries in split.values():
            for entry in entries:
                entry[1] = 7 if entry[1] == 4 else entry[1]

    path = _edit_split(own_data, relabel)
    out = tmp_path / "out"
    msg = run_fails(train_argv(own_data, out, tiny_clip_path, epochs=1), capsys, monkeypatch)
    assert msg == (f"Split file {path}: the train labels must be 0..4 (one per class, no gaps), but they "
                   "are [0, 1, 2, 3, 7], missing [4, 5, 6]; renumber the classes 0..4.")
    assert_nothing_looks_complete(out)


# -------------------------------------------------------------------------------------------------
# 14(f), 19.8: hand-edited artifacts


def test_artifact_with_null_in_alpha(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch):
    art = tiny_artifact()
    art["text"]["alpha"] = [[0.1, 0.2] for _ in art["text"]["lengths"]]
    art["text"]["alpha"][1][0] = None
    msg = run_with_artifact(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch, json.dumps(art))
    assert "text.alpha of block 1 holds null, but every value must be a finite number" in msg


def test_artifact_length_not_among_its_options(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch):
    art = tiny_artifact()
    art["vision"]["lengths"][0] = 5  # options [0, 2]
    msg = run_with_artifact(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch, json.dumps(art))
    assert "vision block 0 has length 5, which is not among its options [0, 2]" in msg


# -------------------------------------------------------------------------------------------------
# 14(g), 14(h): the command line


def test_no_config_file_and_no_manual_lengths_names_the_empty_key(data_root, tmp_path, tiny_clip_path,
                                                                   capsys, monkeypatch):
    out = tmp_path / "out"
    msg = run_fails(train_argv(data_root, out, tiny_clip_path, epochs=1, opts=NO_PROMPTS), capsys,
                    monkeypatch)
    assert msg.startswith("TRAINER.DPL.CONFIG_FILE is empty and the manual lengths"), msg
    assert "Pass TRAINER.DPL.CONFIG_FILE <search output>/prompt_config.json" in msg
    assert_nothing_looks_complete(out)


def test_flag_after_the_opts_says_where_flags_go(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch):
    out = tmp_path / "out"
    msg = run_fails(train_argv(data_root, out, tiny_clip_path) + ["--eval-only"], capsys, monkeypatch)
    assert msg.startswith("--eval-only comes after the KEY VALUE opts"), msg
    assert "put every --flag before the first KEY" in msg
    assert not out.exists()


# -------------------------------------------------------------------------------------------------
# 19.7, 19.10: legal input, honest records


def test_more_shots_than_images_is_said_and_recorded(searched):
    log = (searched / "log.txt").read_text()
    assert ("Note: DATASET.NUM_SHOTS is 100, but some classes have fewer training images; using all of "
            "theirs: 4 to 4 images per class (20 in all).") in log
    prov = json.loads((searched / "prompt_config.json").read_text())["provenance"]
    assert prov["num_shots"] == 4 and prov["num_shots_requested"] == 100
    assert prov["min_shots_per_class"] == 4


def test_keys_a_stage_ignores_are_warned_about_once(searched, trained):
    log = (searched / "log.txt").read_text()
    for key, value in (("TRAINER.DPL.TEXT_INPUT", "'ensemble'"), ("TRAINER.DPL.KD_WEIGHT", "1.0")):
        line = f"train.py: warning: DPLSearch ignores {key} (set to {value}); "
        assert log.count(line) == 1, log
    assert "ignores TRAINER.DPL.KD_TEMPERATURE" not in log  # at its default: no word
    log = (trained / "log.txt").read_text()  # tiny_opts set TRAINER.DPL.SEARCH.VAL_BATCH_SIZE
    assert log.count("train.py: warning: DPLTrain ignores TRAINER.DPL.SEARCH.VAL_BATCH_SIZE") == 1


# -------------------------------------------------------------------------------------------------
# 19.9: a finished folder re-run with another seed or config


@pytest.mark.parametrize("change, key, old, new", [
    (["--seed", "2"], "SEED", "1", "2"),
    (["OPTIM.LR", "0.5"], "OPTIM.LR", "0.0035", "0.5"),
])
def test_finished_folder_rerun_with_other_settings_is_refused(data_root, trained, tiny_clip_path,
                                                              capsys, monkeypatch, change, key, old, new):
    flags, opts = (change, []) if change[0].startswith("--") else ([], change)
    argv = train_argv(data_root, trained, tiny_clip_path, epochs=1, flags=flags, opts=opts)
    before = (trained / "run_config.json").read_text()
    msg = run_fails(argv, capsys, monkeypatch)
    assert msg.startswith(f"{trained} holds a finished run with {key} = {old} (see "
                          f"{trained / 'run_config.json'}), but this run has {key} = {new}"), msg
    assert "choose another --output-dir" in msg
    assert (trained / "run_config.json").read_text() == before


def test_unfinished_folder_resumes_with_a_lower_lr(data_root, tiny_clip_path, tmp_path, monkeypatch):
    """After a non-finite loss the message says: lower OPTIM.LR and re-run. That must stay possible."""
    from tests.helpers.runs import run_killed_after_first_epoch

    out = tmp_path / "run"
    run_killed_after_first_epoch(monkeypatch, trainers.dpl_train.DPLTrain,
                                 train_argv(data_root, out, tiny_clip_path, epochs=2))
    run_train(train_argv(data_root, out, tiny_clip_path, epochs=2, opts=["OPTIM.LR", "0.001"]))
    log = newest_log(out).read_text()
    assert f"Note: resuming {out} with OPTIM.LR changed from 0.0035 to 0.001" in log
    assert json.loads((out / "run_config.json").read_text())["finished"] is True


def test_eval_only_into_the_training_folder_never_replaces_its_configuration(
        data_root, trained, tmp_path, tiny_clip_path, capsys, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    kept = (run / "prompt_config.json").read_bytes()
    other = tmp_path / "other_prompt_config.json"
    other.write_text(json.dumps(tiny_artifact(
        text={"lengths": [4] * len(tiny_artifact()["text"]["lengths"]), "options": [0, 4]})))
    msg = run_fails(eval_argv(data_root, run, tiny_clip_path, run,
                              opts=["TRAINER.DPL.CONFIG_FILE", str(other)]), capsys, monkeypatch)
    assert f"holds prompts trained on the configuration in {run / 'prompt_config.json'}" in msg, msg
    assert f"Pass TRAINER.DPL.CONFIG_FILE {run / 'prompt_config.json'}" in msg
    assert (run / "prompt_config.json").read_bytes() == kept  # the run's record is intact
