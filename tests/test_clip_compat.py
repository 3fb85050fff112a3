"""The OpenAI-`clip` compatibility package: same ids, same numbers, OpenAI's layout, no network."""
import socket
import types
import urllib.request

import open_clip
import pytest
import torch
from open_clip.model import CLIP as OpenClipCLIP
from open_clip.model import CLIPTextCfg, CLIPVisionCfg

from clip import clip
from clip.model import CLIP, build_model, convert_weights
from clip.simple_tokenizer import SimpleTokenizer
from dpl.clip_loader import CheckpointError, load_clip, save_openai_checkpoint

CLASS_NAMES = ["Crème brûlée", "Jack-o'-lantern", "São Paulo", "7-Eleven", "ñandú",
               "Bird's-eye chili (red)", "yorkshire_terrier", "Ødegaard & Co.", "北京烤鸭", "café au lait"]
TOL = 1e-5

# The CoOp-style loader calls torch.jit.load first, as OpenAI's files are TorchScript archives.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def reference(tiny_clip_path):
    """open_clip's own (batch-first) model on the tiny checkpoint, fp32."""
    return load_clip("tiny", tiny_clip_path, config="openai")


@pytest.fixture(scope="module")
def adapted(tiny_clip_path):
    """The adapter built OpenAI's way: build_model(torch.load(file)), then .float()."""
    return clip.build_model(torch.load(tiny_clip_path, map_location="cpu")).float().eval()


def _images(n=3, size=32, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --- tokenizer ------------------------------------------------------------------------------

def test_tokenize_and_simple_tokenizer_give_open_clip_ids():
    prompts = [f"a photo of a {name}." for name in CLASS_NAMES] + CLASS_NAMES
    ids = clip.tokenize(prompts)
    assert ids.dtype == torch.long and ids.shape == (len(prompts), 77)
    assert torch.equal(ids, open_clip.tokenize(prompts))

    ours, theirs = SimpleTokenizer(), open_clip.tokenizer.SimpleTokenizer()
    for name in CLASS_NAMES:
        assert ours.encode(name) == theirs.encode(name), name
        assert ours.decode(ours.encode(name)) == theirs.decode(theirs.encode(name))
    # OpenAI's spellings of the special tokens, with open_clip's ids.
    assert ours.encoder["<|startoftext|>"] == theirs.sot_token_id == 49406
    assert ours.encoder["<|endoftext|>"] == theirs.eot_token_id == 49407
    assert ours.decoder[49407] == "<|endoftext|>" and len(ours.encoder) == len(theirs.encoder)
    assert ours.bpe("lantern") == theirs.bpe("lantern") and ours.byte_encoder == theirs.byte_encoder


def test_special_token_inside_text_encodes_like_openai():
    assert SimpleTokenizer().encode("a <|endoftext|> b")[1] == 49407


def test_too_long_text_is_an_error_unless_truncated():
    text = "word " * 100
    with pytest.raises(RuntimeError, match="truncate=True"):
        clip.tokenize(text)
    ids = clip.tokenize([text, "short"], truncate=True)
    assert ids[0, -1].item() == 49407 and ids[0, 0].item() == 49406
    assert torch.equal(ids[1], open_clip.tokenize(["short"])[0])


# --- sequence-first contract ------------------------------------------------------------------

def test_text_transformer_is_sequence_first_and_matches_open_clip(adapted, reference):
    width = reference.transformer.width
    x = torch.randn(3, reference.context_length, width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = adapted.transformer(x.permute(1, 0, 2))  # (tokens, batch, width)
        theirs = reference.transformer(x, attn_mask=reference.attn_mask)  # (batch, tokens, width)
        assert ours.shape == (reference.context_length, 3, width)
        assert torch.allclose(ours.permute(1, 0, 2), theirs, atol=TOL)

        # each block alone is sequence-first and carries the causal mask, like OpenAI's
        block, ref_block = adapted.transformer.resblocks[0], reference.transformer.resblocks[0]
        assert torch.allclose(block(x.permute(1, 0, 2)).permute(1, 0, 2),
                              ref_block(x, attn_mask=reference.attn_mask), atol=TOL)
        # resblocks is an nn.Sequential as in OpenAI's model
        assert torch.allclose(adapted.transformer.resblocks(x.permute(1, 0, 2)), ours, atol=TOL)

        # an explicit mask replaces the built-in causal one
        no_mask = torch.zeros(reference.context_length, reference.context_length)
        unmasked = adapted.transformer(x.permute(1, 0, 2), attn_mask=no_mask)
        assert torch.allclose(unmasked.permute(1, 0, 2), reference.transformer(x), atol=TOL)
        assert not torch.allclose(unmasked, ours, atol=1e-3)


def test_visual_transformer_is_sequence_first_and_matches_open_clip(adapted, reference):
    visual, ref_visual = adapted.visual, reference.visual
    n_tokens, width = ref_visual.positional_embedding.shape
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for extra in (0, 2):  # 2 = VPT-style prompt tokens appended to the sequence
            x = torch.randn(4, n_tokens + extra, width, generator=g)
            ours = visual.transformer(x.permute(1, 0, 2))
            assert ours.shape == (n_tokens + extra, 4, width)
            assert torch.allclose(ours.permute(1, 0, 2), ref_visual.transformer(x), atol=TOL)


def test_layout_mixups_are_refused(adapted, reference):
    width, ctx = reference.transformer.width, reference.context_length
    with pytest.raises(ValueError, match=r"permute\(1, 0, 2\)"):
        adapted.transformer(torch.randn(5, ctx, width))  # batch-first text
    with pytest.raises(ValueError, match=f"expects {ctx} tokens"):
        adapted.transformer(torch.randn(20, 5, width))  # wrong number of tokens
    with pytest.raises(ValueError, match="batch-first"):
        adapted.transformer.resblocks[1](torch.randn(5, ctx, width))
    n_tokens, vwidth = reference.visual.positional_embedding.shape
    with pytest.raises(ValueError, match="batch-first"):
        adapted.visual.transformer(torch.randn(4, n_tokens, vwidth))
    with pytest.raises(ValueError, match=f"{vwidth}"):
        adapted.visual.transformer(torch.randn(n_tokens, 4, width))  # text width into the ViT


def test_gradients_flow_through_the_sequence_first_modules(adapted, reference):
    prompt = torch.zeros(reference.context_length, 2, reference.transformer.width, requires_grad=True)
    adapted.transformer(prompt).sum().backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0


# --- the whole model --------------------------------------------------------------------------

def test_encoders_and_logits_equal_open_clip(adapted, reference):
    text = clip.tokenize([f"a photo of a {n}." for n in CLASS_NAMES])
    images = _images()
    with torch.no_grad():
        assert torch.allclose(adapted.encode_text(text), reference.encode_text(text), atol=TOL)
        assert torch.allclose(adapted.encode_image(images), reference.encode_image(images), atol=TOL)
        per_image, per_text = adapted(images, text)
        ref_image, ref_text = reference.get_logits(images, text)
    assert per_image.shape == (3, len(CLASS_NAMES))
    assert torch.allclose(per_image, ref_image, atol=TOL)
    assert torch.allclose(per_text, ref_text, atol=TOL)


def test_openai_attributes_come_from_the_weights(adapted, reference, tiny_clip_path):
    assert isinstance(adapted, CLIP) and adapted.dtype == torch.float32
    assert adapted.visual.input_resolution == reference.visual.image_size[0]
    assert adapted.visual.output_dim == reference.text_projection.shape[1]
    assert adapted.transformer.width == reference.transformer.width
    assert adapted.transformer.layers == len(reference.transformer.resblocks)
    for name in ("conv1", "class_embedding", "positional_embedding", "ln_pre", "ln_post", "proj"):
        assert hasattr(adapted.visual, name), name
    # OpenAI's state-dict keys: an adapter model round-trips through build_model
    state = torch.load(tiny_clip_path, map_location="cpu")
    assert set(adapted.state_dict()) == set(state)
    rebuilt = build_model(adapted.state_dict()).float()
    for key, value in rebuilt.state_dict().items():
        assert torch.equal(value, adapted.state_dict()[key]), key


def test_build_model_keeps_openai_fp16_weights_and_convert_weights_casts(tiny_clip_path):
    state = torch.load(tiny_clip_path, map_location="cpu")
    model = build_model(state)
    assert model.dtype == torch.float16 and not model.training
    assert model.token_embedding.weight.dtype == torch.float32  # embeddings stay fp32, as OpenAI's
    assert set(state) == set(torch.load(tiny_clip_path, map_location="cpu"))  # input untouched
    model.float()
    convert_weights(model)
    assert model.transformer.resblocks[0].attn.in_proj_weight.dtype == torch.float16
    assert model.text_projection.dtype == model.visual.proj.dtype == torch.float16
    assert model.ln_final.weight.dtype == torch.float32


def test_build_model_errors_are_clear(tiny_clip_path):
    with pytest.raises(CheckpointError, match="OpenAI-format"):
        build_model({"token_embedding.weight": torch.zeros(3, 4)})
    design_details = {"trainer": "MaPLe", "vision_depth": 0, "language_depth": 0}
    with pytest.raises(TypeError, match="modified CLIP model file"):  # MaPLe's fork calls this
        clip.build_model(torch.load(tiny_clip_path, map_location="cpu"), design_details)


def test_resnet_tower_matches_open_clip(tmp_path):
    torch.manual_seed(0)
    vision = CLIPVisionCfg(layers=(1, 1, 1, 1), width=8, image_size=64)  # 4 heads of 64 in the pool
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1)
    save_openai_checkpoint(OpenClipCLIP(32, vision, text, quick_gelu=True), tmp_path / "rn.pt")
    reference = load_clip("tiny-rn", str(tmp_path / "rn.pt"), config="openai")
    model = build_model(torch.load(tmp_path / "rn.pt", map_location="cpu")).float().eval()
    assert model.visual.input_resolution == 64
    images = _images(2, 64)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(images), reference.encode_image(images), atol=TOL)
        # OpenAI's ResNet casts its input to the weights' dtype itself
        assert model.visual.half()(images).dtype == torch.float16


# --- loading without a network ----------------------------------------------------------------

@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a URL or a socket fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("clip tried to use the network")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    for var in clip.CHECKPOINT_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_download_never_downloads_and_names_the_expected_path(no_network, tmp_path):
    no_network.setenv("CLIP_CACHE_DIR", str(tmp_path))
    url = clip._MODELS["ViT-B/16"]
    with pytest.raises(CheckpointError, match="not found") as err:
        clip._download(url)
    assert str(tmp_path / "ViT-B-16.pt") in str(err.value) and "DPL_CLIP_CHECKPOINT" in str(err.value)
    with pytest.raises(CheckpointError, match=str(tmp_path / "elsewhere" / "ViT-B-16.pt")):
        clip._download(url, root=str(tmp_path / "elsewhere"))

    (tmp_path / "ViT-B-16.pt").write_bytes(b"x")
    assert clip._download(url) == str(tmp_path / "ViT-B-16.pt")


def test_download_honours_the_checkpoint_override(no_network, tmp_path, tiny_clip_path):
    no_network.setenv("CLIP_CACHE_DIR", str(tmp_path))
    for var in clip.CHECKPOINT_ENV_VARS:
        no_network.setenv(var, tiny_clip_path)
        assert clip._download(clip._MODELS["RN50"]) == tiny_clip_path
        no_network.setenv(var, str(tmp_path / "missing.pt"))
        with pytest.raises(CheckpointError, match=rf"missing\.pt \(from \${var}\)"):
            clip._download(clip._MODELS["RN50"])
        no_network.delenv(var)
    no_network.setenv("CLIP_CHECKPOINT", str(tmp_path / "other.pt"))
    no_network.setenv("DPL_CLIP_CHECKPOINT", tiny_clip_path)  # the DPL_ name wins
    assert clip._download(clip._MODELS["RN50"]) == tiny_clip_path


def test_load_returns_model_and_preprocess(no_network, tmp_path, tiny_clip_path, reference):
    from PIL import Image

    no_network.setenv("DPL_CLIP_CHECKPOINT", tiny_clip_path)
    assert set(clip.available_models()) == set(clip._MODELS) and "ViT-B/16" in clip._MODELS
    model, preprocess = clip.load("ViT-B/16", device="cpu")
    assert model.dtype == torch.float32  # CPU -> fp32, as OpenAI's load
    image = preprocess(Image.new("RGB", (50, 40), (200, 30, 30))).unsqueeze(0)
    assert image.shape == (1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(image), reference.encode_image(image), atol=TOL)

    with pytest.warns(UserWarning, match="jit=True"):
        clip.load(tiny_clip_path, device="cpu", jit=True)
    with pytest.raises(CheckpointError, match="available_models"):
        clip.load("ViT-Z/99", device="cpu")


def test_package_exposes_openai_names():
    import clip as package

    assert package.tokenize is clip.tokenize and package.load is clip.load
    assert isinstance(clip._tokenizer, SimpleTokenizer)
    assert isinstance(package.clip, types.ModuleType)


def test_dpl_never_imports_clip():
    import pathlib
    import re

    imports_clip = re.compile(r"^\s*(import|from)\s+clip(\.|\s|$)", re.MULTILINE)
    root = pathlib.Path(__file__).resolve().parents[1] / "dpl"
    offenders = [p.name for p in root.rglob("*.py") if imports_clip.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


# --- CoOp-style trainer files (tests/coop_style) ---------------------------------------------

def _coop_cfg(**coop):
    from dassl.config import get_cfg_default
    from tests.coop_style import add_config_keys

    cfg = get_cfg_default()
    add_config_keys(cfg)
    cfg.MODEL.BACKBONE.NAME = "ViT-B/16"  # a key of clip._MODELS; the file comes from the override
    cfg.INPUT.SIZE = (32, 32)
    cfg.DATASET.NAME = "MiniDTD"
    for key, value in coop.items():
        cfg.TRAINER.COOPSTYLETEST[key] = value
    return cfg


@pytest.fixture
def clip_override(monkeypatch, tiny_clip_path):
    monkeypatch.setenv("DPL_CLIP_CHECKPOINT", tiny_clip_path)


@pytest.fixture(scope="module")
def coop_style():
    """The CoOp-style trainer modules, registered for this test module only."""
    from tests.coop_style import registered

    with registered() as modules:
        yield modules


def _text_features_via_open_clip(reference, token_embeddings, tokens):
    """open_clip's batch-first text path on given (n_cls, 77, width) input embeddings."""
    x = token_embeddings + reference.positional_embedding
    x = reference.ln_final(reference.transformer(x, attn_mask=reference.attn_mask))
    return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ reference.text_projection


def test_coop_style_trainer_logits_equal_open_clip(coop_style, clip_override, reference):
    coop = coop_style["coop_style_coop"]

    classnames = ["banded", "blotchy", "yorkshire_terrier"]
    clip_model = coop.load_clip_to_cpu(_coop_cfg()).float()
    images = _images()
    with torch.no_grad():
        ref_image = torch.nn.functional.normalize(reference.encode_image(images), dim=-1)

        # random context: compare against open_clip's own modules on the same prompt embeddings
        model = coop.CustomCLIP(_coop_cfg(N_CTX=4), classnames, clip_model).eval()
        learner = model.prompt_learner
        learner.ctx.normal_(generator=torch.Generator().manual_seed(3))
        text = _text_features_via_open_clip(reference, learner(), learner.tokenized_prompts)
        expected = reference.logit_scale.exp() * ref_image @ torch.nn.functional.normalize(text, dim=-1).t()
        assert torch.allclose(model(images), expected, atol=TOL)

        # context initialised from words: the same as open_clip encoding the full sentence
        model = coop.CustomCLIP(_coop_cfg(CTX_INIT="a photo of a"), classnames, clip_model).eval()
        sentences = open_clip.tokenize([f"a photo of a {c.replace('_', ' ')}." for c in classnames])
        text = torch.nn.functional.normalize(reference.encode_text(sentences), dim=-1)
        assert torch.allclose(model(images), reference.logit_scale.exp() * ref_image @ text.t(), atol=TOL)
    assert model.prompt_learner.name_lens == [len(open_clip.tokenizer._tokenizer.encode(c.replace("_", " ")))
                                              for c in classnames]


def test_zero_shot_style_trainer_logits_equal_open_clip(coop_style, clip_override, reference):
    from dassl.engine import TrainerBase

    ZSStyleTest = coop_style["coop_style_zsclip"].ZSStyleTest

    classnames = ["banded", "blotchy", "braided"]
    trainer = ZSStyleTest.__new__(ZSStyleTest)  # just its build_model, without data loaders
    TrainerBase.__init__(trainer)
    trainer.cfg, trainer.device = _coop_cfg(), torch.device("cpu")
    trainer.dm = types.SimpleNamespace(dataset=types.SimpleNamespace(classnames=classnames))
    trainer.build_model()
    images = _images()
    with torch.no_grad():
        logits = trainer.model_inference(images)
        expected, _ = reference.get_logits(images, open_clip.tokenize([f"{c} texture." for c in classnames]))
    assert torch.allclose(logits, expected, atol=TOL)
