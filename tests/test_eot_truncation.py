"""ISSUE 16 §1: every text path runs on max(EOT) + 1 tokens, and that is exact.

For each model a trainer builds (DPL supernet fused / reference, DPL fixed, CoOp, IVLP, MaPLe,
zero-shot CLIP) and the KD teacher: text features, logits and the gradients of every learnable
tensor (prompts, α) equal the untruncated 77-token computation to 1e-5.
"""
import open_clip
import pytest
import torch
import torch.nn.functional as F

from dpl.baselines import build_coop, build_ivlp, build_maple, build_zeroshot
from dpl.distill import ZeroShotTeacher
from dpl.encoders import TextTower
from dpl.model import build_fixed_model, build_supernet_model

NAMES = ["cat", "golden_retriever", "hot air balloon"]
# A class name long enough that its sentence is cut by the tokenizer: EOT at index 76.
LONG_NAME = " ".join(["photograph"] * 80)
TOL = 1e-5

BUILDERS = {
    "dpl_supernet_fused": lambda clip, names: build_supernet_model(
        clip, names, [0, 1, 3], [0, 2], impl="fused"),
    "dpl_supernet_reference": lambda clip, names: build_supernet_model(
        clip, names, [0, 1, 3], [0, 2], impl="reference"),
    "dpl_fixed": lambda clip, names: build_fixed_model(clip, names, [2, 0, 3], [1, 2], init_std=0.5),
    "coop": lambda clip, names: build_coop(clip, names, n_ctx=4),
    "coop_csc_middle": lambda clip, names: build_coop(clip, names, n_ctx=4, csc=True,
                                                      class_token_position="middle"),
    "ivlp": lambda clip, names: build_ivlp(clip, names, n_ctx_text=2, n_ctx_vision=2, depth_text=3,
                                           depth_vision=2),
    "maple": lambda clip, names: build_maple(clip, names, n_ctx=2, depth=2),
    "zeroshot": lambda clip, names: build_zeroshot(clip, names, "a photo of a {}."),
}


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def truncated_and_full(clip_model, name, names):
    """The same model twice: default (truncated) inputs and the 77-token inputs."""
    torch.manual_seed(0)
    cut = BUILDERS[name](clip_model, names)
    with torch.no_grad():  # make prompts and α non-trivial so every path matters
        for p in cut.prompt_parameters() + cut.arch_parameters():
            p.add_(torch.randn_like(p) * 0.5)
    torch.manual_seed(0)
    full = BUILDERS[name](clip_model, names)
    full.load_state_dict(cut.state_dict())
    full.truncate_text = False
    full.set_classnames(names)
    return cut, full


def step(model, images):
    """Text features, logits and the gradients of all learnable tensors of one CE step."""
    params = model.prompt_parameters() + model.arch_parameters()
    text = model.encode_text()
    logits = model(images, text)
    loss = F.cross_entropy(logits, torch.arange(images.shape[0]) % logits.shape[1])
    grads = torch.autograd.grad(loss, params) if params else ()
    return text.detach(), logits.detach(), grads


def assert_close(a, b, what):
    err = (a - b).abs().max().item()
    assert err <= TOL, f"{what}: max |truncated - full| = {err:.2e}"


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_truncated_text_equals_full_context(clip_model, images, name):
    cut, full = truncated_and_full(clip_model, name, NAMES)
    assert full.token_embeddings.shape[1] == 77
    assert cut.token_embeddings.shape[1] == int(cut.eot_index.max()) + 1 < 77
    text_c, logits_c, grads_c = step(cut, images)
    text_f, logits_f, grads_f = step(full, images)
    assert_close(text_c, text_f, "text features")
    assert_close(logits_c, logits_f, "logits")
    assert len(grads_c) == len(grads_f) == len(cut.prompt_parameters() + cut.arch_parameters())
    assert all(g.abs().max() > 0 for g in grads_f[:1])  # gradients really flow
    for i, (gc, gf) in enumerate(zip(grads_c, grads_f)):
        assert_close(gc, gf, f"gradient {i}")
    if cut.arch_parameters():
        assert all(g.abs().max() > 0 for g in grads_c[-2:])  # α gets gradients


@pytest.mark.parametrize("name", ["dpl_supernet_fused", "dpl_fixed", "coop", "maple"])
def test_class_name_reaching_77_tokens_still_works(clip_model, images, name):
    names = ["cat", LONG_NAME]
    cut, full = truncated_and_full(clip_model, name, names)
    assert int(cut.eot_index.max()) == 76 and cut.token_embeddings.shape[1] == 77
    text_c, logits_c, _ = step(cut, images)
    text_f, logits_f, _ = step(full, images)
    assert torch.isfinite(logits_c).all()
    assert_close(text_c, text_f, "text features")
    assert_close(logits_c, logits_f, "logits")


def test_kd_teacher_text_equals_open_clip(clip_model):
    templates = ["a photo of a {}.", "itap of the {}.", "a bad photo of the {} in the wild, again."]

    def tokenize(texts):
        return open_clip.tokenize(texts, context_length=77)

    teacher = ZeroShotTeacher(clip_model, NAMES, templates, tokenize)
    with torch.no_grad():
        want = torch.stack([F.normalize(F.normalize(clip_model.encode_text(
            tokenize([t.format(n.replace("_", " ")) for t in templates])), dim=-1).mean(0), dim=-1)
            for n in NAMES])
    assert_close(teacher.text_features, want, "teacher text features")


def test_encode_ids_runs_on_the_eot_length(clip_model):
    """The frozen tower sees exactly max(EOT) + 1 tokens (measured at block 0's input)."""
    ids = open_clip.tokenize(["a photo of a cat.", "a photo of a hot air balloon."])
    seen = []
    hook = clip_model.transformer.resblocks[0].register_forward_pre_hook(
        lambda mod, args: seen.append(args[0].shape[1]))
    try:
        with torch.no_grad():
            got = TextTower(clip_model).encode_ids(ids)
            want = clip_model.encode_text(ids)
    finally:
        hook.remove()
    assert seen == [int(ids.argmax(-1).max()) + 1, 77]
    assert_close(got, want, "features")
