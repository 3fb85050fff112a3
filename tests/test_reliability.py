"""Reliability and security through ``train.py`` (issue #10): every bad input gets one actionable
line on stderr, exit code 2, no traceback, and leaves nothing behind that looks complete; planted
pickles are refused without running; a non-finite loss stops the run and keeps the last good
checkpoint; the protocol scripts stop without a ``.done`` marker.

Runs are in-process (``train.main``) on a tiny CLIP and the miniature DTD. Crash/resume and
determinism runs live in ``test_reliability_crash.py``. Related proofs elsewhere (not repeated
here): ``test_train_py.py`` (the same one-line errors on a toy trainer, DPL_DEBUG),
``test_datasets.py`` (each dataset error and the restricted unpickler at the loader level),
``test_dassl_engine.py`` (atomic save interrupted by KeyboardInterrupt, legacy opt-in),
``test_artifact.py`` (artifact validation at the library level).
"""
import errno
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from dassl.utils import load_checkpoint
from dpl.artifact import fixed_artifact
from tests.helpers.dataset_fixtures import write_fixture
from tests.helpers.runs import REPO, run_train, train_args
from tests.helpers.tiny_clip import TinyClipSpec

pytestmark = pytest.mark.slow  # end-to-end through train.py (in-process)

SEARCH_OPTIONS = ["TRAINER.DPL.SEARCH.TEXT_OPTIONS", "[0, 2]", "TRAINER.DPL.SEARCH.VISION_OPTIONS", "[0, 2]",
                  "TRAINER.DPL.SEARCH.PLOT", "False"]
MANUAL_PROMPTS = ["TRAINER.DPL.MANUAL.TEXT_LENGTH", "2", "TRAINER.DPL.MANUAL.VISION_LENGTH", "2"]


# -------------------------------------------------------------------------------------------------
# Helpers (also used by test_reliability_crash.py)


def tiny_opts(clip_path, epochs=2, shots=1):
    """Seconds-long CPU settings: 1 shot x 5 classes = one train batch per epoch, one test batch."""
    return [
        "MODEL.BACKBONE.NAME", "tiny", "MODEL.BACKBONE.PATH", str(clip_path),
        "MODEL.BACKBONE.CONFIG", "openai",
        "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
        "DATALOADER.TRAIN_X.BATCH_SIZE", "5", "DATALOADER.TEST.BATCH_SIZE", "10",
        "OPTIM.MAX_EPOCH", str(epochs), "DATASET.NUM_SHOTS", str(shots),
        "TRAINER.DPL.SEARCH.VAL_BATCH_SIZE", "5", "TRAIN.PRINT_FREQ", "100",
    ]


def search_argv(root, out, clip_path, epochs=2, flags=(), opts=(), seed=1):
    return (train_args("DPLSearch", "vit_b16", "dtd", root, out, seed, extra=list(flags))
            + tiny_opts(clip_path, epochs) + SEARCH_OPTIONS + list(opts))


def train_argv(root, out, clip_path, epochs=2, flags=(), opts=(), dataset="dtd", seed=1):
    """DPLTrain on a manual configuration (2 tokens per block) unless opts give CONFIG_FILE."""
    return (train_args("DPLTrain", "vit_b16", dataset, root, out, seed, extra=list(flags))
            + tiny_opts(clip_path, epochs) + MANUAL_PROMPTS + list(opts))


def run_fails(argv, capsys, monkeypatch):
    """Run train.py in-process; it must exit with code 2 and one ``train.py: error:`` line.
    Returns that line's message."""
    monkeypatch.delenv("DPL_DEBUG", raising=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_train(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "train.py: error:" in line]
    assert len(lines) == 1, err
    assert lines[0].startswith("train.py: error: "), lines[0]  # on its own line, not after a bar
    return lines[0][len("train.py: error: "):]


def assert_nothing_looks_complete(out, search=False):
    """No final output of a run that failed: no search artifact, no `.done`, no result line, no
    temp file, and every `checkpoint` pointer names a file that loads weights-only."""
    if not os.path.exists(out):
        return
    for dirpath, _, files in os.walk(out):
        assert ".done" not in files
        assert not [f for f in files if f.endswith(".tmp")], (dirpath, files)
        if "checkpoint" in files:
            name = open(os.path.join(dirpath, "checkpoint")).read().strip()
            ckpt = torch.load(os.path.join(dirpath, name), map_location="cpu", weights_only=True)
            assert isinstance(ckpt["epoch"], int)
        for log in (f for f in files if f.startswith("log.txt")):
            text = open(os.path.join(dirpath, log)).read()
            assert "* accuracy:" not in text
            assert text.rstrip().splitlines()[-1].startswith("train.py: error: ")  # the log says why
    if search:
        assert not os.path.exists(os.path.join(out, "prompt_config.json"))


@pytest.fixture
def own_data(tmp_path):
    """A private miniature DTD for tests that damage or plant files in it."""
    root = tmp_path / "data"
    write_fixture("DescribableTextures", root)
    return root


def dtd_split(root):
    return root / "dtd" / "split_zhou_DescribableTextures.json"


# -------------------------------------------------------------------------------------------------
# Bad-input matrix: one test per row


def test_missing_data_root(tmp_path, tiny_clip_path, capsys, monkeypatch):
    out = tmp_path / "out"
    msg = run_fails(train_argv(tmp_path / "nowhere", out, tiny_clip_path), capsys, monkeypatch)
    assert "DATASET.ROOT" in msg and str(tmp_path / "nowhere") in msg and "--root" in msg
    assert_nothing_looks_complete(out)


def test_missing_split_file(tmp_path, tiny_clip_path, capsys, monkeypatch):
    # OxfordPets can only rebuild its split from annotations/; without both it must say so.
    root = tmp_path / "data"
    write_fixture("OxfordPets", root)
    os.remove(root / "oxford_pets" / "annotations" / "trainval.txt")
    out = tmp_path / "out"
    msg = run_fails(train_argv(root, out, tiny_clip_path, dataset="oxford_pets"), capsys, monkeypatch)
    assert str(root / "oxford_pets" / "annotations" / "trainval.txt") in msg
    assert "split_zhou_OxfordPets.json" in msg
    assert_nothing_looks_complete(out)


def test_malformed_split_file(own_data, tmp_path, tiny_clip_path, capsys, monkeypatch):
    split = dtd_split(own_data)
    split.write_text(split.read_text()[:200])  # cut off mid-file
    out = tmp_path / "out"
    msg = run_fails(train_argv(own_data, out, tiny_clip_path), capsys, monkeypatch)
    assert str(split) in msg and "not valid JSON" in msg
    assert_nothing_looks_complete(out)


def test_split_entry_whose_image_is_missing(own_data, tmp_path, tiny_clip_path, capsys, monkeypatch):
    relpath = json.loads(dtd_split(own_data).read_text())["test"][0][0]
    os.remove(own_data / "dtd" / "images" / relpath)
    out = tmp_path / "out"
    msg = run_fails(train_argv(own_data, out, tiny_clip_path), capsys, monkeypatch)
    assert str(dtd_split(own_data)) in msg and "1 image file(s)" in msg and relpath in msg
    assert_nothing_looks_complete(out)


def test_corrupt_image_read_in_a_worker_is_one_line(own_data, tmp_path, tiny_clip_path, capsys,
                                                    monkeypatch):
    relpath = json.loads(dtd_split(own_data).read_text())["test"][3][0]
    bad = own_data / "dtd" / "images" / relpath
    bad.write_bytes(b"\xff\xd8 this is no JPEG")
    out = tmp_path / "out"
    # No prompts (lengths 0): eval-only without --model-dir is then zero-shot CLIP, which is allowed.
    argv = train_argv(own_data, out, tiny_clip_path, flags=["--eval-only"],
                      opts=["DATALOADER.NUM_WORKERS", "1", "TRAINER.DPL.MANUAL.TEXT_LENGTH", "0",
                            "TRAINER.DPL.MANUAL.VISION_LENGTH", "0"])
    msg = run_fails(argv, capsys, monkeypatch)
    assert msg.startswith(f"Cannot read image file {bad} (UnidentifiedImageError"), msg
    assert "restore it from the original dataset archive" in msg and "worker" not in msg
    assert_nothing_looks_complete(out)


def test_truncated_image_in_training(own_data, tmp_path, tiny_clip_path, capsys, monkeypatch):
    # Truncate every train image of one class, so the 1-shot pick is surely broken.
    split = json.loads(dtd_split(own_data).read_text())
    broken = [own_data / "dtd" / "images" / rel for rel, label, _ in split["train"] if label == 0]
    for path in broken:
        path.write_bytes(path.read_bytes()[:100])
    out = tmp_path / "out"
    msg = run_fails(train_argv(own_data, out, tiny_clip_path), capsys, monkeypatch)
    assert any(msg.startswith(f"Cannot read image file {p} (OSError") for p in broken), msg
    assert not (out / "prompt_learner").exists()  # failed in epoch 1: nothing saved
    assert_nothing_looks_complete(out)


def test_missing_clip_checkpoint(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch):
    out = tmp_path / "out"
    argv = train_argv(data_root, out, tiny_clip_path, opts=["MODEL.BACKBONE.PATH", str(tmp_path / "no.pt")])
    msg = run_fails(argv, capsys, monkeypatch)
    assert f"not found at {tmp_path / 'no.pt'}" in msg and "MODEL.BACKBONE.PATH" in msg
    assert_nothing_looks_complete(out)


def test_corrupt_clip_checkpoint(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch):
    bad = tmp_path / "half.pt"
    data = open(tiny_clip_path, "rb").read()
    bad.write_bytes(data[: len(data) // 2])  # an interrupted copy
    out = tmp_path / "out"
    msg = run_fails(train_argv(data_root, out, tiny_clip_path, opts=["MODEL.BACKBONE.PATH", str(bad)]),
                    capsys, monkeypatch)
    assert str(bad) in msg and "corrupt" in msg and "copy it again" in msg
    assert "weights_only` set to `False`" not in msg  # torch's advice must not leak into ours
    assert_nothing_looks_complete(out)


def tiny_artifact(**branch_changes):
    """A valid prompt_config.json for the tiny CLIP, with per-branch field overrides."""
    spec = TinyClipSpec()
    dims = {"text": {"num_blocks": spec.text_layers, "width": spec.text_width},
            "vision": {"num_blocks": spec.vision_layers, "width": spec.vision_width}}
    art = fixed_artifact("tiny", dims, [2] * spec.text_layers, [2] * spec.vision_layers, {"dataset": "t"})
    for branch, changes in branch_changes.items():
        art[branch].update(changes)
    return art


def run_with_artifact(data_root, tmp_path, clip_path, capsys, monkeypatch, text):
    path = tmp_path / "prompt_config.json"
    if text is not None:
        path.write_text(text)
    out = tmp_path / "out"
    msg = run_fails(train_argv(data_root, out, clip_path, opts=["TRAINER.DPL.CONFIG_FILE", str(path)]),
                    capsys, monkeypatch)
    assert str(path) in msg
    assert_nothing_looks_complete(out)
    assert not (out / "prompt_config.json").exists()  # the bad configuration is not copied
    return msg


def test_artifact_missing(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch):
    msg = run_with_artifact(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch, None)
    assert "does not exist" in msg and "Run the search first" in msg


def test_artifact_malformed_json(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch):
    text = json.dumps(tiny_artifact())[:-40]
    msg = run_with_artifact(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch, text)
    assert "not valid JSON" in msg


def test_artifact_wrong_schema_version(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch):
    art = tiny_artifact()
    art["schema"] = "dpl-prompt-config/99"
    msg = run_with_artifact(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch, json.dumps(art))
    assert "'dpl-prompt-config/99'" in msg and "Re-run the search" in msg


def test_artifact_wrong_depth(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch):
    depth = TinyClipSpec().text_layers + 9
    art = tiny_artifact(text={"num_blocks": depth, "lengths": [2] * depth})
    msg = run_with_artifact(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch, json.dumps(art))
    assert f"{depth} blocks" in msg and "Use an artifact searched with this backbone" in msg


def test_artifact_wrong_width(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch):
    art = tiny_artifact(vision={"width": 768})
    msg = run_with_artifact(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch, json.dumps(art))
    assert "width 768" in msg and f"width {TinyClipSpec().vision_width}" in msg


def test_artifact_negative_lengths(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch):
    art = tiny_artifact()
    art["text"]["lengths"][1] = -2
    msg = run_with_artifact(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch, json.dumps(art))
    assert "text.lengths must be integers >= 0, got -2" in msg


def test_search_options_without_zero(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch):
    out = tmp_path / "out"
    argv = search_argv(data_root, out, tiny_clip_path, opts=["TRAINER.DPL.SEARCH.TEXT_OPTIONS", "[2, 4]"])
    msg = run_fails(argv, capsys, monkeypatch)
    assert "TRAINER.DPL.SEARCH.TEXT_OPTIONS" in msg and "starting with 0" in msg and "[2, 4]" in msg
    assert_nothing_looks_complete(out, search=True)


def test_search_options_unsorted(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch):
    out = tmp_path / "out"
    opts = ["TRAINER.DPL.SEARCH.VISION_OPTIONS", "[0, 4, 2]"]
    argv = search_argv(data_root, out, tiny_clip_path, opts=opts)
    msg = run_fails(argv, capsys, monkeypatch)
    assert "TRAINER.DPL.SEARCH.VISION_OPTIONS" in msg and "sorted" in msg and "[0, 4, 2]" in msg
    assert_nothing_looks_complete(out, search=True)


def test_unknown_dataset_lists_the_available_ones(data_root, tmp_path, tiny_clip_path, capsys,
                                                  monkeypatch):
    yaml_file = tmp_path / "typo.yaml"
    yaml_file.write_text("DATASET:\n  NAME: DescribableTexture\n")
    out = tmp_path / "out"
    argv = train_argv(data_root, out, tiny_clip_path)
    argv[argv.index("--dataset-config-file") + 1] = str(yaml_file)
    msg = run_fails(argv, capsys, monkeypatch)
    assert msg.startswith("unknown dataset 'DescribableTexture'")
    assert "'Caltech101'" in msg and "'ImageNetR'" in msg and "do you mean [DescribableTextures]" in msg
    assert not out.exists()


def test_unknown_trainer_lists_the_available_ones(data_root, tmp_path, tiny_clip_path, capsys,
                                                  monkeypatch):
    out = tmp_path / "out"
    argv = train_argv(data_root, out, tiny_clip_path)
    argv[argv.index("--trainer") + 1] = "DPLTrian"
    msg = run_fails(argv, capsys, monkeypatch)
    assert msg.startswith("unknown trainer 'DPLTrian'")
    assert "'DPLSearch'" in msg and "do you mean [DPLTrain]" in msg
    assert not out.exists()


def test_unknown_config_key_suggests_the_closest(data_root, tmp_path, tiny_clip_path, capsys,
                                                 monkeypatch):
    out = tmp_path / "out"
    argv = search_argv(data_root, out, tiny_clip_path, opts=["TRAINER.DPL.SEARCH.TEXT_OPTION", "[0, 2]"])
    msg = run_fails(argv, capsys, monkeypatch)
    assert msg == ("unknown config key TRAINER.DPL.SEARCH.TEXT_OPTION in the command-line opts; "
                   "did you mean TRAINER.DPL.SEARCH.TEXT_OPTIONS?")
    assert not out.exists()


def test_zero_shots(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch):
    out = tmp_path / "out"
    msg = run_fails(train_argv(data_root, out, tiny_clip_path, opts=["DATASET.NUM_SHOTS", "0"]),
                    capsys, monkeypatch)
    assert "DATASET.NUM_SHOTS must be -1 (all images) or a positive number of shots, got 0" in msg
    assert not out.exists()


def test_zero_batch_size(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch):
    out = tmp_path / "out"
    argv = search_argv(data_root, out, tiny_clip_path, opts=["DATALOADER.TRAIN_X.BATCH_SIZE", "0"])
    msg = run_fails(argv, capsys, monkeypatch)
    assert "DATALOADER.TRAIN_X.BATCH_SIZE must be positive, got 0" in msg
    assert not out.exists()


def test_output_dir_not_writable(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"  # root ignores permissions; a file as parent stops everyone
    blocker.write_text("")
    msg = run_fails(train_argv(data_root, blocker / "out", tiny_clip_path), capsys, monkeypatch)
    assert f"OUTPUT_DIR '{blocker / 'out'}' is not writable" in msg and "--output-dir" in msg
    assert blocker.read_text() == ""


def test_disk_full_while_writing_a_checkpoint(data_root, tmp_path, tiny_clip_path, capsys, monkeypatch):
    import dassl.utils.torchtools as torchtools

    real_save = torch.save

    def disk_fills_at_epoch_2(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            f.write(b"\0" * 64)  # part of the file made it to disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    out = tmp_path / "out"
    argv = train_argv(data_root, out, tiny_clip_path, epochs=3, opts=["TRAIN.CHECKPOINT_FREQ", "1"])
    monkeypatch.setattr(torchtools.torch, "save", disk_fills_at_epoch_2)
    msg = run_fails(argv, capsys, monkeypatch)
    monkeypatch.undo()

    folder = out / "prompt_learner"
    assert msg.startswith(f"no space left on the device while writing {folder / 'model.pth.tar-2'}")
    assert "re-run the same command" in msg
    assert sorted(os.listdir(folder)) == ["checkpoint", "model.pth.tar-1"]  # temp file removed
    assert (folder / "checkpoint").read_text() == "model.pth.tar-1\n"
    assert load_checkpoint(str(folder / "model.pth.tar-1"))["epoch"] == 1
    assert_nothing_looks_complete(out)

    # As the message says: with space again, the same command resumes and finishes.
    run_train(argv)
    log = sorted(f for f in os.listdir(out) if f.startswith("log.txt-"))[-1]
    text = (out / log).read_text()
    assert "Previous epoch: 1" in text and "epoch [1/3]" not in text and "* accuracy:" in text


# -------------------------------------------------------------------------------------------------
# Safe loading: planted pickles are refused without running


class _Payload:
    """Unpickling this runs code: it creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_malicious_fewshot_cache_is_refused_without_running(own_data, tmp_path, tiny_clip_path, capsys,
                                                            monkeypatch):
    marker = tmp_path / "pwned"
    cache = own_data / "dtd" / "split_fewshot" / "shot_1-seed_1.pkl"  # what NUM_SHOTS 1, seed 1 reads
    cache.parent.mkdir()
    cache.write_bytes(pickle.dumps({"train": [_Payload(marker)], "val": []}))
    out = tmp_path / "out"
    msg = run_fails(train_argv(own_data, out, tiny_clip_path), capsys, monkeypatch)
    assert not marker.exists()
    assert msg.startswith(f"Refused to load cache file {cache}: it asks to import builtins.exec")
    assert "delete the file" in msg
    assert_nothing_looks_complete(out)


def _plant_checkpoint(folder, marker, fmt):
    folder.mkdir(parents=True)
    state = {"state_dict": {"w": _Payload(marker)}, "epoch": 1, "optimizer": None, "scheduler": None}
    if fmt == "torch.save":
        torch.save(state, folder / "model.pth.tar-1")
    else:  # a bare pickle stream
        (folder / "model.pth.tar-1").write_bytes(pickle.dumps(state, protocol=2))
    (folder / "checkpoint").write_text("model.pth.tar-1\n")
    return folder / "model.pth.tar-1"


@pytest.mark.parametrize("fmt", ["torch.save", "pickle"])
@pytest.mark.parametrize("mode", ["resume", "eval-only"])
def test_malicious_checkpoint_is_refused_without_running(data_root, tmp_path, tiny_clip_path, capsys,
                                                         monkeypatch, mode, fmt):
    monkeypatch.delenv("DASSL_ALLOW_UNSAFE_LOAD", raising=False)
    marker = tmp_path / "pwned"
    out = tmp_path / "out"
    if mode == "resume":  # re-running in an output dir resumes from its checkpoint
        planted = _plant_checkpoint(out / "prompt_learner", marker, fmt)
        argv = train_argv(data_root, out, tiny_clip_path)
    else:
        planted = _plant_checkpoint(tmp_path / "model" / "prompt_learner", marker, fmt)
        argv = train_argv(data_root, out, tiny_clip_path,
                          flags=["--eval-only", "--model-dir", str(tmp_path / "model"), "--load-epoch", "1"])
    msg = run_fails(argv, capsys, monkeypatch)
    assert not marker.exists()
    assert msg.startswith(f'Checkpoint "{planted}" is not a weights-only checkpoint (')
    assert "only if you trust this file, set DASSL_ALLOW_UNSAFE_LOAD=1 to load it anyway" in msg
    assert "nothing in it ran" in msg and "weights_only` set to `False`" not in msg


def test_malicious_clip_state_dict_is_refused_without_running(data_root, tmp_path, tiny_clip_path,
                                                              capsys, monkeypatch):
    marker = tmp_path / "pwned"
    planted = tmp_path / "clip.pt"
    torch.save({"token_embedding.weight": _Payload(marker)}, planted)
    out = tmp_path / "out"
    msg = run_fails(train_argv(data_root, out, tiny_clip_path, opts=["MODEL.BACKBONE.PATH", str(planted)]),
                    capsys, monkeypatch)
    assert not marker.exists()
    assert f"Could not read the CLIP checkpoint {planted}" in msg and "GLOBAL exec" in msg


# -------------------------------------------------------------------------------------------------
# Non-finite loss: stop with epoch and batch, keep the last good checkpoint


@pytest.mark.parametrize("trainer", ["DPLSearch", "DPLTrain"])
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_root, tmp_path, tiny_clip_path, capsys,
                                                           monkeypatch, trainer):
    from dpl.model import DPLCLIP
    from trainers.dpl_search import DPLSearch
    from trainers.dpl_train import DPLTrain

    cls = {"DPLSearch": DPLSearch, "DPLTrain": DPLTrain}[trainer]
    poisoned = {"on": False}
    before_epoch, forward = cls.before_epoch, DPLCLIP.forward

    def poison_from_epoch_2(self):
        before_epoch(self)
        poisoned["on"] = self.epoch >= 1

    def nan_forward(self, *args, **kwargs):
        logits = forward(self, *args, **kwargs)
        return logits * float("nan") if poisoned["on"] else logits

    monkeypatch.setattr(cls, "before_epoch", poison_from_epoch_2)
    monkeypatch.setattr(DPLCLIP, "forward", nan_forward)
    out = tmp_path / "out"
    argv = (search_argv if trainer == "DPLSearch" else train_argv)(
        data_root, out, tiny_clip_path, epochs=3, opts=["TRAIN.CHECKPOINT_FREQ", "1"])
    msg = run_fails(argv, capsys, monkeypatch)

    assert msg.startswith("Loss is infinite or NaN!") and "at epoch 2/3, batch 1/1" in msg, msg
    assert "lower OPTIM.LR" in msg
    models = ["prompt_learner", "alpha"] if trainer == "DPLSearch" else ["prompt_learner"]
    for name in models:
        assert sorted(os.listdir(out / name)) == ["checkpoint", "model.pth.tar-1"]
        assert (out / name / "checkpoint").read_text() == "model.pth.tar-1\n"
        ckpt = torch.load(out / name / "model.pth.tar-1", map_location="cpu", weights_only=True)
        assert ckpt["epoch"] == 1
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    assert_nothing_looks_complete(out, search=trainer == "DPLSearch")


# -------------------------------------------------------------------------------------------------
# Protocol scripts: one line, exit 2, no .done


def run_script(args, env_extra, cwd=None):
    env = {**os.environ, "SEEDS": "1", "PYTHON": sys.executable, **env_extra}
    return subprocess.run(["bash", os.path.join(REPO, "scripts", "dpl", "search.sh"), *args], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def done_markers(root):
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f == ".done"]


def test_search_sh_missing_data_root(tmp_path):
    proc = run_script(["dtd", "1"], {"DATA": str(tmp_path / "nowhere"), "OUTPUT": str(tmp_path / "out")})
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and f"DATA={tmp_path / 'nowhere'} does not exist" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_search_sh_unknown_dataset(tmp_path):
    (tmp_path / "data").mkdir()
    proc = run_script(["dtdd", "1"], {"DATA": str(tmp_path / "data"), "OUTPUT": str(tmp_path / "out")})
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "unknown dataset 'dtdd'" in proc.stderr
    assert " dtd " in proc.stderr.split("available:")[1] + " "  # the valid names are listed
    assert not (tmp_path / "out").exists()


FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for python: records its cwd and arguments, creates --output-dir, exits with $FAKE_RC.
echo "$PWD" > "$FAKE_LOG"; printf '%s\\n' "$@" >> "$FAKE_LOG"
while [[ $# -gt 0 ]]; do if [[ "$1" == --output-dir ]]; then mkdir -p "$2"; fi; shift; done
if [[ "$FAKE_RC" != 0 ]]; then echo "train.py: error: fake failure" >&2; fi
exit "$FAKE_RC"
"""


@pytest.mark.parametrize("rc", [0, 2])
def test_search_sh_marks_done_only_on_success_with_paths_from_any_cwd(tmp_path, rc):
    """A failing train.py stops the script (its exit code, its one line, no .done); relative
    DATA/OUTPUT mean the caller's cwd, for the checks, train.py (run from the repo) and .done."""
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    (tmp_path / "data").mkdir()
    log = tmp_path / "calls.txt"
    proc = run_script(["dtd", "1"], {"DATA": "data", "OUTPUT": "./out", "PYTHON": str(fake),
                                     "FAKE_RC": str(rc), "FAKE_LOG": str(log)}, cwd=tmp_path)
    cwd, *args = log.read_text().splitlines()
    assert cwd == REPO and args[0] == "train.py"
    assert args[args.index("--root") + 1] == str(tmp_path / "data")
    run_dir = tmp_path / "out" / "fewshot" / "DPLSearch" / "vit_b16" / "dtd" / "shots_16" / "seed1"
    assert args[args.index("--output-dir") + 1] == str(run_dir)
    assert proc.returncode == rc
    if rc:
        assert proc.stderr == "train.py: error: fake failure\n" and done_markers(tmp_path) == []
    else:
        assert done_markers(tmp_path) == [str(run_dir / ".done")]
