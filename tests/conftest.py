import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("DPL_TEST_THREADS", "2")))

from tests.helpers.tiny_clip import TinyClipSpec, write_tiny_clip  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped when no CUDA device is available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_clip_path(tmp_path_factory):
    """Path of a tiny random-init CLIP saved in OpenAI's checkpoint format (ViT towers)."""
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip.pt", TinyClipSpec())


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """--root holding the miniature DTD in CoOp's layout, written once per test module."""
    from tests.helpers.dataset_fixtures import write_fixture

    root = tmp_path_factory.mktemp("data")
    write_fixture("DescribableTextures", root)
    return root


@pytest.fixture(scope="module")
def clip_model(tiny_clip_path):
    """The tiny CLIP loaded through the real loader (frozen, eval mode); one per test module."""
    from dpl.clip_loader import load_clip

    return load_clip("tiny", tiny_clip_path, config="openai")


@pytest.fixture(scope="session")
def demo_clip():
    """Path of the shipped demo CLIP (demo/weights/demo-clip.safetensors, SHA-256 verified)."""
    from demo import pretrain

    return pretrain.get_demo_clip()


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A running local one-node SLURM cluster (skipped, with the reason, where it cannot start)."""
    from tests.helpers.slurm import LocalSlurm

    cluster = LocalSlurm(str(tmp_path_factory.mktemp("slurm")))
    try:
        reason = cluster.start()
        if reason:
            if os.environ.get("CI") == "true":  # .ci/run installs SLURM: a skip there hides a bug
                pytest.fail(reason)
            pytest.skip(reason)
        yield cluster
    finally:
        cluster.stop()
