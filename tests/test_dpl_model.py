"""DPLCLIP model API, class text inputs, validation errors and non-ViT image towers."""
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from dpl.io import atomic_torch_save
from dpl.model import build_fixed_model, build_supernet_model, model_dims
from dpl.prompts import PromptConfigError
from dpl.templates import (DPL_CUSTOM_TEMPLATES, IMAGENET_TEMPLATES, ZEROSHOT_TEMPLATES,
                           dataset_template)
from dpl.text_inputs import class_token_inputs, tokenize

CLASSNAMES = ["golden_retriever", "cat", "hot air balloon"]


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def resnet_clip():
    torch.manual_seed(0)
    model = CLIP(32, CLIPVisionCfg(layers=(1, 1, 1, 1), width=8, image_size=32),
                 CLIPTextCfg(width=64, heads=1, layers=2), quick_gelu=True).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# -- model API ---------------------------------------------------------------------------------
def test_forward_is_scaled_cosine_and_reuses_given_text_features(clip_model, images, monkeypatch):
    model = build_fixed_model(clip_model, CLASSNAMES, [1, 0, 2], [2, 1])
    calls = []
    original = model.text_encoder.forward
    monkeypatch.setattr(model.text_encoder, "forward",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    with torch.no_grad():
        text = model.encode_text()
        image = model.encode_image(images)
        assert text.shape == (3, 32) and image.shape == (2, 32)
        assert torch.allclose(text.norm(dim=-1), torch.ones(3))
        logits = model(images)
        assert len(calls) == 2                          # encode_text + forward's own text pass
        again = model(images, text_features=text)
        assert len(calls) == 2                          # given features: no text pass
    want = clip_model.logit_scale.exp() * image @ text.t()
    assert (logits - want).abs().max() <= 1e-5 and (again - want).abs().max() <= 1e-5


def test_set_classnames_rebuilds_class_inputs_and_keeps_prompts(clip_model, images):
    model = build_fixed_model(clip_model, CLASSNAMES, [1, 0, 2], [2, 1])
    state = {k: v.clone() for k, v in model.prompt_learner.state_dict().items()}
    with torch.no_grad():
        before = model.encode_text()
        model.set_classnames(["cat", "zebra", "golden_retriever", "tram"])
        after = model.encode_text()
        assert model(images).shape == (2, 4) and model.num_classes == 4
    assert after.shape == (4, 32)
    assert (after[0] - before[1]).abs().max() <= 1e-6 and (after[2] - before[0]).abs().max() <= 1e-6
    for k, v in model.prompt_learner.state_dict().items():
        assert torch.equal(v, state[k])


def test_prompt_learner_state_dict_round_trip(clip_model, images, tmp_path):
    model = build_fixed_model(clip_model, CLASSNAMES, [1, 0, 2], [2, 1])
    sd = model.prompt_learner.state_dict()
    assert set(sd) == {"text.prompts.block0", "text.prompts.block2",
                       "vision.prompts.block0", "vision.prompts.block1"}
    # class inputs are rebuilt, never saved (base -> new evaluation)
    assert not any("token_embeddings" in k or "eot_index" in k for k in model.state_dict())
    atomic_torch_save(sd, tmp_path / "prompts.pth")
    torch.manual_seed(123)
    other = build_fixed_model(clip_model, CLASSNAMES, [1, 0, 2], [2, 1])
    with torch.no_grad():
        assert (other(images) - model(images)).abs().max() > 1e-4
        other.prompt_learner.load_state_dict(torch.load(tmp_path / "prompts.pth", weights_only=True))
        assert (other(images) - model(images)).abs().max() <= 1e-6


def test_train_mode_keeps_clip_in_eval(clip_model):
    model = build_supernet_model(clip_model, CLASSNAMES, [0, 2], [0, 2])
    assert not model.training and not model.prompt_learner.training
    model.train()
    assert model.training and model.prompt_learner.training
    assert not any(m.training for m in model.text_encoder.modules())
    assert not any(m.training for m in model.image_encoder.modules())
    model.eval()
    assert not model.prompt_learner.training


def test_fixed_model_has_no_arch_parameters(clip_model):
    fixed = build_fixed_model(clip_model, CLASSNAMES, [1, 0, 2], [2, 1])
    assert fixed.arch_parameters() == []
    assert [tuple(p.shape) for p in fixed.prompt_parameters()] == [(1, 64), (2, 64), (2, 128),
                                                                   (1, 128)]
    values = torch.cat([p.flatten() for p in fixed.prompt_parameters()])
    assert values.abs().max() < 0.2                     # fresh N(0, 0.02²)


def test_model_dims_reads_the_model(clip_model, resnet_clip):
    assert model_dims(clip_model) == {"text": {"num_blocks": 3, "width": 64},
                                      "vision": {"num_blocks": 2, "width": 128}}
    assert model_dims(resnet_clip) == {"text": {"num_blocks": 2, "width": 64},
                                       "vision": {"num_blocks": 0, "width": 0}}


# -- text inputs -------------------------------------------------------------------------------
def test_default_text_input_is_a_photo_of_a_class(clip_model):
    emb, eot = class_token_inputs(clip_model.token_embedding, ["golden_retriever"], "default")
    ids = tokenize(["a photo of a golden retriever."], 77)
    assert torch.equal(eot, ids.argmax(-1))
    assert emb.shape[1] == int(eot) + 1 == 9   # cut after EOT: SOS a photo of a golden retriever . EOT
    assert torch.equal(emb, clip_model.token_embedding(ids)[:, :9])
    full, _ = class_token_inputs(clip_model.token_embedding, ["golden_retriever"], "default",
                                 truncate=False)
    assert torch.equal(full, clip_model.token_embedding(ids))


def test_custom_text_input_uses_the_dpl_dataset_template(clip_model):
    emb, _ = class_token_inputs(clip_model.token_embedding, ["Abyssinian"], "custom", "OxfordPets")
    ids = tokenize(["a type of pet, a photo of a Abyssinian."], 77)
    assert torch.equal(emb, clip_model.token_embedding(ids)[:, :int(ids.argmax()) + 1])
    with pytest.raises(ValueError, match="NoSuchDataset"):
        class_token_inputs(clip_model.token_embedding, ["x"], "custom", "NoSuchDataset")
    with pytest.raises(ValueError, match="TEXT_INPUT"):
        class_token_inputs(clip_model.token_embedding, ["x"], "fancy")


def test_ensemble_text_input_averages_embeddings_and_reads_last_template_eot(clip_model):
    names = ["tench", "hot_air_balloon"]
    emb, eot = class_token_inputs(clip_model.token_embedding, names, "ensemble")
    per_template = [clip_model.token_embedding(
        tokenize([t.format(n.replace("_", " ")) for n in names], 77)) for t in IMAGENET_TEMPLATES]
    last = tokenize([f"itap of the {n.replace('_', ' ')}." for n in names], 77)
    assert torch.equal(eot, last.argmax(-1))
    length = int(eot.max()) + 1  # other templates are longer: cut at the read-out, not their EOT
    longest = max(int(tokenize([t.format("hot air balloon")], 77).argmax()) for t in IMAGENET_TEMPLATES)
    assert emb.shape[1] == length < longest + 1
    assert torch.allclose(emb, torch.stack(per_template).mean(0)[:, :length], atol=1e-6)
    other = tokenize([f"a low resolution photo of the {n.replace('_', ' ')}." for n in names], 77)
    assert (eot != other.argmax(-1)).all()               # the documented quirk is really there


def test_template_tables():
    assert len(IMAGENET_TEMPLATES) == 60 == len(set(IMAGENET_TEMPLATES))
    assert IMAGENET_TEMPLATES[0] == "a photo of a {}." and IMAGENET_TEMPLATES[-1] == "itap of the {}."
    assert DPL_CUSTOM_TEMPLATES["OxfordPets"] == "a type of pet, a photo of a {}."
    assert DPL_CUSTOM_TEMPLATES["EuroSAT"] == "a centered satellite photo of {}."
    assert DPL_CUSTOM_TEMPLATES["UCF101"] == "a photo of a person doing {}."
    assert ZEROSHOT_TEMPLATES["OxfordPets"] == "a photo of a {}, a type of pet."
    assert ZEROSHOT_TEMPLATES["ImageNet"] == "a photo of a {}."
    coop = {"OxfordPets", "OxfordFlowers", "FGVCAircraft", "DescribableTextures", "EuroSAT",
            "StanfordCars", "Food101", "SUN397", "Caltech101", "UCF101", "ImageNet",
            "ImageNetSketch", "ImageNetV2", "ImageNetA", "ImageNetR"}
    from demo.world import TASKS

    demo = set(TASKS)  # the offline demo's own tasks, every one of them
    assert set(DPL_CUSTOM_TEMPLATES) == set(ZEROSHOT_TEMPLATES) == coop | demo
    for t in IMAGENET_TEMPLATES + list(DPL_CUSTOM_TEMPLATES.values()) + list(ZEROSHOT_TEMPLATES.values()):
        assert t.count("{}") == 1, t
    assert dataset_template("DescribableTextures", ZEROSHOT_TEMPLATES) == "{} texture."


# -- validation --------------------------------------------------------------------------------
@pytest.mark.parametrize("text, vision, match", [
    ([1, 0], [0, 0], "3 blocks"),                        # wrong number of text lengths
    ([0, 0, 0], [1, 1, 1], "2 blocks"),                  # wrong number of vision lengths
    ([0, -1, 0], [0, 0], "negative"),
    ([0, 1.5, 0], [0, 0], "whole numbers"),
])
def test_fixed_lengths_are_validated(clip_model, text, vision, match):
    with pytest.raises(PromptConfigError, match=match):
        build_fixed_model(clip_model, CLASSNAMES, text, vision)


@pytest.mark.parametrize("options", [[2, 4], [0, 4, 2], [0, 2, 2], [], [0, -2]])
def test_search_options_are_validated(clip_model, options):
    with pytest.raises(PromptConfigError, match="TEXT_OPTIONS"):
        build_supernet_model(clip_model, CLASSNAMES, options, [0, 2])
    with pytest.raises(PromptConfigError, match="VISION_OPTIONS"):
        build_supernet_model(clip_model, CLASSNAMES, [0, 2], options)


def test_unknown_impl_and_prompt_init_are_errors(clip_model):
    with pytest.raises(PromptConfigError, match="IMPL"):
        build_supernet_model(clip_model, CLASSNAMES, [0, 2], [0, 2], impl="fast")
    with pytest.raises(PromptConfigError, match="PROMPT_INIT"):
        build_supernet_model(clip_model, CLASSNAMES, [0, 2], [0, 2], prompt_init="zeros")


# -- non-ViT image tower -----------------------------------------------------------------------
def test_resnet_tower_with_zero_vision_lengths_is_clip_encode_image(resnet_clip, images):
    model = build_fixed_model(resnet_clip, CLASSNAMES, [2, 0], [0] * 12)
    sup = build_supernet_model(resnet_clip, CLASSNAMES, [0, 2], [0])
    assert [tuple(a.shape) for a in sup.arch_parameters()] == [(2, 2), (0, 1)]
    with torch.no_grad():
        want = F.normalize(resnet_clip.encode_image(images), dim=-1)
        assert (model.encode_image(images) - want).abs().max() <= 1e-6
        assert (sup.encode_image(images) - want).abs().max() <= 1e-6
        assert model(images).shape == (2, 3)


def test_resnet_tower_with_vision_prompts_is_an_error(resnet_clip):
    with pytest.raises(PromptConfigError, match="not a ViT"):
        build_fixed_model(resnet_clip, CLASSNAMES, [0, 0], [0, 1])
    with pytest.raises(PromptConfigError, match="not a ViT"):
        build_supernet_model(resnet_clip, CLASSNAMES, [0, 2], [0, 2])
