"""The offline demo: a deterministic world, its micro-CLIP (shipped weights and the recipe that
made them), the demo datasets. Nothing here pretrains a full model: the tests that need a trained
CLIP load the committed weights."""
import json
import os
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip import tokenize
from PIL import Image

from demo import pretrain, world
from dpl.clip_loader import load_clip, read_openai_state_dict, save_openai_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = world.TASKS["DemoShapes"]


def draw(seed, n=48):
    gen = torch.Generator().manual_seed(seed)
    scenes = world.sample_scenes(n, gen, world.seen_combos())
    return scenes, world.render(scenes, gen)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_data")
    world.write_demo_dataset(str(root), "DemoShapes")
    return root


# --------------------------------------------------------------------------- the world

def test_world_is_deterministic_from_its_seed():
    scenes_a, images_a = draw(3)
    scenes_b, images_b = draw(3)
    _, images_c = draw(4)
    assert images_a.dtype == torch.uint8 and images_a.shape == (48, 3, world.IMAGE_SIZE, world.IMAGE_SIZE)
    assert torch.equal(images_a, images_b)
    assert torch.equal(scenes_a.shape, scenes_b.shape) and torch.equal(scenes_a.color, scenes_b.color)
    assert not torch.equal(images_a, images_c)
    for split in world.SPLITS:
        assert torch.equal(world.task_split(TASK, split)[0], world.task_split(TASK, split)[0])
    assert not torch.equal(world.task_split(TASK, "test")[0], world.task_split(TASK, "test", seed=1)[0])


def test_pretraining_world_never_draws_held_out_pairs():
    scenes, _ = draw(0, n=3000)
    pairs = {(world.COLOR_NAMES[c], world.SHAPES[s]) for c, s in zip(scenes.color.tolist(), scenes.shape.tolist())}
    assert not pairs & set(world.HELD_OUT)
    assert len(pairs) == len(world.COLORS) * len(world.SHAPES) - len(world.HELD_OUT)


def test_render_draws_the_object_in_its_colour_at_the_centre():
    n = len(world.COLORS)
    scenes = world.Scenes(color=torch.arange(n), shape=torch.full((n,), world.SHAPES.index("square")),
                          size=torch.full((n,), world.SIZE_NAMES.index("large")),
                          background=torch.zeros(n, dtype=torch.long))
    images = world.render(scenes, torch.Generator().manual_seed(0)).float() / 255
    mid = world.IMAGE_SIZE // 2
    centre = images[:, :, mid - 1:mid + 1, mid - 1:mid + 1].mean((2, 3))        # (colours, 3)
    corner = images[:, :, :3, :3].mean((2, 3))
    expected = torch.tensor(list(world.COLORS.values()))
    assert (centre - expected).abs().max() < 0.2
    assert ((corner - expected).abs().max(1).values > 0.2).all()   # the corner is background


# --------------------------------------------------------------------------- pretraining pieces

def test_short_prefix_text_encoding_equals_encode_text():
    config = replace(pretrain.FULL, vision_width=64, vision_layers=1, text_layers=2)
    model = pretrain.build_model(config).eval()
    bank = pretrain.build_caption_bank()
    prefix = bank.tokens[::37]                                  # (m, L) with L << 77
    full = torch.zeros(len(prefix), 77, dtype=torch.long)
    full[:, :prefix.shape[1]] = prefix
    with torch.no_grad():
        torch.testing.assert_close(pretrain.encode_text_prefix(model, prefix), model.encode_text(full),
                                   atol=1e-5, rtol=1e-5)


def test_caption_positives_follow_the_attributes():
    bank = pretrain.build_caption_bank()
    red, blue = world.COLOR_NAMES.index("red"), world.COLOR_NAMES.index("blue")
    square = world.SHAPES.index("square")
    scenes = world.Scenes(color=torch.tensor([red, blue]), shape=torch.tensor([square, square]),
                          size=torch.tensor([0, 1]), background=torch.tensor([0, 0]))
    color_only = pretrain.TEMPLATES.index("a photo of a {color} object.")
    shape_only = pretrain.TEMPLATES.index("a photo of a {shape}.")
    captions = torch.stack([bank.lookup[color_only, 0, red, square, 0], bank.lookup[shape_only, 1, blue, square, 0]])
    pos = pretrain.positives(bank, scenes, captions)
    # "a photo of a red object." fits only the red square; "a photo of a square." fits both.
    assert pos.tolist() == [[True, True], [False, True]]


def test_pretraining_is_deterministic_from_its_seed():
    config = replace(pretrain.FULL, vision_width=64, vision_layers=1, text_layers=1, steps=2, batch_size=8)
    a, b = pretrain.pretrain(config, log=lambda _: None), pretrain.pretrain(config, log=lambda _: None)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    c = pretrain.pretrain(replace(config, seed=1), log=lambda _: None)
    assert not torch.equal(a.visual.conv1.weight, c.visual.conv1.weight)


def test_get_demo_clip_returns_the_shipped_weights_without_pretraining(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pretrained although the weights are shipped")

    monkeypatch.setattr(pretrain, "pretrain", refuse)
    lines = []
    for variant, shipped in pretrain.SHIPPED.items():
        path = pretrain.get_demo_clip(variant, log=lines.append)
        assert path == os.path.join(REPO, "demo", "weights", shipped.file)
    assert all("verified" in line and pretrain.SHIPPED[v].sha256 in line
               for line, v in zip(lines, pretrain.SHIPPED))


def test_shipped_weights_have_the_stated_sha256():
    docs = open(os.path.join(REPO, "docs/DEMO.md"), encoding="utf-8").read()
    for variant, shipped in pretrain.SHIPPED.items():
        assert pretrain.file_sha256(shipped.path) == shipped.sha256, variant
        assert shipped.sha256 in docs, f"docs/DEMO.md does not state the {variant} weights' SHA-256"
        assert os.path.getsize(shipped.path) < 10 * 2 ** 20   # a few MB: fp16, committed


def test_a_changed_weights_file_is_refused_with_one_line(tmp_path, monkeypatch):
    import shutil

    from dpl.errors import UserError

    shipped = pretrain.SHIPPED["base"]
    copy = tmp_path / shipped.file
    shutil.copyfile(shipped.path, copy)
    with open(copy, "r+b") as fh:                    # one flipped byte in the last tensor
        fh.seek(-3, os.SEEK_END)
        byte = fh.read(1)
        fh.seek(-3, os.SEEK_END)
        fh.write(bytes([byte[0] ^ 1]))
    monkeypatch.setattr(pretrain, "WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(UserError, match=r"has SHA-256 [0-9a-f]{64}, expected .*git checkout") as err:
        pretrain.get_demo_clip()
    assert "\n" not in str(err.value)
    copy.unlink()
    with pytest.raises(UserError, match="is missing"):
        pretrain.get_demo_clip()
    with pytest.raises(UserError, match="depth12"):
        pretrain.get_demo_clip("depth-12")


def test_export_writes_fp16_safetensors_that_load_as_the_model(tmp_path):
    from safetensors.torch import load_file

    config = replace(pretrain.FULL, vision_layers=1, text_layers=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = pretrain.build_model(config).eval()
    path = str(tmp_path / "w.safetensors")
    digest = pretrain.export_weights(model, path, config)
    assert digest == pretrain.file_sha256(path)
    state = load_file(path)
    assert all(t.dtype == torch.float16 for t in state.values() if t.is_floating_point())
    used = pretrain.trained_token_ids()
    emb = state["token_embedding.weight"]
    assert emb[used].abs().sum(1).min() > 0                     # caption tokens kept
    unused = torch.ones(len(emb), dtype=torch.bool)
    unused[used] = False
    assert emb[unused].abs().max() == 0                         # never-trained rows zeroed
    loaded = load_clip("demo", path)
    torch.testing.assert_close(loaded.visual.conv1.weight, model.visual.conv1.weight.half().float())
    assert pretrain.export_weights(model, str(tmp_path / "again.safetensors"), config) == digest


@pytest.mark.parametrize("variant", sorted(pretrain.SHIPPED))
def test_the_recipes_export_reproduces_the_shipped_bytes(variant, tmp_path):
    from safetensors.torch import load_file

    shipped = pretrain.SHIPPED[variant]
    model = pretrain.build_model(shipped.config)
    missing, unexpected = model.load_state_dict(
        {k: v.float() for k, v in load_file(shipped.path).items()}, strict=False)
    assert not unexpected and set(missing) <= {"attn_mask"}
    assert pretrain.export_weights(model, str(tmp_path / "w.safetensors"), shipped.config) == shipped.sha256


@pytest.mark.parametrize("variant", sorted(pretrain.SHIPPED))
def test_shipped_weights_are_a_working_clip(variant):
    model = load_clip("demo", pretrain.get_demo_clip(variant))
    depth = pretrain.SHIPPED[variant].config
    assert len(model.visual.transformer.resblocks) == depth.vision_layers
    assert len(model.transformer.resblocks) == depth.text_layers
    for name in ("DemoCombos", "DemoColors"):
        task = world.TASKS[name]
        accuracy = pretrain.zero_shot_accuracy(model, task)
        assert accuracy >= 3 / len(task.classes), (variant, name, accuracy)   # >= 3x chance


# --------------------------------------------------------------------------- demo datasets

def test_every_colour_shape_task_holds_held_out_and_seen_classes():
    for task in world.TASKS.values():
        if set(task.attributes) != {"color", "shape"}:
            assert task.held_out_labels == ()
            continue
        assert 0 < len(task.held_out_labels) < len(task.classes), task.name
        assert {task.classnames[i] for i in task.held_out_labels} == {
            f"{c} {s}" for c, s in world.HELD_OUT if (c, s) in task.classes}


def test_written_dataset_is_coop_format_with_held_out_classes(demo_root):
    assert len(TASK.held_out_labels) == len(world.HELD_OUT)
    dataset_dir = demo_root / TASK.dataset_dir
    split = json.loads((dataset_dir / "split_zhou_DemoShapes.json").read_text())
    assert set(split) == {"train", "val", "test"}
    for part, n_per in zip(world.SPLITS, TASK.per_class):
        entries = split[part]
        assert len(entries) == n_per * len(TASK.classes)
        assert all(TASK.classnames[label] == name for _, label, name in entries)
        assert {label for _, label, _ in entries} >= set(TASK.held_out_labels)
        images, labels = world.task_split(TASK, part)
        for i in (0, len(entries) // 2, len(entries) - 1):     # PNGs hold exactly the world's pixels
            relpath, label, _ = entries[i]
            pixels = np.asarray(Image.open(dataset_dir / "images" / relpath).convert("RGB"))
            assert label == labels[i] and np.array_equal(pixels, images[i].permute(1, 2, 0).numpy())


@pytest.mark.parametrize("name", sorted(world.TASKS))
def test_registered_dataset_generates_itself_and_samples_shots(name, tmp_path):
    from dassl.config import get_cfg_default
    from dassl.data.datasets import build_dataset
    import datasets.demo_shapes  # noqa: F401  (registers the demo datasets)

    task = world.TASKS[name]
    config_file = os.path.join(REPO, "configs", "datasets", f"{task.dataset_dir}.yaml")
    cfg = get_cfg_default()
    cfg.merge_from_file(config_file)
    assert cfg.DATASET.NAME == name
    cfg.DATASET.ROOT = str(tmp_path)                            # nothing there yet
    cfg.DATASET.NUM_SHOTS = 2
    cfg.SEED = 1
    random.seed(cfg.SEED)
    ds = build_dataset(cfg)
    assert (tmp_path / task.dataset_dir / f"split_zhou_{name}.json").is_file()
    assert ds.classnames == list(task.classnames) and ds.num_classes == len(task.classes)
    assert len(ds.train_x) == 2 * len(task.classes) and len(ds.val) == 2 * len(task.classes)
    assert len(ds.test) == task.per_class[2] * len(task.classes)
    assert all(os.path.isfile(item.impath) for item in ds.train_x)


# --------------------------------------------------------------------------- the pretrained CLIP

def test_demo_clip_round_trips_bit_exactly(demo_clip, tmp_path):
    model = load_clip("demo", demo_clip)
    stored = read_openai_state_dict(demo_clip)
    loaded = model.state_dict()
    assert set(stored) <= set(loaded)
    for name, tensor in stored.items():
        assert torch.equal(loaded[name], tensor.float()), name
    assert model.visual.conv1.weight.shape[-1] == pretrain.FULL.patch_size
    copy = str(tmp_path / "again.pt")
    save_openai_checkpoint(model, copy)
    for name, tensor in read_openai_state_dict(copy).items():
        assert torch.equal(stored[name].float(), tensor.float()), name


def test_demo_clip_zero_shot_is_well_above_chance(demo_clip, demo_root):
    model = load_clip("demo", demo_clip)
    dataset_dir = demo_root / TASK.dataset_dir
    entries = json.loads((dataset_dir / "split_zhou_DemoShapes.json").read_text())["test"]
    pixels = np.stack([np.asarray(Image.open(dataset_dir / "images" / p).convert("RGB")) for p, _, _ in entries])
    images = pretrain.normalize_images(torch.from_numpy(pixels).permute(0, 3, 1, 2))
    labels = torch.tensor([label for _, label, _ in entries])
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokenize([f"a photo of a {c}." for c in TASK.classnames])), dim=-1)
        image = F.normalize(model.encode_image(images), dim=-1)
    accuracy = ((image @ text.t()).argmax(1) == labels).float().mean().item()
    chance = 1 / len(TASK.classes)
    assert accuracy >= 4 * chance, f"zero-shot accuracy {accuracy:.3f} vs chance {chance:.3f}"
    assert accuracy < 0.95                                          # room for prompt learning
    # The CLI's in-memory report measures the same thing as these files.
    assert pretrain.zero_shot_accuracy(model, TASK) == pytest.approx(accuracy, abs=1e-6)
