"""ISSUE 16 §2 search options: ALPHA_EVERY, MIN_EPOCHS (with PATIENCE) and opt-in CLASS_SAMPLE."""
import json
import os

import pytest
import torch

from dpl.model import build_supernet_model
from dpl.search import BilevelSearch, sample_classes
from tests.helpers.runs import run_train, tiny_opts, train_args

CLASSES = ["red circle", "blue square", "green cross", "yellow ring", "purple diamond"]


def make_search(clip_model, **kw):
    torch.manual_seed(0)
    model = build_supernet_model(clip_model, CLASSES, [0, 2], [0, 2])
    opt = torch.optim.SGD(model.prompt_parameters(), lr=0.1)
    return model, BilevelSearch(model, opt, lr=0.05, **kw)


def batch(seed, n=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, len(CLASSES), (n,), generator=g)


def test_prompt_only_step_leaves_alpha_and_needs_no_val_batch(clip_model):
    model, search = make_search(clip_model)
    alpha0 = [a.detach().clone() for a in model.arch_parameters()]
    prompts0 = [p.detach().clone() for p in model.prompt_parameters()]
    out = search.step(batch(1), None, update_alpha=False)
    assert set(out) == {"loss", "acc"}
    assert all(torch.equal(a, b) for a, b in zip(alpha0, model.arch_parameters()))
    assert any(not torch.equal(p, q) for p, q in zip(prompts0, model.prompt_parameters()))
    assert "loss_val" in search.step(batch(1), batch(2))
    assert any(not torch.equal(a, b) for a, b in zip(alpha0, model.arch_parameters()))


def test_sample_classes_keeps_the_batch_classes():
    torch.manual_seed(0)
    labels = torch.tensor([7, 2, 7, 40])
    classes = sample_classes(labels, 100, 10)
    assert len(classes) == 10 == len(set(classes.tolist()))
    assert {2, 7, 40} <= set(classes.tolist()) and torch.equal(classes, classes.sort().values)
    assert len(sample_classes(labels, 100, 2)) == 3  # never drops a class of the batch


@pytest.mark.parametrize("mode", ["alternate", "simultaneous"])
def test_class_sample_scores_only_the_sampled_classes(clip_model, mode):
    """With CLASS_SAMPLE the loss is CE over the sample's text features (labels re-indexed)."""
    model, search = make_search(clip_model, class_sample=3, mode=mode)
    widths, targets = [], []
    loss_fn = search.loss_fn

    def recording_loss(logits, target):
        widths.append(logits.shape[1])
        targets.append(target)
        return loss_fn(logits, target)

    search.loss_fn = recording_loss
    search.step(batch(1, 2), batch(2, 1))
    assert widths == [3, 3] and all(int(t.max()) < 3 for t in targets)
    # Off by default: every class is scored.
    model, search = make_search(clip_model, mode=mode)
    widths.clear()
    search.loss_fn = recording_loss
    search.step(batch(1, 2), batch(2, 1))
    assert widths == [len(CLASSES)] * 2


def test_encode_text_of_a_class_subset_equals_those_rows(clip_model):
    model, _ = make_search(clip_model)
    with torch.no_grad():
        assert torch.allclose(model.encode_text(torch.tensor([1, 3])), model.encode_text()[[1, 3]],
                              atol=1e-6)


# -- through train.py ---------------------------------------------------------------------------
def run_search(root, out, clip_path, epochs, opts):
    argv = train_args("DPLSearch", "vit_b16", "dtd", root, out)
    run_train(argv + tiny_opts(clip_path, epochs) + ["TRAINER.DPL.SEARCH.PLOT", "False", *opts])
    with open(os.path.join(out, "prompt_config.json")) as fh:
        return json.load(fh)["provenance"]


@pytest.mark.slow
def test_alpha_every_k_steps_the_alpha_optimizer_only_on_those_steps(data_root, tiny_clip_path, tmp_path,
                                                                    monkeypatch):
    from trainers.dpl_search import CyclingBatches, DPLSearch

    steps, fetched = [], []
    original_fb, original_next = DPLSearch.forward_backward, CyclingBatches.next

    def recording_fb(self, batch):
        before = [a.detach().clone() for a in self.model.arch_parameters()]
        out = original_fb(self, batch)
        moved = any(not torch.equal(a, b) for a, b in zip(before, self.model.arch_parameters()))
        steps.append((self.epoch * self.num_batches + self.batch_idx, moved))
        return out

    monkeypatch.setattr(DPLSearch, "forward_backward", recording_fb)
    monkeypatch.setattr(CyclingBatches, "next", lambda self: fetched.append(1) or original_next(self))
    # 10 train images / batch 4 = 2 steps per epoch; 3 epochs = steps 0..5; k = 4 -> steps 0 and 4.
    run_search(data_root, tmp_path / "s", tiny_clip_path, 3, ["TRAINER.DPL.SEARCH.ALPHA_EVERY", "4"])
    assert steps == [(0, True), (1, False), (2, False), (3, False), (4, True), (5, False)]
    assert len(fetched) == 2  # a val batch is loaded only for an α step


@pytest.mark.slow
def test_min_epochs_holds_off_early_stop(data_root, tiny_clip_path, tmp_path):
    # With a vanishing α learning rate the configuration never changes: PATIENCE 1 alone stops at
    # epoch 2; MIN_EPOCHS 3 makes it run 3 epochs.
    frozen = ["TRAINER.DPL.SEARCH.ALPHA_LR", "1e-12", "TRAINER.DPL.SEARCH.PATIENCE", "1",
              "TRAINER.DPL.SEARCH.MIN_EPOCHS", "0"]
    early = run_search(data_root, tmp_path / "a", tiny_clip_path, 5, frozen)
    assert early["epochs_run"] == 2 and early["early_stopped"]
    held = run_search(data_root, tmp_path / "b", tiny_clip_path, 5,
                      frozen[:-1] + ["3"])
    assert held["epochs_run"] == 3 and held["early_stopped"]


def test_bad_values_are_refused(data_root, tiny_clip_path, tmp_path, capsys):
    import train

    argv = train_args("DPLSearch", "vit_b16", "dtd", data_root, tmp_path / "x") + \
        tiny_opts(tiny_clip_path, 1) + ["TRAINER.DPL.SEARCH.ALPHA_EVERY", "0"]
    with pytest.raises(SystemExit):
        train.main(argv)
    assert "TRAINER.DPL.SEARCH.ALPHA_EVERY must be >= 1, got 0" in capsys.readouterr().err
