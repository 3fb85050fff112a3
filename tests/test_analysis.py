"""The paper's analyses as tools: α evolution plot, Grad-CAM, cost of a configuration (tiny CLIP)."""
import copy
import errno
import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import dpl.io
import dpl.plots
from dpl.artifact import fixed_artifact, save_artifact
from dpl.attention import prompted_block
from dpl.clip_loader import load_clip
from dpl.baselines import build_maple
from dpl.cost import (ForwardFlops, clip_flops, coop_parameters, count_flops, dpl_cost,
                      dpl_parameters, ivlp_parameters, maple_parameters, model_flops,
                      random_init_clip)
from dpl.gradcam import grad_cam, set_class_text
from dpl.io import atomic_write_json
from dpl.model import build_fixed_model, model_dims
from dpl.search import AlphaHistory
from tests.helpers.runs import REPO
from tools import complexity, gradcam, plot_alpha

TEXT_LENGTHS, VISION_LENGTHS = [2, 0, 1], [1, 3]  # tiny CLIP: 3 text blocks, 2 image blocks


@pytest.fixture(scope="module")
def clip(tiny_clip_path):
    return load_clip("tiny", tiny_clip_path, config="openai")


@pytest.fixture(scope="module")
def meta_clip(clip):
    """The same CLIP on the meta device: FLOP counts without compute (see the meta test)."""
    return copy.deepcopy(clip).to("meta")


@pytest.fixture(scope="module")
def dims(clip):
    return model_dims(clip)


# ----------------------------------------------------------------------------------------------
# α evolution
# ----------------------------------------------------------------------------------------------
def write_history(run_dir, epochs: int, seed: int) -> None:
    """A DPLSearch-like alpha_history.json: α drifting randomly away from 0 for ``epochs`` epochs."""
    gen = torch.Generator().manual_seed(seed)
    history = AlphaHistory({"text": [0, 2, 4], "vision": [0, 2, 4]}, 0.5)
    for epoch in range(1, epochs + 1):
        history.add(epoch, {"text": epoch * torch.randn(3, 3, generator=gen),
                            "vision": epoch * torch.randn(2, 3, generator=gen)})
    atomic_write_json(os.path.join(run_dir, "alpha_history.json"), history.records)


def test_evolution_plot_has_one_panel_per_run_and_epoch(tmp_path, monkeypatch):
    runs = [tmp_path / "caltech101", tmp_path / "dtd"]
    write_history(runs[0], epochs=5, seed=0)
    write_history(runs[1], epochs=3, seed=1)
    figures = []
    original = dpl.plots.save_figure

    def spy(fig, path):
        heatmaps = [ax for ax in fig.axes if ax.images]  # not the colour bar
        figures.append(([ax.get_title() for ax in heatmaps], [ax.get_ylabel() for ax in heatmaps],
                        fig.get_suptitle()))
        return original(fig, path)

    monkeypatch.setattr(dpl.plots, "save_figure", spy)
    out = tmp_path / "evolution.png"
    plot_alpha.main(["--evolution", *map(str, runs), "--epochs", "1", "2", "5",
                     "--branch", "vision", "--out", str(out)])
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width > 300
    ((titles, ylabels, suptitle),) = figures
    assert len(titles) == 2 * 3
    assert titles[:3] == ["epoch 1", "epoch 2", "epoch 5"]       # column headers
    assert titles[3:] == ["", "", "epoch 3 (last)"]              # epoch 5 clipped to dtd's last
    assert ylabels[0] == "caltech101\nblock" and ylabels[3] == "dtd\nblock"  # row headers
    assert "image encoder" in suptitle


def test_evolution_of_a_missing_history_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        plot_alpha.main(["--evolution", str(tmp_path), "--out", str(tmp_path / "x.png")])
    assert err.value.code == 2
    assert "alpha_history.json does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Grad-CAM
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prompted(clip):
    torch.manual_seed(0)
    return build_fixed_model(clip, ["banded"], TEXT_LENGTHS, VISION_LENGTHS)


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def test_gradcam_map_is_image_sized_unit_range_and_class_specific(prompted, image):
    set_class_text(prompted, ["banded"])
    banded = grad_cam(prompted, image)
    set_class_text(prompted, ["woven"])
    woven = grad_cam(prompted, image)
    assert banded.shape == (1, 32, 32)
    assert banded.min() >= 0 and banded.max() <= 1
    assert banded.std() > 0.05  # not constant
    assert (banded - woven).abs().max() > 0.05


def reference_cam(model, images, block):
    """The Grad-CAM recipe on a forward split by hand at the input of image block ``block``."""
    visual = model.image_encoder.visual
    prompts = model.prompt_learner.vision.per_block()
    blocks = list(visual.transformer.resblocks)
    x = model.image_encoder.embed(images)
    for blk, prompt in zip(blocks[:block], prompts[:block]):
        x = prompted_block(blk, x, prompt, None, x.shape[1])
    stream = x.detach().requires_grad_(True)
    x = stream
    for blk, prompt in zip(blocks[block:], prompts[block:]):
        x = prompted_block(blk, x, prompt, None, x.shape[1])
    feats = F.normalize(visual.ln_post(x[:, 0]) @ visual.proj, dim=-1)
    with torch.no_grad():
        text = model.encode_text()
    (model.logit_scale.exp() * feats @ text.t())[:, 0].sum().backward()
    grid = 4
    acts, grads = stream.detach()[:, 1:1 + grid * grid], stream.grad[:, 1:1 + grid * grid]
    cam = F.relu((acts * grads.mean(dim=1, keepdim=True)).sum(-1)).view(-1, 1, grid, grid)
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    low, high = cam.amin(dim=(1, 2), keepdim=True), cam.amax(dim=(1, 2), keepdim=True)
    return (cam - low) / (high - low)


@pytest.mark.parametrize("block", [0, 1])
def test_gradcam_hook_captures_the_stream_entering_the_block(prompted, image, block):
    # Both image blocks hold prompts, so ln_1 also sees a 2-D prompt tensor that must be skipped.
    set_class_text(prompted, ["banded"])
    expected = reference_cam(prompted, image, block)
    assert torch.allclose(grad_cam(prompted, image, block=block), expected, atol=1e-5)
    assert torch.allclose(grad_cam(prompted, image, block=block - 2), expected, atol=1e-5)


def test_gradcam_template_changes_the_class_sentence(prompted, image):
    set_class_text(prompted, ["banded"])
    own = grad_cam(prompted, image)
    set_class_text(prompted, ["banded"], "a photo of a {}.")  # DPL's default input: same sentence
    assert torch.equal(grad_cam(prompted, image), own)
    set_class_text(prompted, ["banded"], "a texture of {}.")
    assert (grad_cam(prompted, image) - own).abs().max() > 1e-3


def test_gradcam_works_with_in_sequence_prompts_of_a_baseline(clip, image):
    torch.manual_seed(0)
    maple = build_maple(clip, ["banded"], n_ctx=2, depth=2)  # 2 extra tokens at both image blocks
    banded = grad_cam(maple, image)
    set_class_text(maple, ["woven"], "a texture of {}.")  # a baseline keeps its own sentence
    woven = grad_cam(maple, image)
    assert banded.shape == (1, 32, 32) and banded.std() > 0.05
    assert (banded - woven).abs().max() > 0.05


def test_gradcam_rejects_a_block_out_of_range(prompted, image):
    with pytest.raises(ValueError, match="block 2 is out of range"):
        grad_cam(prompted, image, block=2)


def run_args(root, clip_path, *extra, trainer="DPLTrain", config="vit_b16", opts=()):
    """train.py flags (``extra`` included) then opts, for the tiny CLIP on the miniature DTD."""
    return ["--root", str(root), "--trainer", trainer,
            "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "dtd.yaml"),
            "--config-file", os.path.join(REPO, "configs", "trainers", trainer, f"{config}.yaml"),
            *extra, "MODEL.BACKBONE.NAME", "tiny", "MODEL.BACKBONE.PATH", str(clip_path),
            "MODEL.BACKBONE.CONFIG", "openai",
            "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", *opts]


@pytest.fixture(scope="module")
def saved_run(data_root, tiny_clip_path, tmp_path_factory):
    """A DPLTrain output dir (prompt_config.json + prompt checkpoint of epoch 1), no training."""
    out = tmp_path_factory.mktemp("run")
    trainer = gradcam.trainer_from_args(
        run_args(data_root, tiny_clip_path, "--output-dir", str(out),
                 opts=["TRAINER.DPL.MANUAL.TEXT_LENGTH", "2", "TRAINER.DPL.MANUAL.VISION_LENGTH", "3"]),
        str(out))
    with torch.no_grad():
        for i, p in enumerate(trainer.model.prompt_parameters()):
            p.fill_(0.1 * (i + 1))
    trainer.save_model(0, str(out))
    return out, {k: v.clone() for k, v in trainer.model.prompt_learner.state_dict().items()}


def test_run_model_loads_the_run_prompts_and_configuration(saved_run, data_root, tiny_clip_path,
                                                           tmp_path, monkeypatch):
    out, saved = saved_run
    monkeypatch.chdir(tmp_path)
    args = run_args(data_root, tiny_clip_path, "--model-dir", str(out), "--load-epoch", "1")
    trainer = gradcam.trainer_from_args(args, str(tmp_path))  # config from out/prompt_config.json
    state = trainer.model.prompt_learner.state_dict()
    assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)
    assert not os.path.exists("output")  # side files go to the work dir, not ./output


def test_a_run_recorded_before_config_openai_still_loads(saved_run, tmp_path):
    """Artifacts of earlier versions record config "" for an OpenAI-format file under a name of
    one's own (then read as OpenAI's, now refused without MODEL.BACKBONE.CONFIG): load_classifier
    reads them as before."""
    from dpl import load_classifier

    out, _ = saved_run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    path = old / "prompt_config.json"
    art = json.loads(path.read_text())
    assert art["backbone"]["name"] == "tiny" and art["backbone"]["config"] == "openai"
    art["backbone"]["config"] = ""
    path.write_text(json.dumps(art))
    image = Image.new("RGB", (40, 36), (30, 200, 30))
    assert torch.equal(load_classifier(str(old)).predict(image), load_classifier(str(out)).predict(image))


def test_gradcam_cli_writes_side_by_side_png(saved_run, data_root, tiny_clip_path, tmp_path,
                                             monkeypatch):
    out, _ = saved_run
    picture = tmp_path / "photo.png"
    Image.new("RGB", (48, 40), (200, 30, 30)).save(picture)
    figures = []
    original = dpl.plots.save_figure
    monkeypatch.setattr(dpl.plots, "save_figure",
                        lambda fig, path: figures.append(len(fig.axes)) or original(fig, path))
    dpl_run = shlex.join(run_args(data_root, tiny_clip_path, "--model-dir", str(out),
                                "--load-epoch", "1"))
    maple_run = shlex.join(run_args(data_root, tiny_clip_path, trainer="MaPLe",
                                    config="vit_b16_c2_ep5_batch4_2ctx",
                                    opts=["TRAINER.MAPLE.PREC", "fp32"]))
    png = tmp_path / "cam.png"
    gradcam.main(["--image", str(picture), "banded", "--image", str(picture), "woven",
                  "--zeroshot", "--backbone", "tiny", "--clip-config", "openai",
                  "--clip-checkpoint", str(tiny_clip_path), "--run", "DPL", dpl_run,
                  "--run", "MaPLe", maple_run, "--out", str(png)])
    with Image.open(png) as img:
        assert img.format == "PNG"
    assert figures == [2 * 4 + 1]  # 2 images x (input, CLIP, DPL, MaPLe) + the colour bar


def test_complexity_of_a_run_equals_its_configuration(saved_run, data_root, tiny_clip_path, clip):
    out, _ = saved_run
    args = shlex.join(run_args(data_root, tiny_clip_path, "--model-dir", str(out), "--load-epoch", "1"))
    reference = clip_flops(clip)
    row = complexity.run_row("DPL run", args, "tiny", reference, str(out / "work"))
    expected = dpl_cost(clip, [2, 2, 2], [3, 3], reference)  # the run's manual configuration
    assert row.params == expected.params == 6 * 64 + 6 * 128
    assert row.flops.image == expected.flops.image and row.extra.image == expected.extra.image
    # The run's class names are longer than the placeholder's: its text runs on more tokens.
    assert row.flops.text_tokens == 10 > expected.flops.text_tokens == 8
    assert row.flops.text > expected.flops.text


# ----------------------------------------------------------------------------------------------
# Cost of a configuration
# ----------------------------------------------------------------------------------------------
def test_trainable_parameters_are_length_times_width(clip, dims):
    cost = dpl_cost(clip, TEXT_LENGTHS, VISION_LENGTHS)
    assert cost.params == 3 * 64 + 4 * 128
    assert cost.params == dpl_parameters(TEXT_LENGTHS, VISION_LENGTHS, dims["text"]["width"],
                                         dims["vision"]["width"])


def test_all_zero_configuration_costs_exactly_frozen_clip(clip):
    frozen = clip_flops(clip)
    cost = dpl_cost(clip, [0, 0, 0], [0, 0])
    assert cost.params == 0 and cost.flops == frozen and cost.extra == ForwardFlops(0, 0)
    assert frozen.image > 0 and frozen.text > 0


def test_one_prompt_token_costs_its_keys_values_and_attention(meta_clip):
    """Extra FLOPs of c tokens at one block: K/V projections 2·(2cW²) + scores/values 2·(2LcW).

    This fails if attention were invisible to the counter (fused SDPA / MHA fast path).
    """
    base = dpl_cost(meta_clip, [0, 0, 0], [0, 0]).flops
    one = dpl_cost(meta_clip, [0, 1, 0], [0, 1]).flops - base
    assert one.image == 4 * 128 ** 2 + 4 * 17 * 128    # 17 image tokens, width 128
    # "a photo of a object." is 8 tokens with SOS/EOT: the text tower runs on those, not 77.
    assert one.text_tokens == base.text_tokens == 8
    assert one.text == 4 * 64 ** 2 + 4 * 8 * 64        # 8 text tokens, width 64


def test_flops_grow_with_total_prompt_length(meta_clip):
    reference = clip_flops(meta_clip)
    configs = [([1, 0, 0], [1, 0]), ([1, 1, 0], [1, 1]), ([2, 1, 1], [2, 1]), ([4, 4, 4], [4, 4])]
    extra = [dpl_cost(meta_clip, t, v, reference).extra for t, v in configs]
    assert all(a.image < b.image and a.text < b.text for a, b in zip(extra, extra[1:]))
    assert extra[0].image > 0 and extra[0].text > 0


def test_meta_device_counts_the_same_flops(clip, meta_clip, image):
    model = build_fixed_model(clip, ["x"], TEXT_LENGTHS, VISION_LENGTHS)
    on_meta = build_fixed_model(meta_clip, ["x"], TEXT_LENGTHS, VISION_LENGTHS)
    assert model_flops(model, image) == model_flops(on_meta, image.to("meta"))
    assert clip_flops(clip) == clip_flops(meta_clip)
    assert count_flops(lambda: None) == 0


def test_baseline_modules_match_their_parameter_formulas(meta_clip, dims):
    reference = clip_flops(meta_clip)

    def row(name, *opts, num_classes=None):
        return complexity.baseline_row(name, "", list(opts), meta_clip, reference, num_classes)

    t, v = dims["text"]["width"], dims["vision"]["width"]
    assert row("coop", "TRAINER.COOP.N_CTX", "4").params == coop_parameters(4, t) == 4 * t
    csc = row("coop", "TRAINER.COOP.N_CTX", "4", "TRAINER.COOP.CSC", "True", num_classes=5)
    assert csc.params == coop_parameters(4, t, csc=True, num_classes=5) == 4 * t * 5
    assert csc.extra == ForwardFlops(0, 0)  # the context replaces tokens: CLIP's own FLOPs
    ivlp = row("ivlp", "TRAINER.IVLP.N_CTX_TEXT", "2", "TRAINER.IVLP.N_CTX_VISION", "3",
               "TRAINER.IVLP.PROMPT_DEPTH_TEXT", "3", "TRAINER.IVLP.PROMPT_DEPTH_VISION", "2")
    assert ivlp.params == ivlp_parameters(2, 3, 3, 2, t, v) == 2 * t * 3 + 3 * v * 2
    assert ivlp.label == "IVLP (2+3 ctx, depth 3/2)" and ivlp.extra.image > 0
    # MaPLe: depth x (text tokens + one text->vision linear map), layer 0's map included.
    maple = row("maple", "TRAINER.MAPLE.N_CTX", "2", "TRAINER.MAPLE.PROMPT_DEPTH", "2")
    assert maple.params == maple_parameters(2, 2, t, v) == 2 * 2 * t + 2 * (t * v + v)
    with pytest.raises(ValueError, match="--num-classes"):
        row("coop", "TRAINER.COOP.CSC", "True")


def test_vit_b16_defaults_match_the_papers_numbers():
    """Random-init ViT-B/16 on meta: MaPLe's default setting has the paper's "3.56M" parameters."""
    vit_b16 = random_init_clip("ViT-B/16")
    assert model_dims(vit_b16) == {"text": {"num_blocks": 12, "width": 512},
                                   "vision": {"num_blocks": 12, "width": 768}}
    reference = clip_flops(vit_b16)
    maple = complexity.baseline_row("maple", "", [], vit_b16, reference)
    assert maple.params == 3_555_072 and maple.label == "MaPLe (2 ctx, depth 9)"
    assert complexity.baseline_row("ivlp", "", [], vit_b16, reference).params == 2 * 512 * 9 + 2 * 768 * 9
    assert complexity.baseline_row("coop", "", [], vit_b16, reference).params == 16 * 512
    # The Caltech101 text configuration read from the paper's Fig. 2 (54 tokens).
    caltech = dpl_cost(vit_b16, [6, 6, 6, 0, 0, 6, 6, 6, 6, 4, 4, 4], [0] * 12, reference)
    assert caltech.params == 54 * 512 and caltech.extra.image == 0 and caltech.extra.text > 0


def test_complexity_cli_table_json_and_plot(clip, dims, tiny_clip_path, tmp_path, capsys):
    arts = []
    for name, (text, vision) in {"caltech101": ([2, 0, 1], [1, 3]), "dtd": ([0, 0, 4], [0, 0])}.items():
        path = tmp_path / name / "prompt_config.json"
        save_artifact(str(path), fixed_artifact("tiny", dims, text, vision, {"dataset": name}))
        arts.append(str(path))
    out_json, out_png = tmp_path / "cost.json", tmp_path / "cost.png"
    complexity.main(["--backbone", "tiny", "--clip-config", "openai",
                     "--clip-checkpoint", str(tiny_clip_path),
                     "--artifacts", *arts, "--uniform", "1", "-1", "--baseline", "coop",
                     "--json", str(out_json), "--plot", str(out_png)])
    rows = {r["label"]: r for r in json.load(open(out_json))}
    assert list(rows) == ["frozen CLIP", "caltech101", "dtd", "uniform 1 x all", "CoOp (16 ctx)"]
    assert rows["caltech101"]["params"] == 3 * 64 + 4 * 128
    assert rows["dtd"]["params"] == 4 * 64 and rows["dtd"]["extra_image_flops"] == 0
    assert rows["uniform 1 x all"]["params"] == 3 * 64 + 2 * 128
    # 16 context tokens make a 20-token sentence vs CLIP's 8: truncated text costs more.
    assert rows["CoOp (16 ctx)"]["params"] == 16 * 64 and rows["CoOp (16 ctx)"]["extra_text_flops"] > 0
    assert rows["frozen CLIP"]["extra_text_flops"] == 0
    with Image.open(out_png) as png:
        assert png.format == "PNG"
    out = capsys.readouterr().out
    assert "caltech101" in out and "frozen CLIP 8, " in out and "CoOp (16 ctx) 20." in out


def test_complexity_cli_names_a_mismatched_artifact(dims, tiny_clip_path, tmp_path, capsys):
    other = {"text": {"num_blocks": 12, "width": 512}, "vision": {"num_blocks": 12, "width": 768}}
    path = tmp_path / "vit_b16.json"
    save_artifact(str(path), fixed_artifact("ViT-B/16", other, [0] * 12, [0] * 12, {}))
    with pytest.raises(SystemExit) as err:
        complexity.main(["--backbone", "tiny", "--clip-config", "openai",
                         "--clip-checkpoint", str(tiny_clip_path),
                         "--artifacts", str(path)])
    line = capsys.readouterr().err
    assert err.value.code == 2 and "vit_b16.json" in line and "width 512" in line


# ----------------------------------------------------------------------------------------------
# Mistakes with the tools' files: one line naming the path, exit status 2, nothing measured
# ----------------------------------------------------------------------------------------------
def one_error_line(capsys, prog: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"{prog}: error: "), err
    return err


def test_plot_alpha_names_a_truncated_history(tmp_path):
    write_history(tmp_path, epochs=2, seed=0)
    history = tmp_path / "alpha_history.json"
    history.write_text(history.read_text()[:100])
    result = subprocess.run([sys.executable, os.path.join(REPO, "tools", "plot_alpha.py"),
                             str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line, no traceback
    assert str(history) in result.stderr and "not valid JSON" in result.stderr


def test_plot_alpha_out_below_a_file_is_one_line(tmp_path, capsys):
    write_history(tmp_path, epochs=2, seed=0)
    (tmp_path / "notes.txt").write_text("a file")
    out = tmp_path / "notes.txt" / "evolution.png"
    with pytest.raises(SystemExit) as err:
        plot_alpha.main(["--evolution", str(tmp_path), "--out", str(out)])
    assert err.value.code == 2
    line = one_error_line(capsys, "plot_alpha.py")
    assert str(out) in line and "is a file" in line


def test_plot_alpha_into_a_read_only_folder_is_one_line(tmp_path, capsys, monkeypatch):
    write_history(tmp_path, epochs=2, seed=0)
    tmp_path.chmod(0o555)
    if os.access(tmp_path, os.W_OK):  # root ignores the mode: fail the write as the kernel would
        def refuse(*args, dir=None, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", dir)
        monkeypatch.setattr(dpl.io.tempfile, "mkstemp", refuse)
    try:
        with pytest.raises(SystemExit) as err:  # heatmap and convergence go into the run folder
            plot_alpha.main([str(tmp_path)])
        with pytest.raises(SystemExit):
            plot_alpha.main(["--evolution", str(tmp_path), "--out", str(tmp_path / "evo.png")])
    finally:
        tmp_path.chmod(0o755)
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("plot_alpha.py: error: ") for line in lines)
    assert all(str(tmp_path) in line and ("Permission denied" in line or "not writable" in line)
               for line in lines)


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_complexity_refuses_unwritable_outputs_before_measuring(tmp_path, capsys, monkeypatch,
                                                                flag):
    monkeypatch.setattr(complexity, "load_backbone",
                        lambda *a: pytest.fail("measured before checking the outputs"))
    (tmp_path / "notes.txt").write_text("a file")
    for path, words in ((tmp_path, "is a folder"), (tmp_path / "notes.txt" / "out", "is a file")):
        with pytest.raises(SystemExit) as err:
            complexity.main(["--random-init", "ViT-B/16", flag, str(path)])
        line = one_error_line(capsys, "complexity.py")
        assert err.value.code == 2 and f"{flag} {path}" in line and words in line


def test_complexity_uniform_depth_beyond_the_model_is_labelled_clamped(tiny_clip_path, tmp_path,
                                                                      capsys):
    out = tmp_path / "cost.json"
    complexity.main(["--backbone", "tiny", "--clip-config", "openai",
                     "--clip-checkpoint", str(tiny_clip_path),
                     "--uniform", "2", "40", "--uniform", "2", "2", "--json", str(out)])
    rows = {r["label"]: r for r in json.load(open(out))}
    label = "uniform 2 x 3 text / 2 image (depth 40 clamped)"  # tiny CLIP: 3 text, 2 image blocks
    assert rows[label]["params"] == 2 * 3 * 64 + 2 * 2 * 128
    assert rows["uniform 2 x 2"]["params"] == 2 * 2 * 64 + 2 * 2 * 128
    captured = capsys.readouterr()
    assert label in captured.out and "depth is clamped" in captured.err
