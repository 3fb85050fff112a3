"""End to end on CPU: your images (ImageFolder) + an open_clip model from a local file (config JSON,
non-default size/mean/std/interpolation) -> search -> train -> eval-only -> predictions
(``dpl.load_classifier`` and tools/predict.py), docs/PREDICT.md."""
import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from tests.helpers.runs import final_accuracy, run_train, train_args
from tests.helpers.tiny_open_clip import write_tiny_open_clip
from tests.test_own_data import make_imagefolder


def model_opts(files, weights):
    # No INPUT.* keys: size 40, mean/std 0.5/0.25 and bilinear must come from the model's config.
    return ["MODEL.BACKBONE.NAME", "my-tiny-vit", "MODEL.BACKBONE.PATH", weights,
            "MODEL.BACKBONE.CONFIG", files.config, "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TEST.BATCH_SIZE", "8", "DATASET.NUM_SHOTS", "4", "DATASET.TEST_FRACTION", "0.3",
            "TRAINER.DPL.SEARCH.VAL_BATCH_SIZE", "4", "TRAIN.PRINT_FREQ", "100"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    data = make_imagefolder(tmp / "my_images")
    files = write_tiny_open_clip(tmp / "clip")
    out = {k: str(tmp / k) for k in ("search", "train", "eval")}
    # Search on the safetensors file, train and evaluate on the .bin copy (same weights).
    run_train(train_args("DPLSearch", "vit_b16", "imagefolder", data, out["search"], extra=[
        *model_opts(files, files.safetensors), "OPTIM.MAX_EPOCH", "1",
        "TRAINER.DPL.SEARCH.TEXT_OPTIONS", "[0, 2]", "TRAINER.DPL.SEARCH.VISION_OPTIONS", "[0, 2]",
        # α barely moves in one tiny epoch; a wide α init gives prompts to train in some blocks.
        "TRAINER.DPL.SEARCH.ALPHA_INIT_STD", "1.0"]))
    artifact = os.path.join(out["search"], "prompt_config.json")
    train_flags = train_args("DPLTrain", "vit_b16", "imagefolder", data, out["train"], extra=[
        *model_opts(files, files.bin), "OPTIM.MAX_EPOCH", "2", "OPTIM.LR", "0.05",
        "TRAINER.DPL.CONFIG_FILE", artifact])
    run_train(train_flags)
    run_train(train_args("DPLTrain", "vit_b16", "imagefolder", data, out["eval"], extra=[
        "--eval-only", "--model-dir", out["train"], "--load-epoch", "2", *model_opts(files, files.bin),
        "TRAINER.DPL.CONFIG_FILE", os.path.join(out["train"], "prompt_config.json")]))
    return {"data": data, "files": files, "out": out, "artifact": artifact, "train_flags": train_flags}


def test_runs_use_the_models_preprocessing_and_record_its_weights(pipeline):
    with open(os.path.join(pipeline["out"]["train"], "log.txt")) as fh:
        log = fh.read()
    assert ("Input preprocessing: size (40, 40), mean (0.5, 0.5, 0.5), std (0.25, 0.25, 0.25), "
            "interpolation bilinear (the model's)") in log
    with open(pipeline["artifact"]) as fh:
        backbone = json.load(fh)["backbone"]
    assert backbone["name"] == "my-tiny-vit" and len(backbone["sha256"]) == 64


def test_api_predictions_equal_eval_only_accuracy(pipeline):
    from dpl import load_classifier

    with open(os.path.join(pipeline["data"], "split_zhou_ImageFolder.json")) as fh:
        test = json.load(fh)["test"]
    assert len(test) == 9
    clf = load_classifier(pipeline["out"]["train"], epoch=2)
    assert clf.classnames == ["blue", "green frog", "red fox"]
    probs = clf.predict([Image.open(os.path.join(pipeline["data"], p)) for p, _, _ in test])
    assert probs.shape == (9, 3) and probs.sum(1).sub(1).abs().max() < 1e-5
    correct = sum(int(p == label) for p, (_, label, _) in zip(probs.argmax(1).tolist(), test))
    eval_acc = final_accuracy(os.path.join(pipeline["out"]["eval"], "log.txt"))
    assert round(100 * correct / len(test), 1) == eval_acc


def test_tool_agrees_with_api_and_takes_new_classnames(pipeline, tmp_path, capsys):
    from dpl import load_classifier
    from tools import predict

    folder = os.path.join(pipeline["data"], "train", "blue")
    out_json = str(tmp_path / "pred.json")
    run = " ".join(shlex.quote(a) for a in pipeline["train_flags"])  # the train.py flags of the run
    results = predict.main(["--run", run, folder, "--topk", "2", "--json", out_json])
    assert "blue/img_000.png" in capsys.readouterr().out
    with open(out_json) as fh:
        assert json.load(fh) == results
    images = sorted(os.listdir(folder))
    assert [os.path.basename(r["image"]) for r in results] == images
    probs = load_classifier(pipeline["out"]["train"]).predict(
        [Image.open(os.path.join(folder, f)) for f in images])
    for result, row in zip(results, probs):
        top = row.topk(2)
        assert [t["class"] for t in result["topk"]] == [["blue", "green frog", "red fox"][i]
                                                       for i in top.indices.tolist()]
        assert [t["prob"] for t in result["topk"]] == pytest.approx(top.values.tolist(), abs=1e-6)
    names = tmp_path / "names.txt"
    names.write_text("sky\nforest\nsunset\nsea\n")
    renamed = predict.main(["--run", pipeline["out"]["train"], folder, "--classnames", str(names),
                            "--topk", "4"])
    assert {t["class"] for t in renamed[0]["topk"]} == {"sky", "forest", "sunset", "sea"}


def test_train_refuses_an_artifact_searched_on_other_weights(pipeline, tmp_path, capsys):
    other = write_tiny_open_clip(tmp_path / "other", seed=5)
    with pytest.raises(SystemExit) as info:
        run_train(train_args("DPLTrain", "vit_b16", "imagefolder", pipeline["data"], tmp_path / "run",
                             extra=[*model_opts(other, other.bin), "OPTIM.MAX_EPOCH", "1",
                                    "TRAINER.DPL.CONFIG_FILE", pipeline["artifact"]]))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "sha256" in err and "search again" in err and pipeline["artifact"] in err


def test_tool_errors_are_one_line(pipeline, tmp_path, capsys):
    from tools import predict

    with pytest.raises(SystemExit) as info:
        predict.main(["--run", str(tmp_path), str(tmp_path)])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("predict.py: error: no images found")


def test_search_run_folder_is_refused_with_a_clear_message(pipeline):
    from dpl import load_classifier
    from dpl.artifact import ArtifactError

    with pytest.raises(ArtifactError, match="DPLTrain"):
        load_classifier(pipeline["out"]["search"])
    with pytest.raises(ArtifactError, match="does not hold the prompts"):
        load_classifier(pipeline["out"]["search"], classnames=["a", "b"])


# -------------------------------------------------------------------------------------------------
# Issue #23 (2, 4, 5, 6): mistakes around tools/predict.py end in one line, exit 2, no traceback.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def predict_cli(*args):
    """``python tools/predict.py ARGS`` as a user runs it: (exit status, stdout, stderr)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "predict.py"), *map(str, args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_error_line(code, err, start):
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"predict.py: error: {start}"), lines[0]
    return lines[0]


@pytest.fixture
def run_copy(pipeline, tmp_path):
    """A copy of the trained run folder (to damage) and its last prompt checkpoint."""
    run = tmp_path / "run"
    shutil.copytree(pipeline["out"]["train"], run)
    return run, run / "prompt_learner" / "model.pth.tar-2"


def test_truncated_prompt_checkpoint_is_one_line_as_in_eval_only(pipeline, run_copy, tmp_path):
    from dassl.utils.torchtools import load_checkpoint
    from dpl import load_classifier
    from dpl.errors import CorruptCheckpointError

    run, ckpt = run_copy
    ckpt.write_bytes(ckpt.read_bytes()[:-10])  # an interrupted copy: torch raises OSError EINVAL
    image = os.path.join(pipeline["data"], "train", "blue", "img_000.png")
    code, out, err = predict_cli("--run", run, image)
    line = assert_one_error_line(code, err, f'Checkpoint "{ckpt}" is corrupt or truncated (')
    assert "--load-epoch" in line and "copy the run folder again" in line
    with pytest.raises(CorruptCheckpointError) as api:
        load_classifier(str(run))
    with pytest.raises(CorruptCheckpointError) as engine:  # what --eval-only reads the file with
        load_checkpoint(str(ckpt))
    reason = str(engine.value).split(";")[0]  # 'Checkpoint "..." is corrupt or truncated (OSError: ...)'
    assert str(api.value).startswith(reason) and line.startswith(f"predict.py: error: {reason}")


class _RunsCode:
    """Unpickling this runs ``touch <marker>``: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def test_code_running_prompt_checkpoint_is_refused_in_one_line(pipeline, run_copy, tmp_path):
    import torch

    from dpl import load_classifier
    from dpl.errors import UnsafeCheckpointError

    run, ckpt = run_copy
    marker = tmp_path / "pwned"
    state = torch.load(ckpt, weights_only=True)
    torch.save({**state, "extra": _RunsCode(marker)}, ckpt)
    image = os.path.join(pipeline["data"], "train", "blue", "img_000.png")
    code, out, err = predict_cli("--run", run, image)
    line = assert_one_error_line(code, err, f'Checkpoint "{ckpt}" is not a weights-only checkpoint (')
    assert "nothing in it ran" in line and "weights_only` set to `False`" not in err
    assert "DASSL_ALLOW_UNSAFE_LOAD" not in line  # no opt-in for predictions
    with pytest.raises(UnsafeCheckpointError, match="is not a weights-only checkpoint"):
        load_classifier(str(run))
    assert not marker.exists()


@pytest.mark.parametrize("where", ["below a file", "a folder"])
def test_json_path_is_checked_before_predicting(pipeline, tmp_path, where):
    (tmp_path / "notes.txt").write_text("a file\n")
    bad = tmp_path / "notes.txt" / "pred.json" if where == "below a file" else tmp_path
    image = os.path.join(pipeline["data"], "train", "blue", "img_000.png")
    code, out, err = predict_cli("--run", pipeline["out"]["train"], image, "--json", bad)
    line = assert_one_error_line(code, err, f"--json {bad} ")
    assert ("which is a file, not a folder" in line if where == "below a file"
            else f"e.g. {bad / 'predictions.json'}" in line)
    assert out == ""  # refused before loading the run or predicting anything


def test_folder_prediction_skips_hidden_entries_and_says_what_it_read(pipeline, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(os.path.join(pipeline["data"], "train", "blue"), folder)
    images = sorted(os.listdir(folder))
    checkpoints = folder / ".ipynb_checkpoints"
    checkpoints.mkdir()
    shutil.copy(folder / images[0], checkpoints / "img_000-checkpoint.png")
    shutil.copy(folder / images[0], checkpoints / "img_001-checkpoint.png")
    shutil.copy(folder / images[0], folder / "._img_000.png")  # a macOS resource-fork twin
    (folder / "notes.txt").write_text("not an image\n")
    out_json = tmp_path / "pred.json"
    code, out, err = predict_cli("--run", pipeline["out"]["train"], folder, "--json", out_json)
    assert code == 0, err
    with open(out_json) as fh:
        predicted = [os.path.relpath(r["image"], folder) for r in json.load(fh)]
    assert predicted == images  # no copy from the hidden folder, no dotfile
    assert (f"Read {len(images)} images; skipped 3 images in hidden files or folders (._img_000.png, "
            ".ipynb_checkpoints/; training skips them too) and 1 file without an image extension.") in out
