"""Running train.py in-process with tiny settings (tiny CLIP, miniature datasets, CPU)."""
from __future__ import annotations

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_opts(clip_path: str, epochs: int = 2, shots: int = 2) -> list:
    """KEY VALUE overrides that shrink a paper config to a seconds-long CPU run."""
    return [
        "MODEL.BACKBONE.NAME", "tiny", "MODEL.BACKBONE.PATH", str(clip_path),
        "MODEL.BACKBONE.CONFIG", "openai",  # an OpenAI-format file under a name of our own
        "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
        "DATALOADER.TEST.BATCH_SIZE", "8", "OPTIM.MAX_EPOCH", str(epochs),
        "DATASET.NUM_SHOTS", str(shots), "TRAINER.DPL.SEARCH.VAL_BATCH_SIZE", "4",
        "TRAIN.PRINT_FREQ", "100",
    ]


def train_args(trainer: str, config: str, dataset: str, root, out, seed: int = 1, extra=()) -> list:
    return [
        "--root", str(root), "--seed", str(seed), "--trainer", trainer,
        "--dataset-config-file", os.path.join(REPO, "configs", "datasets", f"{dataset}.yaml"),
        "--config-file", os.path.join(REPO, "configs", "trainers", trainer, f"{config}.yaml"),
        "--output-dir", str(out), *extra,
    ]


def run_train(argv: list) -> None:
    import train

    train.main(argv)


def final_accuracy(log_path) -> float:
    """The last '* accuracy: X%' line of a log."""
    value = None
    with open(log_path) as fh:
        for line in fh:
            if line.startswith("* accuracy:"):
                value = float(line.split(":")[1].strip().rstrip("%"))
    assert value is not None, f"no accuracy line in {log_path}"
    return value


def run_killed_after_first_epoch(monkeypatch, trainer_cls, argv: list) -> None:
    """Run train.py in-process, stopping it (KeyboardInterrupt) right after epoch 1 is saved,
    as a kill would; ``trainer_cls`` is left unpatched afterwards."""
    import pytest

    original = trainer_cls.after_epoch

    def die_after_first_epoch(self):
        original(self)
        if self.epoch == 0:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(trainer_cls, "after_epoch", die_after_first_epoch)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_train(argv)
    finally:
        monkeypatch.setattr(trainer_cls, "after_epoch", original)
