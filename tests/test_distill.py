import copy
import math

import torch
import torch.nn.functional as F

from dpl.distill import ZeroShotTeacher, kd_loss


def test_kd_loss_closed_form():
    """T² · Σ_{b,c} KL terms / (B · C): the authors'/PromptSRC's reduction (mean over batch × classes)."""
    s = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    T = 2.0

    def sm(x):
        e = [math.exp(v / T) for v in x]
        return [v / sum(e) for v in e]

    expected = 0.0
    for srow, trow in zip(s.tolist(), t.tolist()):
        ps, pt = sm(srow), sm(trow)
        expected += sum(a * math.log(a / b) for a, b in zip(pt, ps))
    expected = T * T * expected / 4  # batch 2 × classes 2
    assert abs(kd_loss(s, t, T).item() - expected) < 1e-6
    assert kd_loss(t, t, 1.0).item() < 1e-7


def test_kd_loss_matches_promptsrc_reduction():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    T = 1.5
    reference = F.kl_div(F.log_softmax(student / T, dim=1), F.log_softmax(teacher / T, dim=1),
                         reduction="sum", log_target=True) * T * T / student.numel()
    assert torch.allclose(kd_loss(student, teacher, T), reference, atol=1e-7)


def test_teacher_on_half_weights_takes_fp32_images(clip_model):
    """PREC fp16 + KD: the teacher's towers are half, the batch is fp32 (crashed in conv1)."""
    import open_clip
    from open_clip.model import convert_weights_to_lp

    half = copy.deepcopy(clip_model)
    convert_weights_to_lp(half)  # what load_clip(precision="fp16") does (CPU half works in torch 2.x)
    assert half.visual.conv1.weight.dtype == torch.float16

    def tokenize(texts):
        return open_clip.tokenize(texts, context_length=half.context_length)

    teacher = ZeroShotTeacher(half, ["red circle", "blue square"], ["a photo of a {}."], tokenize)
    images = torch.randn(2, 3, 32, 32)
    logits = teacher(images)
    assert logits.shape == (2, 2) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    full = ZeroShotTeacher(clip_model, ["red circle", "blue square"], ["a photo of a {}."], tokenize)
    assert torch.allclose(logits, full(images), atol=0.05 * full(images).abs().max().item())
