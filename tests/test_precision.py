"""Mixed precision (dpl/precision.py): AMP with one GradScaler per optimizer, bf16 autocast, forward
only under autocast, scaler states checkpointed and restored. CPU tests use CPU autocast (bf16) and
``torch.amp.GradScaler("cpu")``; ``@pytest.mark.cuda`` variants run the same steps on a GPU."""
import copy

import pytest
import torch

from dpl.clip_loader import load_clip
from dpl.model import build_supernet_model
from dpl.search import BilevelSearch
from tests.helpers.runs import run_killed_after_first_epoch, run_train, tiny_opts, train_args

CLASSES = ["red circle", "blue square", "green cross"]
MANUAL = ["TRAINER.DPL.MANUAL.TEXT_LENGTH", "2", "TRAINER.DPL.MANUAL.VISION_LENGTH", "2"]


def make_search(clip_model, mode, precision):
    torch.manual_seed(0)
    model = build_supernet_model(clip_model, CLASSES, [0, 2, 4], [0, 2])
    prompt_opt = torch.optim.SGD(model.prompt_parameters(), lr=0.1, momentum=0.9)
    return model, BilevelSearch(model, prompt_opt, lr=0.05, mode=mode, precision=precision)


def batch(seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    images, labels = torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 3, (4,), generator=g)
    return images.to(device), labels.to(device)


def record_autocast(model, search, device_type):
    """Record whether autocast is on in each forward and in each optimizer step."""
    seen = {"forward": [], "step": []}
    forward = model.forward

    def recording_forward(images, text_features=None):
        seen["forward"].append(torch.is_autocast_enabled(device_type))
        return forward(images, text_features=text_features)

    model.forward = recording_forward
    for opt in (search.alpha_optimizer, search.prompt_optimizer):
        step = opt.step

        def recording_step(*a, _step=step, **k):
            seen["step"].append(torch.is_autocast_enabled(device_type))
            return _step(*a, **k)

        opt.step = recording_step
    return seen


def check_search_step(clip_model, mode, precision, device="cpu"):
    model, search = make_search(clip_model, mode, precision)
    alpha0 = [a.detach().clone() for a in model.arch_parameters()]
    prompts0 = [p.detach().clone() for p in model.prompt_parameters()]
    seen = record_autocast(model, search, torch.device(device).type)
    scaled = []
    for scaler in (search.alpha_scaler, search.prompt_scaler):
        if scaler is not None:
            scale = scaler.scale
            scaler.scale = lambda loss, _scale=scale: scaled.append(loss.dtype) or _scale(loss)
    out = search.step(batch(1, device), batch(2, device))
    assert all(map(lambda v: v == (precision in ("amp", "bf16")), seen["forward"])), seen
    assert seen["step"] == [False, False]  # step (and backward) outside autocast
    assert any(not torch.equal(a, b) for a, b in zip(alpha0, model.arch_parameters()))
    assert any(not torch.equal(p, q) for p, q in zip(prompts0, model.prompt_parameters()))
    assert all(torch.isfinite(a).all() for a in model.arch_parameters())
    assert all(torch.isfinite(torch.tensor(v)) for v in (out["loss"], out["loss_val"]))
    return search, scaled


@pytest.mark.parametrize("mode", ["alternate", "simultaneous"])
def test_amp_search_scales_each_update_and_steps_outside_autocast(clip_model, mode):
    search, scaled = check_search_step(clip_model, mode, "amp")
    assert isinstance(search.alpha_scaler, torch.amp.GradScaler)
    assert search.alpha_scaler is not search.prompt_scaler
    assert len(scaled) == 2  # one scaled loss per update, each through its own scaler
    state = search.scaler_state()
    assert set(state) == {"alpha", "prompts"} and state["alpha"]["scale"] > 1


@pytest.mark.parametrize("mode", ["alternate", "simultaneous"])
def test_bf16_search_autocasts_without_scaler(clip_model, mode):
    search, scaled = check_search_step(clip_model, mode, "bf16")
    assert search.alpha_scaler is None and search.prompt_scaler is None and scaled == []
    assert search.scaler_state() == {}


def test_amp_search_still_stops_on_a_nan_loss(clip_model):
    model, search = make_search(clip_model, "alternate", "amp")
    images, labels = batch(1)
    with pytest.raises(FloatingPointError, match="Loss is infinite or NaN!"):
        search.step((images * float("nan"), labels), batch(2))


def test_amp_search_run_names_epoch_and_batch_of_a_nan_loss(data_root, tiny_clip_path, tmp_path,
                                                             monkeypatch, capsys):
    """PREC amp: NaN images from epoch 2 on stop the run with the epoch and batch named."""
    from trainers.dpl_search import DPLSearch

    parse = DPLSearch.parse_batch_train

    def nan_images_from_epoch_2(self, batch):
        images, labels = parse(self, batch)
        return (images * float("nan") if self.epoch >= 1 else images), labels

    monkeypatch.setattr(DPLSearch, "parse_batch_train", nan_images_from_epoch_2)
    monkeypatch.delenv("DPL_DEBUG", raising=False)
    with pytest.raises(SystemExit):
        run_train(train_args("DPLSearch", "vit_b16", "dtd", data_root, tmp_path / "nan")
                  + tiny_opts(tiny_clip_path) + ["TRAINER.DPL.PREC", "amp"])
    err = capsys.readouterr().err
    assert "Loss is infinite or NaN! at epoch 2/2, batch 1/" in err and "lower OPTIM.LR" in err


def test_search_scaler_states_are_checkpointed_and_restored(data_root, tiny_clip_path, tmp_path,
                                                            monkeypatch):
    """PREC amp: the scale of both GradScalers after epoch 1 (set to distinct values here) is in
    the checkpoint and is what the resumed run starts epoch 2 with (not the default 65536)."""
    from trainers.dpl_search import DPLSearch

    after_epoch, before_epoch = DPLSearch.after_epoch, DPLSearch.before_epoch
    restored = []

    def odd_scales_then_save(self):
        if self.epoch == 0:
            self.search.alpha_scaler.update(new_scale=1234.0)
            self.search.prompt_scaler.update(new_scale=4321.0)
        after_epoch(self)

    def record(self):
        before_epoch(self)
        restored.append((self.epoch, self.search.alpha_scaler.get_scale(),
                         self.search.prompt_scaler.get_scale()))

    monkeypatch.setattr(DPLSearch, "after_epoch", odd_scales_then_save)
    monkeypatch.setattr(DPLSearch, "before_epoch", record)
    out = tmp_path / "amp"
    argv = (train_args("DPLSearch", "vit_b16", "dtd", data_root, out)
            + tiny_opts(tiny_clip_path) + ["TRAINER.DPL.PREC", "amp"])
    run_killed_after_first_epoch(monkeypatch, DPLSearch, argv)
    ckpt = torch.load(out / "alpha" / "model.pth.tar-1", weights_only=True)
    assert ckpt["trainer_state"]["grad_scalers"]["alpha"]["scale"] == 1234.0
    run_train(argv)
    assert restored[-1] == (1, 1234.0, 4321.0)
    assert (out / "prompt_config.json").is_file()


def test_train_scaler_state_is_restored_and_bf16_autocasts(data_root, tiny_clip_path, tmp_path,
                                                           monkeypatch):
    from dpl.model import DPLCLIP
    from trainers.dpl_train import DPLTrain

    after_epoch, before_epoch = DPLTrain.after_epoch, DPLTrain.before_epoch
    restored = []

    def odd_scale_then_save(self):
        if self.epoch == 0:
            self.scaler.update(new_scale=777.0)
        after_epoch(self)

    def record(self):
        before_epoch(self)
        restored.append((self.epoch, self.scaler.get_scale()))

    monkeypatch.setattr(DPLTrain, "after_epoch", odd_scale_then_save)
    monkeypatch.setattr(DPLTrain, "before_epoch", record)
    out = tmp_path / "amp"
    argv = (train_args("DPLTrain", "vit_b16", "dtd", data_root, out)
            + tiny_opts(tiny_clip_path) + MANUAL + ["TRAINER.DPL.PREC", "amp"])
    run_killed_after_first_epoch(monkeypatch, DPLTrain, argv)
    run_train(argv)
    assert restored[-1] == (1, 777.0)
    monkeypatch.setattr(DPLTrain, "after_epoch", after_epoch)
    monkeypatch.setattr(DPLTrain, "before_epoch", before_epoch)

    dtypes = []
    forward = DPLCLIP.forward

    def recording_forward(self, images, text_features=None):
        logits = forward(self, images, text_features=text_features)
        if torch.is_grad_enabled():  # a training step, not evaluation
            dtypes.append(logits.dtype)
        return logits

    monkeypatch.setattr(DPLCLIP, "forward", recording_forward)
    run_train(train_args("DPLTrain", "vit_b16", "dtd", data_root, tmp_path / "bf16")
              + tiny_opts(tiny_clip_path, epochs=1) + MANUAL + ["TRAINER.DPL.PREC", "bf16"])
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert "* accuracy:" in (tmp_path / "bf16" / "log.txt").read_text()


# -------------------------------------------------------------------------------------------------
# The same on a GPU (skipped without CUDA; scripts/gpu_check.sh runs `pytest -m cuda`)


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16", "amp", "bf16"])
@pytest.mark.parametrize("mode", ["alternate", "simultaneous"])
def test_cuda_search_step(tiny_clip_path, precision, mode):
    clip_model = load_clip("tiny", tiny_clip_path, precision=precision, device="cuda", config="openai")
    search, scaled = check_search_step(clip_model, mode, precision, device="cuda")
    assert len(scaled) == (2 if precision == "amp" else 0)


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16", "amp", "bf16"])
def test_cuda_search_and_train_runs(data_root, tiny_clip_path, tmp_path, precision):
    """A DPLSearch epoch, then DPLTrain with KD (the fp16 teacher) on its artifact, on the GPU."""
    search_out = tmp_path / "search"
    run_train(train_args("DPLSearch", "vit_b16", "dtd", data_root, search_out)
              + tiny_opts(tiny_clip_path, epochs=1) + ["TRAINER.DPL.PREC", precision])
    train_out = tmp_path / "train"
    run_train(train_args("DPLTrain", "vit_b16_kd", "dtd", data_root, train_out)
              + tiny_opts(tiny_clip_path, epochs=1)
              + ["TRAINER.DPL.PREC", precision,
                 "TRAINER.DPL.CONFIG_FILE", str(search_out / "prompt_config.json")])
    for out in (search_out, train_out):
        log = (out / "log.txt").read_text()
        assert "* accuracy:" in log and " nan " not in log


@pytest.mark.cuda
def test_cuda_fp16_teacher(clip_model):
    import open_clip

    from dpl.distill import ZeroShotTeacher
    from open_clip.model import convert_weights_to_lp

    half = copy.deepcopy(clip_model).cuda()
    convert_weights_to_lp(half)

    def tokenize(texts):
        return open_clip.tokenize(texts, context_length=half.context_length)

    teacher = ZeroShotTeacher(half, CLASSES, ["a photo of a {}."], tokenize)
    logits = teacher(torch.randn(2, 3, 32, 32, device="cuda"))
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
