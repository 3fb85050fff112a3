import pytest
import torch

from dpl.clip_loader import CheckpointError, load_clip, resolve_checkpoint
from tests.helpers.tiny_clip import TinyClipSpec, build_tiny_clip


def test_tiny_checkpoint_round_trips_bit_exactly(tiny_clip_path):
    loaded = load_clip("tiny", tiny_clip_path)
    ref = build_tiny_clip(TinyClipSpec())
    from open_clip.model import convert_weights_to_lp
    convert_weights_to_lp(ref)
    ref.float()
    ref_sd = ref.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ref_sd[k]), k
    assert all(not p.requires_grad for p in loaded.parameters())
    assert loaded.transformer.batch_first if hasattr(loaded.transformer, "batch_first") else True


def test_missing_checkpoint_names_expected_path(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_CACHE_DIR", str(tmp_path))
    with pytest.raises(CheckpointError, match=r"ViT-B-16\.pt"):
        resolve_checkpoint("ViT-B/16")
    with pytest.raises(CheckpointError, match="not found"):
        load_clip("ViT-B/16", str(tmp_path / "nope.pt"))


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_clip("ViT-B/16", str(bad))


def test_fp16_refused_on_cpu(tiny_clip_path):
    with pytest.raises(ValueError, match="CUDA"):
        load_clip("tiny", tiny_clip_path, precision="fp16", device="cpu")


# --- #23 case 16: a misspelt MODEL.BACKBONE.NAME -------------------------------------------------
@pytest.mark.parametrize("name", ["ViT-B-61", "vit-b-16", "ViT-B16"])
def test_misspelt_name_is_refused_in_one_line_listing_close_names(tmp_path, name):
    """An open_clip GELU file under a misspelt name was read as an OpenAI QuickGELU file."""
    from tests.helpers.tiny_open_clip import write_tiny_open_clip

    files = write_tiny_open_clip(tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_clip(name, files.bin)
    text = str(info.value)
    assert "\n" not in text and f"MODEL.BACKBONE.NAME {name!r}" in text
    assert "ViT-B-16" in text.split("close: ", 1)[1] and "MODEL.BACKBONE.CONFIG" in text
    with pytest.raises(CheckpointError, match=r"close names: ViT-B/16"):
        resolve_checkpoint("ViT-B/61")  # no file given: the OpenAI names it is close to


def test_names_far_from_known_ones_still_read_openai_files_and_say_so(tiny_clip_path, capsys):
    from dpl.clip_loader import close_names

    # every custom name the configs and tests use for OpenAI-format files
    assert [close_names(n) for n in ("tiny", "demo", "tiny-rn", "my-clip")] == [[]] * 4
    model = load_clip("tiny", tiny_clip_path)
    assert model.visual.transformer.resblocks[0].mlp.gelu.__class__.__name__ == "QuickGELU"
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "'tiny' is not an OpenAI or open_clip model name" in out


def test_openai_and_open_clip_names_are_not_checked(tiny_clip_path, capsys):
    load_clip("ViT-B/16", tiny_clip_path)
    assert capsys.readouterr().out == ""


@pytest.mark.slow
def test_train_py_refuses_a_misspelt_name_with_exit_2(tmp_path, data_root):
    import os
    import subprocess
    import sys

    from tests.helpers.runs import REPO, tiny_opts, train_args
    from tests.helpers.tiny_open_clip import write_tiny_open_clip

    files = write_tiny_open_clip(tmp_path / "clip")
    opts = tiny_opts(files.bin)
    opts[opts.index("tiny")] = "ViT-B-61"
    argv = train_args("DPLSearch", "vit_b16", "dtd", data_root, tmp_path / "out", extra=opts)
    proc = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "MODEL.BACKBONE.NAME 'ViT-B-61'" in proc.stderr and "ViT-B-16" in proc.stderr
