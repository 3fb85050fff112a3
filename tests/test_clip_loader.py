import pytest
import torch

from dpl.clip_loader import CheckpointError, load_clip, resolve_checkpoint
from tests.helpers.tiny_clip import TinyClipSpec, build_tiny_clip


def test_tiny_checkpoint_round_trips_bit_exactly(tiny_clip_path):
    loaded = load_clip("tiny", tiny_clip_path, config="openai")
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
        load_clip("tiny", tiny_clip_path, precision="fp16", device="cpu", config="openai")


# --- #23 case 16: a misspelt MODEL.BACKBONE.NAME -------------------------------------------------
@pytest.mark.parametrize("name", ["ViT-B-61", "vit-b-16", "ViT-B16"])
def test_misspelt_name_is_refused_in_one_line_listing_close_names(tmp_path, name):
    """An open_clip GELU file under a misspelt name was read as an OpenAI QuickGELU file."""
    from tests.helpers.tiny_open_clip import write_tiny_open_clip

    files = write_tiny_open_clip(tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_clip(name, files.bin)
    text = str(info.value)
    assert "\n" not in text and f"MODEL.BACKBONE.NAME {name!r}" in text and files.bin in text
    assert "ViT-B-16" in text.split("close names: ", 1)[1].split(")")[0]
    assert "MODEL.BACKBONE.CONFIG openai" in text
    with pytest.raises(CheckpointError, match=r"close names: ViT-B/16"):
        resolve_checkpoint("ViT-B/61")  # no file given: the OpenAI names it is close to


@pytest.mark.parametrize("name", ["my-laion", "tiny", "x"])
def test_names_far_from_known_ones_are_refused_too(tiny_clip_path, name):
    """No close name is no licence: the file's format still cannot be told from the name."""
    with pytest.raises(CheckpointError) as info:
        load_clip(name, tiny_clip_path)
    text = str(info.value)
    assert "\n" not in text and f"MODEL.BACKBONE.NAME {name!r}" in text
    assert "no known name is close to it" in text and "MODEL.BACKBONE.CONFIG openai" in text


def test_config_openai_reads_any_name_as_an_openai_file_and_is_recorded(tmp_path, tiny_clip_path, capsys):
    from dpl.clip_loader import backbone_record
    from tests.helpers.tiny_open_clip import write_tiny_open_clip

    model = load_clip("my-laion", tiny_clip_path, config="openai")
    assert model.visual.transformer.resblocks[0].mlp.gelu.__class__.__name__ == "QuickGELU"
    record = backbone_record(model)
    assert record["name"] == "my-laion" and record["config"] == "openai" and record["config_sha256"] is None
    # the explicit choice also holds for a file under open_clip's name (here a GELU one)
    files = write_tiny_open_clip(tmp_path)
    gelu = load_clip("DPLTest-Tiny-ViT", files.bin, config=files.config)
    forced = load_clip("DPLTest-Tiny-ViT", files.bin, config="openai")
    assert gelu.visual.transformer.resblocks[0].mlp.gelu.__class__.__name__ == "GELU"
    assert forced.visual.transformer.resblocks[0].mlp.gelu.__class__.__name__ == "QuickGELU"
    assert capsys.readouterr().out == ""


def test_openai_names_and_dpls_demo_name_need_no_config(tiny_clip_path, capsys):
    for name in ("ViT-B/16", "demo"):
        model = load_clip(name, tiny_clip_path)
        assert model.visual.transformer.resblocks[0].mlp.gelu.__class__.__name__ == "QuickGELU"
    assert capsys.readouterr().out == ""


def test_records_written_before_config_openai_reload_as_openai_files():
    from dpl.clip_loader import reload_config

    old = {"name": "tiny", "file": "/w/tiny.pt", "config": "", "sha256": "a" * 64, "config_sha256": None}
    assert reload_config(old) == "openai"
    assert reload_config({**old, "name": "ViT-B/16"}) == ""  # OpenAI's name: nothing to add
    assert reload_config({**old, "name": "ViT-B-16"}) == ""  # open_clip's bundled config
    assert reload_config({**old, "config": "/w/m.json", "config_sha256": "b" * 64}) == "/w/m.json"
    assert reload_config({**old, "config": "openai"}) == "openai"


@pytest.mark.slow
@pytest.mark.parametrize("name,near", [("ViT-B-61", "close names: ViT-B-16"),
                                       ("my-laion", "no known name is close to it")])
def test_train_py_refuses_an_unknown_name_with_exit_2(tmp_path, data_root, name, near):
    import os
    import subprocess
    import sys

    from tests.helpers.runs import REPO, tiny_opts, train_args
    from tests.helpers.tiny_open_clip import write_tiny_open_clip

    files = write_tiny_open_clip(tmp_path / "clip")
    opts = tiny_opts(files.bin)
    opts[opts.index("tiny")] = name
    at = opts.index("MODEL.BACKBONE.CONFIG")
    del opts[at:at + 2]  # no CONFIG: the name alone must say how to read the file
    argv = train_args("DPLSearch", "vit_b16", "dtd", data_root, tmp_path / "out", extra=opts)
    proc = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert f"MODEL.BACKBONE.NAME {name!r}" in proc.stderr and near in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out" / "prompt_config.json").exists()


@pytest.mark.slow
def test_search_sh_refuses_an_unknown_name_in_one_line(tmp_path, data_root, tiny_clip_path):
    """The same through the protocol script a user types (`search.sh ... MODEL.BACKBONE.NAME x`)."""
    import os
    import subprocess
    import sys

    from tests.helpers.runs import REPO

    env = dict(os.environ, DATA=str(data_root), OUTPUT=str(tmp_path / "out"), PYTHON=sys.executable,
               CLIP_CHECKPOINT=str(tiny_clip_path), SEEDS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", "scripts/dpl/search.sh", "dtd", "1", "MODEL.BACKBONE.NAME", "my-laion",
                           "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, proc.stdout[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "MODEL.BACKBONE.NAME 'my-laion'" in line]
    assert len(errors) == 1 and "MODEL.BACKBONE.CONFIG openai" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not list((tmp_path / "out").rglob("prompt_config.json"))
