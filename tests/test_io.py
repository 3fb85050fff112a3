import os

import pytest

from dpl.io import atomic_write_json, atomic_write_text


def test_atomic_write_replaces_whole_file_with_usual_mode(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(str(path), {"x": 1})
    atomic_write_json(str(path), {"x": 2})
    assert path.read_text().strip().replace(" ", "").replace("\n", "") == '{"x":2}'
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "r.txt"
    atomic_write_text(str(path), "old")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        atomic_write_text(str(path), "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.txt"]
