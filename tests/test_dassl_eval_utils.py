"""dassl compatibility: Classification evaluator (lines, dict order, macro-F1 without sklearn,
per-class, confusion matrix), meters, logger file naming, file helpers."""
import os
import re
import sys

import pytest
import torch
from PIL import Image

from dassl.config import get_cfg_default
from dassl.evaluation import build_evaluator
from dassl.utils import (
    AverageMeter, MetricMeter, check_isfile, count_num_param, listdir_nohidden, mkdir_if_missing,
    read_image, read_json, setup_logger, write_json,
)

# y_true [0, 0, 1, 1, 2], y_pred [0, 1, 1, 1, 0]. F1 per class: 2/4, 4/5, 0 -> macro 43.3 %.
Y_TRUE = torch.tensor([0, 0, 1, 1, 2])
LOGITS = torch.eye(3)[torch.tensor([0, 1, 1, 1, 0])]


def _evaluator(tmp_path, **test_kw):
    cfg = get_cfg_default()
    cfg.OUTPUT_DIR = str(tmp_path)
    for k, v in test_kw.items():
        setattr(cfg.TEST, k, v)
    return build_evaluator(cfg, lab2cname={0: "banded", 1: "blotchy", 2: "braided"})


def test_classification_lines_dict_order_and_macro_f1(tmp_path, capsys):
    evaluator = _evaluator(tmp_path)
    assert capsys.readouterr().out == "Loading evaluator: Classification\n"
    evaluator.process(LOGITS[:3], Y_TRUE[:3])  # two batches accumulate
    evaluator.process(LOGITS[3:], Y_TRUE[3:])
    results = evaluator.evaluate()
    assert list(results) == ["accuracy", "error_rate", "macro_f1"]
    assert results["accuracy"] == pytest.approx(60.0) and results["error_rate"] == pytest.approx(40.0)
    assert results["macro_f1"] == pytest.approx(100 * (0.5 + 0.8 + 0.0) / 3)
    assert capsys.readouterr().out.splitlines() == [
        "=> result", "* total: 5", "* correct: 3", "* accuracy: 60.0%", "* error: 40.0%", "* macro_f1: 43.3%",
    ]
    evaluator.reset()
    evaluator.process(LOGITS[:2], Y_TRUE[:2])
    assert evaluator.evaluate()["accuracy"] == pytest.approx(50.0)


def test_thousands_separator(tmp_path, capsys):
    evaluator = _evaluator(tmp_path)
    evaluator.process(torch.eye(2)[torch.zeros(1200, dtype=torch.long)], torch.zeros(1200, dtype=torch.long))
    evaluator.evaluate()
    out = capsys.readouterr().out
    assert "* total: 1,200\n" in out and "* macro_f1: 100.0%\n" in out


def test_per_class_and_confusion_matrix(tmp_path, capsys):
    evaluator = _evaluator(tmp_path, PER_CLASS_RESULT=True, COMPUTE_CMAT=True)
    evaluator.process(LOGITS, Y_TRUE)
    results = evaluator.evaluate()
    assert list(results) == ["accuracy", "error_rate", "macro_f1", "perclass_accuracy"]
    assert results["perclass_accuracy"] == pytest.approx(50.0)
    lines = capsys.readouterr().out.splitlines()
    assert lines[7:12] == [  # after "Loading evaluator" and the 6 result lines
        "=> per-class result",
        "* class: 0 (banded)\ttotal: 2\tcorrect: 1\tacc: 50.0%",
        "* class: 1 (blotchy)\ttotal: 2\tcorrect: 2\tacc: 100.0%",
        "* class: 2 (braided)\ttotal: 1\tcorrect: 0\tacc: 0.0%",
        "* average: 50.0%",
    ]
    cmat_path = os.path.join(str(tmp_path), "cmat.pt")
    assert lines[12] == f"Confusion matrix is saved to {cmat_path}"
    cmat = torch.load(cmat_path, weights_only=True)
    expected = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=cmat.dtype)
    assert torch.equal(cmat, expected)  # rows normalised by the true-class count

    with pytest.raises(AssertionError):
        build_evaluator(evaluator.cfg)  # per-class results need lab2cname


def test_average_and_metric_meters():
    meter = AverageMeter()
    meter.update(torch.tensor(2.0), n=3)
    meter.update(6.0)
    assert (meter.val, meter.sum, meter.count, meter.avg) == (6.0, 12.0, 4, 3.0)
    ema = AverageMeter(ema=True)
    ema.update(10.0)
    assert ema.avg == pytest.approx(1.0)

    metrics = MetricMeter()
    metrics.update({"loss": torch.tensor(1.5), "acc": 50.0})
    metrics.update({"loss": 0.5, "acc": 100.0})
    metrics.update(None)
    assert str(metrics) == "loss 0.5000 (1.0000) acc 100.0000 (75.0000)"
    with pytest.raises(TypeError, match="Input to MetricMeter.update\\(\\) must be a dictionary"):
        metrics.update(0.5)


def test_logger_file_naming_and_stdout_only(tmp_path, capsys):
    original = sys.stdout
    try:
        setup_logger(str(tmp_path))
        print("first run")
        print("to stderr", file=sys.stderr)
        setup_logger(str(tmp_path))  # an existing log.txt is never overwritten
        print("second run")
        setup_logger(str(tmp_path / "custom.log"))
        print("third run")
        sys.stdout.flush()
    finally:
        if sys.stdout is not original:
            sys.stdout.close()
            sys.stdout = original
    assert (tmp_path / "log.txt").read_text() == "first run\n"
    stamped = [f for f in os.listdir(tmp_path) if f.startswith("log.txt-")]
    assert len(stamped) == 1 and re.fullmatch(r"log\.txt-\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d", stamped[0])
    assert (tmp_path / stamped[0]).read_text() == "second run\n"
    assert (tmp_path / "custom.log").read_text() == "third run\n"
    assert capsys.readouterr().out == "first run\nsecond run\nthird run\n"  # the console gets everything
    assert setup_logger(None) is None


def test_write_json_layout(tmp_path):
    path = tmp_path / "sub" / "split.json"
    write_json({"train": [["a/b.jpg", 0, "a"]]}, str(path))
    assert path.read_text() == '{\n    "train": [\n        [\n            "a/b.jpg",\n            0,\n' \
                               '            "a"\n        ]\n    ]\n}'
    assert read_json(str(path)) == {"train": [["a/b.jpg", 0, "a"]]}


def test_file_helpers(tmp_path):
    mkdir_if_missing(str(tmp_path / "d" / "e"))
    mkdir_if_missing(str(tmp_path / "d" / "e"))  # existing: no error
    for name in ("b", "a", ".hidden"):
        (tmp_path / "d" / name).write_text("")
    assert listdir_nohidden(str(tmp_path / "d"), sort=True) == ["a", "b", "e"]
    assert check_isfile(str(tmp_path / "d" / "a"))
    with pytest.warns(UserWarning, match="No file found at"):
        assert not check_isfile(str(tmp_path / "d" / "e"))
    Image.new("L", (3, 2)).save(tmp_path / "g.png")
    assert read_image(str(tmp_path / "g.png")).mode == "RGB"
    assert count_num_param(torch.nn.Linear(3, 2)) == 8
    assert count_num_param(params=[{"params": [torch.zeros(2, 2)]}, torch.zeros(3)]) == 7
