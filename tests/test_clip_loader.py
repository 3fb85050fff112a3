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
