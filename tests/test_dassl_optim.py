"""dassl compatibility: optimizers, LR schedules per epoch (§1.8 check values), scheduler state that
loads with weights_only and resumes exactly, compute_accuracy."""
import io

import pytest
import torch
import torch.nn as nn

from dassl.config import get_cfg_default
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer


def _optim_cfg(**kw):
    o = get_cfg_default().OPTIM
    o.NAME, o.LR_SCHEDULER = "sgd", "cosine"
    o.WARMUP_EPOCH, o.WARMUP_TYPE, o.WARMUP_CONS_LR = 1, "constant", 1e-5
    for k, v in kw.items():
        setattr(o, k, v)
    return o


def _build(optim_cfg):
    optim = build_optimizer([nn.Parameter(torch.zeros(2))], optim_cfg)
    return optim, build_lr_scheduler(optim, optim_cfg)


def _epoch_lrs(optim_cfg, epochs=None):
    """LR in effect during each epoch when the scheduler steps once per epoch (as the trainers do)."""
    optim, sched = _build(optim_cfg)
    lrs = []
    for _ in range(epochs or optim_cfg.MAX_EPOCH):
        lrs.append(optim.param_groups[0]["lr"])
        optim.step()
        sched.step()
    return lrs, optim.param_groups[0]["lr"]


COCOOP = [1e-05, 0.002, 0.00195106, 0.00180902, 0.00158779, 0.00130902, 0.001, 0.000690983,
          0.000412215, 0.000190983]


@pytest.mark.parametrize("kw, expected", [
    (dict(LR=0.002, MAX_EPOCH=10), COCOOP),                                             # CoCoOp
    (dict(LR=0.0035, MAX_EPOCH=5), [1e-05, 0.0035, 0.00316578, 0.00229078, 0.00120922]),  # MaPLe / IVLP
    (dict(LR=0.002, MAX_EPOCH=5, WARMUP_EPOCH=2), [1e-05, 1e-05, 0.002, 0.00180902, 0.00130902]),
    (dict(LR=0.002, MAX_EPOCH=10, WARMUP_TYPE="linear", WARMUP_EPOCH=3),
     [1e-05, 0.000666667, 0.00133333, 0.002, 0.00195106, 0.00180902]),
    (dict(LR=0.002, MAX_EPOCH=10, WARMUP_RECOUNT=False),
     [1e-05, 0.002, 0.0018544, 0.00162762, 0.00134185, 0.00102509, 0.000708317, 0.000422555,
      0.000195774, 5.01713e-05]),
])
def test_lr_per_epoch_matches_dassl_tables(kw, expected):
    lrs, _ = _epoch_lrs(_optim_cfg(**kw))
    assert lrs[:len(expected)] == pytest.approx(expected, rel=1e-5)


def test_cocoop_lr_after_final_step():
    _, final = _epoch_lrs(_optim_cfg(LR=0.002, MAX_EPOCH=10))
    assert final == pytest.approx(4.89435e-05, rel=1e-5)


def test_step_schedules_without_warmup():
    lrs, _ = _epoch_lrs(_optim_cfg(LR=1.0, WARMUP_EPOCH=0, LR_SCHEDULER="single_step", STEPSIZE=(2,),
                                   GAMMA=0.5, MAX_EPOCH=5))
    assert lrs == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25])
    lrs, _ = _epoch_lrs(_optim_cfg(LR=1.0, WARMUP_EPOCH=0, LR_SCHEDULER="multi_step", STEPSIZE=(1, 3),
                                   GAMMA=0.1, MAX_EPOCH=4))
    assert lrs == pytest.approx([1.0, 0.1, 0.1, 0.01])
    lrs, _ = _epoch_lrs(_optim_cfg(LR=1.0, WARMUP_EPOCH=0, LR_SCHEDULER="single_step", STEPSIZE=(-1,),
                                   MAX_EPOCH=3), epochs=4)
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 0.1])  # step size <= 0 means MAX_EPOCH


def test_scheduler_and_optimizer_errors():
    with pytest.raises(ValueError, match=r"scheduler must be one of \['single_step', 'multi_step', "
                                         r"'cosine'\], but got poly"):
        _build(_optim_cfg(LR_SCHEDULER="poly"))
    with pytest.raises(TypeError):
        _build(_optim_cfg(LR_SCHEDULER="multi_step", STEPSIZE=3, WARMUP_EPOCH=0))
    with pytest.raises(ValueError, match="optim must be one of"):
        _build(_optim_cfg(NAME="lion"))
    with pytest.raises(ValueError, match="WARMUP_TYPE"):
        _build(_optim_cfg(WARMUP_TYPE="exp"))


def test_optimizers_by_name_and_sgd_defaults():
    for name, cls in [("adam", torch.optim.Adam), ("amsgrad", torch.optim.Adam), ("sgd", torch.optim.SGD),
                      ("rmsprop", torch.optim.RMSprop), ("radam", torch.optim.RAdam),
                      ("adamw", torch.optim.AdamW)]:
        assert type(_build(_optim_cfg(NAME=name))[0]) is cls
    group = _build(_optim_cfg(NAME="sgd", LR=0.002))[0].param_groups[0]
    assert (group["momentum"], group["weight_decay"], group["dampening"], group["nesterov"]) == (
        0.9, 5e-4, 0, False)
    assert _build(_optim_cfg(NAME="amsgrad"))[0].param_groups[0]["amsgrad"] is True


def test_staged_lr_groups_and_frozen_params_kept():
    model = nn.Sequential()
    model.add_module("backbone", nn.Linear(2, 2))
    model.add_module("head", nn.Linear(2, 2))
    model.backbone.weight.requires_grad_(False)
    optim = build_optimizer(model, _optim_cfg(LR=0.1, STAGED_LR=True, NEW_LAYERS="head", BASE_LR_MULT=0.1))
    base, new = optim.param_groups
    assert base["lr"] == pytest.approx(0.01) and new["lr"] == pytest.approx(0.1)
    assert len(base["params"]) == 2 and len(new["params"]) == 2  # frozen weight not filtered out
    with pytest.raises(TypeError, match="nn.Module"):
        build_optimizer([nn.Parameter(torch.zeros(1))], _optim_cfg(STAGED_LR=True))


def test_warmup_state_is_weights_only_safe_and_resumes_exactly():
    cfg = _optim_cfg(LR=0.002, MAX_EPOCH=10)
    optim, sched = _build(cfg)
    for _ in range(4):
        optim.step()
        sched.step()
    buf = io.BytesIO()
    torch.save({"optimizer": optim.state_dict(), "scheduler": sched.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)  # no pickled scheduler object inside
    assert isinstance(state["scheduler"]["successor"], dict)

    optim2, sched2 = _build(cfg)  # fresh objects, as after a restart
    optim2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    resumed = []
    for _ in range(6):
        resumed.append(optim2.param_groups[0]["lr"])
        optim2.step()
        sched2.step()
    uninterrupted, _ = _epoch_lrs(cfg)
    assert resumed == uninterrupted[4:]


def test_compute_accuracy_top1_topk_and_tuple_output():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5], [0.5, 0.4, 0.1]])
    target = torch.tensor([1, 1, 0, 2])
    top1, top2, top3 = compute_accuracy(logits, target, topk=(1, 2, 3))
    assert top1.shape == (1,) and top1.item() == 25.0
    assert top2.item() == 50.0 and top3.item() == 100.0
    assert compute_accuracy((logits, None), target)[0].item() == 25.0
