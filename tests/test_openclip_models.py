"""Any open_clip ViT from a local file: names, config JSONs, .bin/.safetensors, preprocessing,
unsupported parts, and the artifact's backbone record (docs/MODELS.md)."""
import json
import os
import shutil

import open_clip
import pytest
import torch

from dassl.config import get_cfg_default
from dpl.artifact import ArtifactError, check_backbone
from dpl.clip_loader import (CheckpointError, UnsupportedModelError, backbone_record, load_clip,
                             preprocess_of)
from dpl.model import build_fixed_model
from tests.helpers.tiny_open_clip import PREPROCESS, tiny_model_cfg, write_tiny_open_clip
from trainers.config import apply_model_input, extend_cfg


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_tiny_open_clip(tmp_path_factory.mktemp("open_clip"))


def test_bin_and_safetensors_load_the_saved_weights_with_the_configs_architecture(files):
    from open_clip.model import CLIP

    reference = CLIP(**tiny_model_cfg()).eval()
    reference.load_state_dict(torch.load(files.bin, weights_only=True))
    images = torch.randn(2, 3, 40, 40)
    text = open_clip.tokenize(["a photo of a cat.", "a dog"])
    for path in (files.bin, files.safetensors):
        model = load_clip("tiny-open-clip", path, config=files.config)
        assert not model.visual.transformer.resblocks[0].mlp.gelu.__class__.__name__.startswith("Quick")
        assert model.visual.transformer.resblocks[0].attn.num_heads == 2  # head_width 32, not 64
        with torch.no_grad():  # (frozen weights take MultiheadAttention's fast path: ~1e-7 apart)
            assert torch.allclose(model.encode_image(images), reference.encode_image(images), atol=1e-5)
            assert torch.allclose(model.encode_text(text), reference.encode_text(text), atol=1e-5)


def test_dpl_without_prompts_equals_open_clip_logits(files):
    model = load_clip("tiny-open-clip", files.safetensors, config=files.config)
    dpl = build_fixed_model(model, ["cat", "dog"], [0, 0], [0, 0])
    images = torch.randn(3, 3, 40, 40)
    with torch.no_grad():
        img = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
        txt = torch.nn.functional.normalize(model.encode_text(open_clip.tokenize(
            ["a photo of a cat.", "a photo of a dog."])), dim=-1)
        expected = model.logit_scale.exp() * img @ txt.t()
        assert torch.allclose(dpl(images), expected, atol=1e-5)


def test_model_config_sets_input_defaults_but_command_line_wins(files):
    assert preprocess_of(load_clip("t", files.bin, config=files.config)) == {
        "size": (40, 40), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25),
        "interpolation": "bilinear"}
    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.merge_from_list(["INPUT.SIZE", "(224, 224)", "MODEL.BACKBONE.CONFIG", files.config])
    opts = ["INPUT.PIXEL_STD", "[0.3, 0.3, 0.3]"]
    cfg.merge_from_list(opts)
    changed = apply_model_input(cfg, opts)
    assert tuple(cfg.INPUT.SIZE) == (40, 40) and cfg.INPUT.INTERPOLATION == PREPROCESS["interpolation"]
    assert list(cfg.INPUT.PIXEL_MEAN) == PREPROCESS["mean"] and list(cfg.INPUT.PIXEL_STD) == [0.3] * 3
    assert "INPUT.PIXEL_STD" not in changed
    # An OpenAI backbone keeps the YAML/default values.
    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.MODEL.BACKBONE.NAME = "ViT-B/16"
    assert apply_model_input(cfg, []) == [] and tuple(cfg.INPUT.SIZE) == (224, 224)


def test_open_clip_name_uses_its_bundled_config(files, tmp_path):
    """A name open_clip lists needs no CONFIG (here a tiny config registered under a new name)."""
    shutil.copy(files.config, tmp_path / "DPLTest-Tiny-ViT.json")
    with open(tmp_path / "DPLTest-Tiny-ViT.json", "w") as fh:
        json.dump(tiny_model_cfg(), fh)
    open_clip.add_model_config(str(tmp_path / "DPLTest-Tiny-ViT.json"))
    model = load_clip("DPLTest-Tiny-ViT", files.bin)
    assert preprocess_of(model)["size"] == (40, 40)
    assert preprocess_of(model)["interpolation"] == "bicubic"  # open_clip's default preprocessing
    with pytest.raises(CheckpointError, match="MODEL.BACKBONE.PATH"):
        load_clip("DPLTest-Tiny-ViT")  # nothing is downloaded


@pytest.mark.parametrize("changes, part", [
    ({"vision_cfg__timm_model_name": "vit_base_patch16_224"}, "vision_cfg.timm_model_name"),
    ({"text_cfg__hf_tokenizer_name": "bert"}, "text_cfg.hf_tokenizer_name"),
    ({"vision_cfg__qk_norm": True}, "vision_cfg.qk_norm"),
    ({"vision_cfg__attentional_pool": True}, "vision_cfg.attentional_pool"),
    ({"text_cfg__pool_type": "last"}, "text_cfg.pool_type"),
    ({"text_cfg__vocab_size": 32000}, "text_cfg.vocab_size"),
])
def test_unsupported_parts_fail_at_load_naming_the_field(files, tmp_path, changes, part):
    config = tmp_path / "model.json"
    config.write_text(json.dumps(tiny_model_cfg(**changes)))
    with pytest.raises(UnsupportedModelError) as info:
        load_clip("custom", files.bin, config=str(config))
    assert part in str(info.value) and str(config) in str(info.value)


def test_wrong_architecture_and_bad_config_are_clear_errors(files, tmp_path):
    config = tmp_path / "wider.json"
    config.write_text(json.dumps(tiny_model_cfg(embed_dim=32)))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_clip("x", files.bin, config=str(config))
    (tmp_path / "bad.json").write_text('{"vision_cfg": {}}')
    with pytest.raises(CheckpointError, match="embed_dim"):
        load_clip("x", files.bin, config=str(tmp_path / "bad.json"))


def test_backbone_record_hash_refuses_an_artifact_from_another_checkpoint(files, tmp_path):
    record = backbone_record(load_clip("t", files.bin, config=files.config))
    assert record["name"] == "t" and len(record["sha256"]) == 64
    assert os.path.basename(files.bin) in record["file"]
    same_weights = backbone_record(load_clip("t", files.safetensors, config=files.config))
    assert same_weights["sha256"] == record["sha256"]  # the weights' hash, not the file's
    check_backbone({"backbone": record}, same_weights, "a.json")
    other = write_tiny_open_clip(tmp_path / "other", seed=1)
    other_record = backbone_record(load_clip("t", other.bin, config=other.config))
    check_backbone({"backbone": "t"}, other_record, "a.json")  # name-only (older) artifacts
    with pytest.raises(ArtifactError, match="sha256"):
        check_backbone({"backbone": record}, other_record, "a.json")


def test_every_baseline_runs_on_an_open_clip_model(files):
    from dpl.baselines.model import build_coop, build_ivlp, build_maple, build_zeroshot

    model = load_clip("tiny-open-clip", files.bin, config=files.config)
    names, images = ["cat", "dog", "fox"], torch.randn(2, 3, 40, 40)
    zeroshot = build_zeroshot(model, names, "a photo of a {}.")
    with torch.no_grad():
        txt = torch.nn.functional.normalize(model.encode_text(open_clip.tokenize(
            [f"a photo of a {n}." for n in names])), dim=-1)
        img = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
        assert torch.allclose(zeroshot(images), model.logit_scale.exp() * img @ txt.t(), atol=1e-5)
    for baseline in (build_coop(model, names, n_ctx=4), build_ivlp(model, names),
                     build_maple(model, names, n_ctx=2, depth=2)):
        logits = baseline(images)
        assert logits.shape == (2, 3)
        logits.logsumexp(dim=1).sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in baseline.prompt_parameters())
