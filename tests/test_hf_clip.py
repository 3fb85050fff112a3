"""Hugging Face ``transformers`` CLIP folders (docs/MODELS.md "Hugging Face transformers folders"):
equal to transformers' own CLIPModel, preprocessing, refusals in one line, the artifact's record,
and search -> train -> eval-only -> predict end to end on such a folder."""
import json
import os
import shutil
import subprocess
import sys

import open_clip
import pytest
import torch
import torch.nn.functional as F

from dassl.config import get_cfg_default
from dpl.artifact import ArtifactError, check_backbone
from dpl.clip_loader import (CheckpointError, UnsupportedModelError, backbone_record, load_clip,
                             preprocess_of)
from dpl.model import build_fixed_model
from tests.helpers.tiny_hf_clip import edit_config, write_tiny_hf_clip
from trainers.config import apply_model_input, extend_cfg

transformers = pytest.importorskip("transformers")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-5
PROMPTS = ["a photo of a cat.", "a very long description of a small green frog sitting on a big leaf", "x",
           "two dogs"]
# Largest |ours - transformers| per variant, printed at the end of the module (-s shows it).
MAX_DIFF = {}

VARIANTS = {  # name: (text act, vision act, weights format, extra config)
    "quick_gelu-safetensors": ("quick_gelu", "quick_gelu", "safetensors", {}),
    "gelu-bin": ("gelu", "gelu", "bin", {}),
    "gelu-safetensors-eps1e-6": ("gelu", "gelu", "safetensors",
                                 {"text": {"layer_norm_eps": 1e-6}, "vision": {"layer_norm_eps": 1e-6}}),
    "mixed-bin-context40": ("gelu", "quick_gelu", "bin", {"text": {"max_position_embeddings": 40}}),
    "legacy-eos-2": ("quick_gelu", "gelu", "safetensors", {"text": {"eos_token_id": 2}}),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {name: write_tiny_hf_clip(root / name, text_act, vision_act, fmt, **extra)
            for name, (text_act, vision_act, fmt, extra) in VARIANTS.items()}


def _features(out):  # transformers 5 returns an output object, 4.x a tensor
    return out if torch.is_tensor(out) else out.pooler_output


def _transformers_outputs(folder, ids, images):
    from transformers import CLIPModel

    hf = CLIPModel.from_pretrained(folder).eval()
    with torch.no_grad():
        return (_features(hf.get_image_features(pixel_values=images)),
                _features(hf.get_text_features(input_ids=ids)),
                hf(input_ids=ids, pixel_values=images).logits_per_image)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_features_and_logits_equal_transformers_clipmodel(folders, variant):
    folder = folders[variant]
    model = load_clip("any-name", folder)
    context = model.context_length
    torch.manual_seed(1)
    images = torch.randn(3, 3, 32, 32)
    ids = open_clip.tokenize(PROMPTS, context_length=context)
    hf_img, hf_txt, hf_logits = _transformers_outputs(folder, ids, images)
    with torch.no_grad():
        img, txt = model.encode_image(images), model.encode_text(ids)
        logits = model.logit_scale.exp() * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()
        # DPL's own walk of the towers (no prompts) reads the same model
        dpl = build_fixed_model(model, ["cat", "green frog"], [0, 0], [0, 0])(images)
        hf_dpl = _transformers_outputs(folder, open_clip.tokenize(
            ["a photo of a cat.", "a photo of a green frog."], context_length=context), images)[2]
    diffs = [(img - hf_img).abs().max(), (txt - hf_txt).abs().max(), (logits - hf_logits).abs().max(),
             (dpl - hf_dpl).abs().max()]
    MAX_DIFF[variant] = max(float(d) for d in diffs)
    assert max(diffs) <= TOL, diffs
    assert img.abs().mean() > 0.1 and txt.abs().mean() > 0.1  # features are not trivially small
    assert context == VARIANTS[variant][3].get("text", {}).get("max_position_embeddings", 77)


def test_legacy_config_dict_keys_win_as_in_transformers(folders, tmp_path):
    """Old config.json files carry text_config_dict/vision_config_dict; transformers reads those."""
    folder = shutil.copytree(folders["gelu-bin"], tmp_path / "legacy")

    def legacy(d):
        for name in ("text_config", "vision_config"):
            d[f"{name}_dict"] = dict(d[name])
            d[name].update(hidden_act="quick_gelu", layer_norm_eps=0.1)  # overridden by the dicts
    edit_config(folder, legacy)
    images, ids = torch.randn(2, 3, 32, 32), open_clip.tokenize(PROMPTS)
    hf_img, hf_txt, _ = _transformers_outputs(str(folder), ids, images)
    model = load_clip("m", str(folder))
    with torch.no_grad():
        assert (model.encode_image(images) - hf_img).abs().max() <= TOL
        assert (model.encode_text(ids) - hf_txt).abs().max() <= TOL
    assert type(model.transformer.resblocks[0].mlp.gelu) is torch.nn.GELU


def test_comparison_is_sensitive_to_the_activation(folders, tmp_path):
    """The same weights read as QuickGELU instead of GELU give visibly different features."""
    folder = shutil.copytree(folders["gelu-bin"], tmp_path / "as-quick")
    edit_config(folder, lambda d: (d["text_config"].update(hidden_act="quick_gelu"),
                                   d["vision_config"].update(hidden_act="quick_gelu")))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        gelu = load_clip("m", folders["gelu-bin"]).encode_image(images)
        quick = load_clip("m", str(folder)).encode_image(images)
    assert (gelu - quick).abs().max() > 1e-3


def test_tokenizer_files_are_clips_bpe_for_transformers_too(folders):
    """The helper's vocab.json/merges.txt tokenize as open_clip does (so the check compares like with like)."""
    from transformers import CLIPTokenizer

    folder = folders["quick_gelu-safetensors"]
    tok = CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"))
    ids = open_clip.tokenize(PROMPTS)
    for row, text in zip(ids, PROMPTS):
        assert tok(text)["input_ids"] == row[row != 0].tolist()


def test_the_log_says_what_was_read(folders, capsys):
    load_clip("x", folders["mixed-bin-context40"])
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "Hugging Face CLIP folder" in out
    assert "ViT 2x48 (3 heads, patch 8, image 32, quick_gelu" in out
    assert "text 2x64 (2 heads, context 40, gelu" in out and "vocab.json, merges.txt match" in out


def test_weights_file_of_a_folder_reads_the_folder(folders, capsys):
    """MODEL.BACKBONE.PATH at model.safetensors / config.json inside the folder: the folder is used."""
    folder = folders["quick_gelu-safetensors"]
    ref = backbone_record(load_clip("a", folder))
    for path in (os.path.join(folder, "model.safetensors"), os.path.join(folder, "config.json")):
        assert backbone_record(load_clip("a", path))["sha256"] == ref["sha256"]


def test_preprocessor_config_sets_input_defaults_but_command_line_wins(folders, tmp_path):
    folder = shutil.copytree(folders["quick_gelu-safetensors"], tmp_path / "pre")
    with open(folder / "preprocessor_config.json", "w") as fh:
        json.dump({"image_processor_type": "CLIPImageProcessor", "image_mean": [0.5, 0.4, 0.3],
                   "image_std": [0.2, 0.25, 0.3], "resample": 2, "size": {"shortest_edge": 32},
                   "crop_size": {"height": 32, "width": 32}, "do_center_crop": True}, fh)
    want = {"size": (32, 32), "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3), "interpolation": "bilinear"}
    assert preprocess_of(load_clip("m", str(folder))) == want
    cfg = get_cfg_default()
    extend_cfg(cfg)
    opts = ["MODEL.BACKBONE.PATH", str(folder), "INPUT.PIXEL_STD", "[0.3, 0.3, 0.3]"]
    cfg.merge_from_list(opts)
    changed = apply_model_input(cfg, opts)
    assert tuple(cfg.INPUT.SIZE) == (32, 32) and cfg.INPUT.INTERPOLATION == "bilinear"
    assert list(cfg.INPUT.PIXEL_MEAN) == [0.5, 0.4, 0.3] and list(cfg.INPUT.PIXEL_STD) == [0.3] * 3
    assert "INPUT.PIXEL_STD" not in changed
    # Without preprocessor_config.json: CLIP's defaults at the model's image size.
    assert preprocess_of(load_clip("m", folders["gelu-bin"]))["interpolation"] == "bicubic"


@pytest.mark.parametrize("pre, want, note", [
    ({"resample": 1}, {"interpolation": "bicubic"}, "resample 1 is not one of"),
    ({"do_normalize": False}, {"mean": (0.0,) * 3, "std": (1.0,) * 3}, "no normalization"),
    ({"size": 36, "crop_size": 32, "image_mean": 0.5}, {"mean": (0.5,) * 3}, "resizes to 36 before cropping 32"),
    ({"size": {"shortest_edge": 40}, "crop_size": {"height": 40, "width": 40}}, {"size": (32, 32)},
     "is not the model's image size"),
])
def test_odd_preprocessor_configs_do_the_right_thing_and_say_so(tmp_path, pre, want, note):
    from dpl.hf_clip import read_preprocess

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(pre))
    out, source = read_preprocess(str(tmp_path), 32)
    assert {k: out[k] for k in want} == want and note in source


def test_a_preprocessor_config_that_does_not_scale_pixels_is_refused(tmp_path):
    from dpl.hf_clip import read_preprocess

    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_rescale": False}))
    with pytest.raises(UnsupportedModelError) as info:
        read_preprocess(str(tmp_path), 32)
    assert "do_rescale" in _one_line_error(info)


def _one_line_error(exc_info):
    text = str(exc_info.value)
    assert "\n" not in text
    return text


def _siglip(d):
    d.update(model_type="siglip", architectures=["SiglipModel"])


def _clipseg(d):
    d.update(model_type="clipseg", architectures=["CLIPSegModel"])


def _classifier(d):
    d["architectures"] = ["CLIPForImageClassification"]


REFUSALS = [  # (edit of config.json, words the message must hold)
    (_siglip, "'siglip'"),
    (_clipseg, "CLIPSegModel"),
    (_classifier, "CLIPForImageClassification"),
    (lambda d: d["text_config"].update(eos_token_id=49406), "text_config.eos_token_id is 49406"),
    (lambda d: d["text_config"].update(eos_token_id=[2]), "text_config.eos_token_id is [2]"),
    (lambda d: d["text_config"].update(vocab_size=32000), "text_config.vocab_size is 32000"),
    (lambda d: d["vision_config"].update(model_type="siglip_vision_model"), "vision_config.model_type"),
    (lambda d: d["vision_config"].update(num_channels=1), "vision_config.num_channels"),
    (lambda d: d["vision_config"].update(hidden_act="relu"), "vision_config.hidden_act 'relu'"),
    (lambda d: d["vision_config"].update(image_size=[32, 48]), "vision_config.image_size"),
]


@pytest.mark.parametrize("edit, words", REFUSALS)
def test_what_dpl_cannot_prompt_is_refused_in_one_line_naming_the_field(folders, tmp_path, edit, words):
    folder = shutil.copytree(folders["quick_gelu-safetensors"], tmp_path / "m")
    edit_config(folder, edit)
    with pytest.raises(UnsupportedModelError) as info:
        load_clip("m", str(folder))
    text = _one_line_error(info)
    assert words in text and "config.json" in text


def test_other_vocabularies_are_refused_naming_the_file_and_field(folders, tmp_path):
    folder = shutil.copytree(folders["quick_gelu-safetensors"], tmp_path / "vocab")
    with open(folder / "vocab.json") as fh:
        vocab = json.load(fh)
    vocab["photo</w>"], vocab["cat</w>"] = vocab["cat</w>"], vocab["photo</w>"]
    with open(folder / "vocab.json", "w") as fh:
        json.dump(vocab, fh)
    with pytest.raises(UnsupportedModelError) as info:
        load_clip("m", str(folder))
    assert "vocab.json" in _one_line_error(info) and "vocabulary" in str(info.value)

    folder = shutil.copytree(folders["quick_gelu-safetensors"], tmp_path / "merges")
    lines = (folder / "merges.txt").read_text().split("\n")
    lines[1], lines[2] = lines[2], lines[1]
    (folder / "merges.txt").write_text("\n".join(lines))
    with pytest.raises(UnsupportedModelError) as info:
        load_clip("m", str(folder))
    assert "merges.txt" in _one_line_error(info) and "merge 0" in str(info.value)

    folder = shutil.copytree(folders["quick_gelu-safetensors"], tmp_path / "fast")
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram", "vocab": []}}))
    with pytest.raises(UnsupportedModelError) as info:
        load_clip("m", str(folder))
    assert "tokenizer.json" in _one_line_error(info) and "BPE" in str(info.value)


def test_broken_folders_are_one_line_errors(folders, tmp_path):
    folder = shutil.copytree(folders["quick_gelu-safetensors"], tmp_path / "extra")
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    state["vision_model.embeddings.patch_embedding.bias"] = torch.zeros(48)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(UnsupportedModelError) as info:
        load_clip("m", str(folder))
    assert "patch_embedding.bias" in _one_line_error(info)

    folder = shutil.copytree(folders["quick_gelu-safetensors"], tmp_path / "deeper")
    edit_config(folder, lambda d: d["text_config"].update(num_hidden_layers=3))
    with pytest.raises(CheckpointError) as info:
        load_clip("m", str(folder))
    assert "text_model.encoder.layers.2" in _one_line_error(info)

    folder = shutil.copytree(folders["quick_gelu-safetensors"], tmp_path / "noweights")
    os.remove(folder / "model.safetensors")
    with pytest.raises(CheckpointError) as info:
        load_clip("m", str(folder))
    assert "model.safetensors or pytorch_model.bin" in _one_line_error(info)

    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError) as info:
        load_clip("m", str(tmp_path / "empty"))
    assert "without a config.json" in _one_line_error(info)

    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(os.path.join(folders["quick_gelu-safetensors"], "model.safetensors"), loose / "w.safetensors")
    with pytest.raises(CheckpointError) as info:
        load_clip("m", str(loose / "w.safetensors"))
    assert "no config.json" in _one_line_error(info)

    with pytest.raises(CheckpointError) as info:
        load_clip("m", folders["gelu-bin"], config=str(tmp_path / "other.json"))
    assert "remove MODEL.BACKBONE.CONFIG" in _one_line_error(info)


def test_bin_is_read_weights_only(folders, tmp_path):
    """A pytorch_model.bin that would run code is refused, and the code does not run."""
    folder = shutil.copytree(folders["gelu-bin"], tmp_path / "evil")
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"logit_scale": Evil()}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as info:
        load_clip("m", str(folder))
    assert "weights-only" in _one_line_error(info) and not marker.exists()


def test_sharded_folders_load_the_same_weights(folders, tmp_path):
    from transformers import CLIPModel

    folder = tmp_path / "sharded"
    CLIPModel.from_pretrained(folders["gelu-bin"]).save_pretrained(folder, max_shard_size="2MB")
    assert (folder / "model.safetensors.index.json").exists()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(folders["gelu-bin"], name), folder / name)
    assert (backbone_record(load_clip("m", str(folder)))["sha256"]
            == backbone_record(load_clip("m", folders["gelu-bin"]))["sha256"])


def test_backbone_record_refuses_an_artifact_of_other_weights_or_architecture(folders, tmp_path):
    record = backbone_record(load_clip("mine", folders["gelu-bin"]))
    assert record["name"] == "mine" and record["file"] == folders["gelu-bin"]
    assert record["config"] == os.path.join(folders["gelu-bin"], "config.json")
    assert len(record["sha256"]) == 64 and len(record["config_sha256"]) == 64
    # The same weights as safetensors: the same record hashes.
    copy = tmp_path / "as-safetensors"
    from transformers import CLIPModel

    CLIPModel.from_pretrained(folders["gelu-bin"]).save_pretrained(copy)
    same = backbone_record(load_clip("mine", str(copy)))
    assert (same["sha256"], same["config_sha256"]) == (record["sha256"], record["config_sha256"])
    check_backbone({"backbone": record}, same, "a.json")
    # An older transformers' .bin also holds the position_ids buffers: not weights, same hash.
    old = shutil.copytree(folders["gelu-bin"], tmp_path / "old-bin")
    state = torch.load(old / "pytorch_model.bin", weights_only=True)
    state["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    state["vision_model.embeddings.position_ids"] = torch.arange(17).unsqueeze(0)
    torch.save(state, old / "pytorch_model.bin")
    assert backbone_record(load_clip("mine", str(old)))["sha256"] == record["sha256"]
    other = backbone_record(load_clip("mine", write_tiny_hf_clip(tmp_path / "seed1", "gelu", "gelu", seed=1)))
    with pytest.raises(ArtifactError, match="sha256"):
        check_backbone({"backbone": record}, other, "a.json")
    # Same weights, other activation in config.json: another model.
    edit_config(copy, lambda d: d["text_config"].update(hidden_act="quick_gelu"))
    with pytest.raises(ArtifactError, match="architecture"):
        check_backbone({"backbone": record}, backbone_record(load_clip("mine", str(copy))), "a.json")


def test_every_baseline_and_complexity_run_on_a_folder(folders):
    from dpl.baselines.model import build_coop, build_maple
    from tools.complexity import load_backbone

    model = load_clip("hf", folders["mixed-bin-context40"])
    images = torch.randn(2, 3, 32, 32)
    for baseline in (build_coop(model, ["cat", "dog"], n_ctx=4), build_maple(model, ["cat", "dog"], n_ctx=2, depth=2)):
        logits = baseline(images)
        logits.logsumexp(dim=1).sum().backward()
        assert logits.shape == (2, 2)
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in baseline.prompt_parameters())
    assert load_backbone("hf", folders["mixed-bin-context40"], "").visual.conv1.weight.is_meta


def test_gradcam_zeroshot_column_on_a_folder(folders, tmp_path):
    from PIL import Image

    from tools import gradcam

    picture, png = tmp_path / "photo.png", tmp_path / "cam.png"
    Image.new("RGB", (48, 40), (200, 30, 30)).save(picture)
    gradcam.main(["--image", str(picture), "cat", "--zeroshot", "--backbone", "hf", "--clip-checkpoint",
                  folders["gelu-bin"], "--device", "cpu", "--out", str(png)])
    with Image.open(png) as img:
        assert img.format == "PNG"


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16", "amp", "bf16"])
def test_cuda_folder_features_match_the_cpu_fp32_model(folders, precision):
    from dpl.precision import autocast

    images, ids = torch.randn(2, 3, 32, 32), open_clip.tokenize(PROMPTS[:2])
    ref = load_clip("m", folders["gelu-bin"])
    gpu = load_clip("m", folders["gelu-bin"], precision=precision, device="cuda")
    with torch.no_grad():
        ref_img, ref_txt = ref.encode_image(images), ref.encode_text(ids)
        with autocast(precision, "cuda"):
            img = gpu.encode_image(images.cuda().to(gpu.visual.conv1.weight.dtype)).float().cpu()
            txt = gpu.encode_text(ids.cuda()).float().cpu()
    tol = 1e-3 if precision == "fp32" else 5e-2  # TF32 / half precision
    assert F.cosine_similarity(img, ref_img).min() > 1 - tol
    assert F.cosine_similarity(txt, ref_txt).min() > 1 - tol


# ----------------------------------------------------------------------------------------------
# End to end through train.py and tools/predict.py
# ----------------------------------------------------------------------------------------------
def model_opts(folder):
    # No INPUT.* keys: size 32, mean/std and bilinear come from the folder's preprocessor_config.json.
    return ["MODEL.BACKBONE.NAME", "my-hf-clip", "MODEL.BACKBONE.PATH", folder, "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TEST.BATCH_SIZE", "8", "DATASET.NUM_SHOTS", "4", "DATASET.TEST_FRACTION", "0.3",
            "TRAINER.DPL.SEARCH.VAL_BATCH_SIZE", "4", "TRAIN.PRINT_FREQ", "100"]


PREPROCESSOR = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "resample": 2,
                "crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 32}}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from tests.helpers.runs import run_train, train_args
    from tests.test_own_data import make_imagefolder

    tmp = tmp_path_factory.mktemp("hf_pipeline")
    data = make_imagefolder(tmp / "my_images")
    folder = write_tiny_hf_clip(tmp / "my-hf-clip", "gelu", "quick_gelu", fmt="bin", preprocessor=PREPROCESSOR)
    out = {k: str(tmp / k) for k in ("search", "train", "eval")}
    run_train(train_args("DPLSearch", "vit_b16", "imagefolder", data, out["search"], extra=[
        *model_opts(folder), "OPTIM.MAX_EPOCH", "1", "TRAINER.DPL.SEARCH.TEXT_OPTIONS", "[0, 2]",
        "TRAINER.DPL.SEARCH.VISION_OPTIONS", "[0, 2]", "TRAINER.DPL.SEARCH.ALPHA_INIT_STD", "1.0"]))
    artifact = os.path.join(out["search"], "prompt_config.json")
    run_train(train_args("DPLTrain", "vit_b16", "imagefolder", data, out["train"], extra=[
        *model_opts(folder), "OPTIM.MAX_EPOCH", "1", "TRAINER.DPL.CONFIG_FILE", artifact]))
    run_train(train_args("DPLTrain", "vit_b16", "imagefolder", data, out["eval"], extra=[
        "--eval-only", "--model-dir", out["train"], "--load-epoch", "1", *model_opts(folder),
        "TRAINER.DPL.CONFIG_FILE", os.path.join(out["train"], "prompt_config.json")]))
    return {"data": data, "folder": folder, "out": out, "artifact": artifact}


@pytest.mark.slow
def test_search_train_eval_predict_on_a_folder(pipeline, tmp_path):
    from tests.helpers.runs import final_accuracy

    with open(os.path.join(pipeline["out"]["train"], "log.txt")) as fh:
        log = fh.read()
    assert ("Input preprocessing: size (32, 32), mean (0.5, 0.5, 0.5), std (0.25, 0.25, 0.25), "
            "interpolation bilinear (the model's)") in log
    assert "Hugging Face CLIP folder" in log
    with open(pipeline["artifact"]) as fh:
        backbone = json.load(fh)["backbone"]
    assert backbone["name"] == "my-hf-clip" and backbone["file"] == pipeline["folder"]
    assert len(backbone["sha256"]) == 64 and len(backbone["config_sha256"]) == 64
    # tools/predict.py on the run folder (the folder is read from the artifact's record)
    with open(os.path.join(pipeline["data"], "split_zhou_ImageFolder.json")) as fh:
        test = json.load(fh)["test"]
    out_json = tmp_path / "pred.json"
    proc = subprocess.run([sys.executable, "tools/predict.py", "--run", pipeline["out"]["train"], "--topk", "1",
                           "--json", str(out_json), *(os.path.join(pipeline["data"], p) for p, _, _ in test)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with open(out_json) as fh:
        preds = json.load(fh)
    names = ["blue", "green frog", "red fox"]
    correct = sum(int(p["topk"][0]["class"] == names[label]) for p, (_, label, _) in zip(preds, test))
    assert round(100 * correct / len(test), 1) == final_accuracy(os.path.join(pipeline["out"]["eval"], "log.txt"))


@pytest.mark.slow
def test_train_refuses_an_artifact_searched_on_other_weights(pipeline, tmp_path):
    from tests.helpers.runs import train_args

    other = write_tiny_hf_clip(tmp_path / "other", "gelu", "quick_gelu", fmt="bin", seed=3,
                               preprocessor=PREPROCESSOR)
    argv = train_args("DPLTrain", "vit_b16", "imagefolder", pipeline["data"], tmp_path / "out",
                      extra=[*model_opts(other), "OPTIM.MAX_EPOCH", "1",
                             "TRAINER.DPL.CONFIG_FILE", pipeline["artifact"]])
    proc = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "sha256" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_train_py_refuses_a_siglip_folder_in_one_line(folders, tmp_path):
    from tests.helpers.runs import train_args
    from tests.test_own_data import make_imagefolder

    folder = shutil.copytree(folders["quick_gelu-safetensors"], tmp_path / "siglip")
    edit_config(folder, _siglip)
    argv = train_args("DPLSearch", "vit_b16", "imagefolder", make_imagefolder(tmp_path / "data"),
                      tmp_path / "out", extra=model_opts(str(folder)))
    proc = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "model_type 'siglip'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_report_largest_difference():
    """Prints the largest difference to transformers measured above (run with -s to see it)."""
    if MAX_DIFF:
        print(f"\nlargest |DPL - transformers {transformers.__version__}| per variant: "
              + ", ".join(f"{k} {v:.2e}" for k, v in MAX_DIFF.items()))
