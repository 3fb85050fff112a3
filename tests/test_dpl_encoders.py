"""Prompted CLIP encoders with a fixed configuration (docs/METHOD.md, "The prompted block"): exactness and prompt semantics."""
import copy

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, convert_weights_to_lp

from dpl.attention import prompted_block
from dpl.model import build_fixed_model, model_dims
from dpl.text_inputs import tokenize

CLASSNAMES = ["golden_retriever", "cat", "hot air balloon"]


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _causal(n):
    return torch.full((n, n), float("-inf")).triu(1)


def test_all_zero_configuration_is_open_clip(clip_model, images):
    dims = model_dims(clip_model)
    model = build_fixed_model(clip_model, CLASSNAMES, [0] * dims["text"]["num_blocks"],
                              [0] * dims["vision"]["num_blocks"])
    assert model.prompt_parameters() == []
    tokens = tokenize([f"a photo of a {c.replace('_', ' ')}." for c in CLASSNAMES], 77)
    with torch.no_grad():
        want_text = clip_model.encode_text(tokens)
        want_image = clip_model.encode_image(images)
        raw_text = model.text_encoder(model.token_embeddings, model.eot_index,
                                      *model.prompt_learner.text.encoder_inputs())
        raw_image = model.image_encoder(images, *model.prompt_learner.vision.encoder_inputs())
        # open_clip runs 77 tokens, the model max(EOT) + 1: equal up to float rounding.
        assert (raw_text - want_text).abs().max() <= 1e-5
        assert (raw_image - want_image).abs().max() <= 1e-6
        assert (model.encode_text() - F.normalize(want_text, dim=-1)).abs().max() <= 1e-5
        assert (model.encode_image(images) - F.normalize(want_image, dim=-1)).abs().max() <= 1e-6


def test_zero_length_prompt_runs_the_frozen_block_exactly(clip_model):
    block = clip_model.transformer.resblocks[0]
    x = torch.randn(2, 77, 64)
    with torch.no_grad():
        want = block(x, attn_mask=clip_model.attn_mask)
        for empty in (None, torch.zeros(0, 64)):
            assert torch.equal(prompted_block(block, x, empty, clip_model.attn_mask, 1), want)


def test_image_kv_prompts_equal_in_sequence_insertion(clip_model, images):
    """VPT-deep style: append the prompts at a block, run the plain block, drop their outputs."""
    model = build_fixed_model(clip_model, CLASSNAMES, [0, 0, 0], [3, 2], init_std=1.0)
    enc, prompts = model.image_encoder, model.prompt_learner.vision.per_block()
    with torch.no_grad():
        x = enc.embed(images)
        n = x.shape[1]
        for block, p in zip(clip_model.visual.transformer.resblocks, prompts):
            seq = torch.cat([x, p.unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
            x = block(seq)[:, :n]
        want = clip_model.visual.ln_post(x[:, 0]) @ clip_model.visual.proj
        got = enc(images, prompts)
    assert (got - want).abs().max() <= 1e-6
    # and the prompts do change the features
    assert (got - clip_model.encode_image(images)).abs().max() > 1e-3


def test_text_prompts_equal_in_sequence_insertion_with_dpl_mask(clip_model):
    """Key/value prompts == prompts inserted after SOS where real tokens see all prompts + causal."""
    block = clip_model.transformer.resblocks[1]
    n, c = 77, 4
    x, p = torch.randn(2, n, 64), torch.randn(c, 64)
    causal = _causal(n)
    full = torch.zeros(n + c, n + c)                # order: SOS, P_1..P_c, x_1..x_76
    real = [0] + list(range(c + 1, n + c))
    full[torch.tensor(real)[:, None], torch.tensor(real)[None, :]] = causal
    with torch.no_grad():
        seq = torch.cat([x[:, :1], p.unsqueeze(0).expand(2, -1, -1), x[:, 1:]], dim=1)
        want = block(seq, attn_mask=full)[:, real]
        got = prompted_block(block, x, p, causal, prompt_pos=1)
    assert (got - want).abs().max() <= 1e-6


def test_text_sos_sees_prompts_and_real_tokens_stay_causal(clip_model):
    block = clip_model.transformer.resblocks[0]
    n, j = 77, 9
    x, p = torch.randn(2, n, 64), torch.randn(3, 64)
    mask = clip_model.attn_mask
    with torch.no_grad():
        y = prompted_block(block, x, p, mask, 1)
        x2 = x.clone()
        x2[:, j] += 1.0                              # change a later real token
        y2 = prompted_block(block, x2, p, mask, 1)
        assert (y2[:, :j] - y[:, :j]).abs().max() == 0
        assert (y2[:, j:] - y[:, j:]).abs().max() > 1e-3
        y3 = prompted_block(block, x, p + torch.randn_like(p), mask, 1)  # change the prompt
        assert (y3[:, 0] - y[:, 0]).abs().max() > 1e-3                   # SOS sees prompts
        plain = block(x, attn_mask=mask)
        assert (y[:, 0] - plain[:, 0]).abs().max() > 1e-3


def test_prompted_encoder_text_prefix_is_causal_end_to_end(clip_model):
    """Changing a class token after the EOT read-out never changes that class's feature."""
    model = build_fixed_model(clip_model, CLASSNAMES, [2, 1, 3], [0, 0], init_std=1.0)
    model.truncate_text = False  # all 77 tokens, so there are tokens after the last EOT
    model.set_classnames(CLASSNAMES)
    enc, prompts = model.text_encoder, model.prompt_learner.text.per_block()
    emb, eot = model.token_embeddings.clone(), model.eot_index
    with torch.no_grad():
        before = enc(emb, eot, prompts)
        emb[:, int(eot.max()) + 1] += 5.0
        after = enc(emb, eot, prompts)
    assert (after - before).abs().max() <= 1e-6


def test_gradients_reach_only_prompts_and_clip_is_unchanged(clip_model, images):
    model = build_fixed_model(clip_model, CLASSNAMES, [2, 0, 1], [1, 3])
    clip_before = {k: v.clone() for k, v in clip_model.state_dict().items()}
    prompts_before = [p.detach().clone() for p in model.prompt_parameters()]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in model.prompt_parameters()}
    assert len(trainable) == 4
    opt = torch.optim.SGD(trainable, lr=1.0)
    model.train()
    loss = F.cross_entropy(model(images), torch.tensor([0, 1, 2]))
    loss.backward()
    for p in model.prompt_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip_model.parameters())
    opt.step()
    for k, v in clip_model.state_dict().items():
        assert torch.equal(v, clip_before[k]), k
    assert all(not torch.equal(a, b) for a, b in zip(model.prompt_parameters(), prompts_before))


def test_vit_b16_sized_model_one_forward():
    """Depth and widths come from the model: a random ViT-B/16-sized CLIP (no weights on disk)."""
    torch.manual_seed(0)
    clip_b16 = CLIP(512, CLIPVisionCfg(layers=12, width=768, patch_size=16, image_size=224),
                    CLIPTextCfg(width=512, heads=8, layers=12), quick_gelu=True).eval()
    for p in clip_b16.parameters():
        p.requires_grad_(False)
    dims = model_dims(clip_b16)
    assert dims == {"text": {"num_blocks": 12, "width": 512},
                    "vision": {"num_blocks": 12, "width": 768}}
    model = build_fixed_model(clip_b16, ["dog", "cat"], [6, 0, 4] + [2] * 9, [0, 2, 6] + [1] * 9)
    shapes = {k: tuple(v.shape) for k, v in model.prompt_learner.state_dict().items()}
    assert shapes["text.prompts.block0"] == (6, 512) and shapes["vision.prompts.block2"] == (6, 768)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 224, 224))
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()
    assert model.token_embeddings.shape == (2, 8, 512)  # "a photo of a dog." + SOS/EOT, not 77


def test_open_clip_tokenizer_matches_the_readout(clip_model):
    model = build_fixed_model(clip_model, ["cat"], [0, 0, 0], [0, 0])
    ids = open_clip.tokenize(["a photo of a cat."])
    assert int(model.eot_index[0]) == int(ids.argmax(-1)[0]) == 7


def test_low_precision_clip_weights(clip_model, images):
    """fp16 CLIP weights (as `PREC fp16` gives on CUDA): prompts stay fp32 parameters and are cast
    to the weights' dtype; the all-zero configuration still matches open_clip in that dtype."""
    clip16 = copy.deepcopy(clip_model)
    convert_weights_to_lp(clip16, dtype=torch.float16)
    zero = build_fixed_model(clip16, CLASSNAMES, [0, 0, 0], [0, 0])
    model = build_fixed_model(clip16, CLASSNAMES, [1, 1, 1], [2, 2])
    assert all(p.dtype == torch.float32 for p in model.prompt_parameters())
    with torch.no_grad():
        want = clip16.encode_image(images.half())
        assert want.dtype == torch.float16
        raw = zero.image_encoder(images, *zero.prompt_learner.vision.encoder_inputs())
        assert torch.equal(raw, want)
        logits = model(images)
    assert logits.dtype == torch.float16 and torch.isfinite(logits).all()
