"""One place per idea (issue 26, point 3): the table of config keys that identify a run and define
a search, the names of per-epoch checkpoints, and the atomic file writes each exist once."""
import hashlib
import json
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def source_files():
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("output", "__pycache__", "data", "tests")]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                with open(path, encoding="utf-8") as f:
                    yield os.path.relpath(path, REPO), f.read()


# --- the table of config keys ----------------------------------------------------------------

def test_run_records_and_the_search_hash_read_one_table():
    from dassl.utils import run_record
    from dpl import run_keys
    from trainers import dpl_search

    table = run_keys.RUN_KEYS
    assert set(run_record.IDENTITY_KEYS) == {k for k, role in table.items() if role.identity}
    assert run_record.OPERATIONAL_KEYS == {k for k, role in table.items() if role.operational}
    assert set(dpl_search.HASHED_KEYS) == {"SEED", "DATASET", "INPUT", "DATALOADER", "OPTIM",
                                           "MODEL.BACKBONE.NAME", "TRAINER.NAME", "TRAINER.DPL.PREC",
                                           "TRAINER.DPL.SEARCH"}
    assert set(dpl_search.UNHASHED_KEYS) == {"DATASET.ROOT", "DATALOADER.NUM_WORKERS", "TRAINER.DPL.SEARCH.PLOT",
                                             "DATASET.CACHE_DIR", "TRAINER.DPL.SEARCH.REAL_ATTENTION"}
    # Nowhere else lists these keys by hand.
    lists = [rel for rel, text in source_files() if rel != os.path.join("dpl", "run_keys.py")
             and re.search(r'"DATASET\.SUBSAMPLE_CLASSES",\s*"MODEL\.BACKBONE\.NAME"|'
                           r'"DATASET\.ROOT",\s*"DATALOADER\.NUM_WORKERS"', text)]
    assert lists == []


def test_a_row_changes_both_consumers(monkeypatch):
    """Adding one row to the table is all it takes: the run records and the hash both follow."""
    from dpl import run_keys

    monkeypatch.setitem(run_keys.RUN_KEYS, "TRAINER.DPL.KD_WEIGHT", run_keys.KeyRole(True, True, False))
    monkeypatch.setitem(run_keys.RUN_KEYS, "OPTIM.MAX_EPOCH", run_keys.KeyRole(False, False, True))
    assert "TRAINER.DPL.KD_WEIGHT" in run_keys.identity_keys()
    assert "TRAINER.DPL.KD_WEIGHT" in run_keys.search_roots()
    assert "OPTIM.MAX_EPOCH" in run_keys.operational_keys() and "OPTIM.MAX_EPOCH" in run_keys.search_exclusions()


OLD_HASHED = ("SEED", "DATASET", "INPUT", "DATALOADER", "OPTIM", "MODEL.BACKBONE.NAME", "TRAINER.NAME",
              "TRAINER.DPL.PREC", "TRAINER.DPL.SEARCH")
# (+ the two operational keys added since, which never define a search: where caches go, and which
# kernel computes the same attention)
OLD_UNHASHED = ("DATASET.ROOT", "DATALOADER.NUM_WORKERS", "TRAINER.DPL.SEARCH.PLOT", "DATASET.CACHE_DIR",
                "TRAINER.DPL.SEARCH.REAL_ATTENTION")


def _old_config_hash(cfg):
    """The hash over the two lists config_hash kept before the table, computed from the flattened
    config, to show that the artifacts' hashes did not move."""
    from dassl.utils.run_record import flat_config

    def under(key, roots):
        return any(key == r or key.startswith(r + ".") for r in roots)

    kept = {k: v for k, v in flat_config(cfg).items() if under(k, OLD_HASHED) and not under(k, OLD_UNHASHED)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


@pytest.mark.parametrize("opts", [[], ["SEED", "3", "TRAINER.DPL.SEARCH.ALPHA_EVERY", "2"],
                                  ["DATALOADER.TEST.BATCH_SIZE", "7", "DATASET.ROOT", "/x"]])
def test_config_hash_of_older_artifacts_is_unchanged(opts):
    from dassl.config import get_cfg_default
    from trainers.config import extend_cfg
    from trainers.dpl_search import config_hash

    cfg = get_cfg_default()
    extend_cfg(cfg)
    cfg.merge_from_list(["TRAINER.NAME", "DPLSearch", "DATASET.NAME", "DescribableTextures", *opts])
    assert config_hash(cfg) == _old_config_hash(cfg)


# --- checkpoint names and atomic writes -------------------------------------------------------

def test_one_parser_of_checkpoint_names(tmp_path):
    from dassl.utils import torchtools
    from dpl import io
    from trainers._common import prune_checkpoints

    assert torchtools.checkpoint_file_epoch is io.checkpoint_file_epoch
    assert [io.checkpoint_file_epoch(n) for n in ("model.pth.tar-12", "model-best.pth.tar", "model.pth.tar-3.tmp",
                                                   "model.pth.tar-", "xmodel.pth.tar-1")] == [12, None, None, None, None]
    for name in ("model.pth.tar-2", "model.pth.tar-10", "model.pth.tar-9", "model-best.pth.tar", "model.pth.tar-1x",
                 ".model.pth.tar-11.abc.tmp", "checkpoint"):
        (tmp_path / name).write_text("x")
    assert io.saved_epochs(str(tmp_path)) == [2, 9, 10]
    prune_checkpoints(str(tmp_path), 1)
    assert sorted(os.listdir(tmp_path)) == [".model.pth.tar-11.abc.tmp", "checkpoint", "model-best.pth.tar",
                                            "model.pth.tar-10", "model.pth.tar-1x"]
    # No other module spells out or parses the per-epoch name itself.
    own = re.compile(r"model\\?\.pth\\?\.tar-(?:\(|\{|\"\s*\+|\"\.format)|startswith\(\"model\.pth\.tar-")
    spelled = [rel for rel, text in source_files() if rel != os.path.join("dpl", "io.py") and own.search(text)]
    assert spelled == []


def test_one_atomic_write():
    """Only dpl/io.py creates temporary files and renames them into place; the engine's names for
    the writers are dpl.io's own functions."""
    from dassl.utils import torchtools
    from dpl import io

    assert torchtools.atomic_torch_save is io.atomic_torch_save
    assert torchtools.atomic_write_text is io.atomic_write_text
    writers = [rel for rel, text in source_files() if rel != os.path.join("dpl", "io.py")
               and re.search(r"mkstemp|os\.replace\(|os\.rename\(", text)]
    assert writers == []


def test_dassl_write_json_is_atomic(tmp_path, monkeypatch):
    from dassl.utils import write_json

    path = tmp_path / "split.json"
    write_json({"a": 1}, str(path))

    def crash(obj, fh, **kwargs):
        fh.write('{"half": ')
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", crash)
    with pytest.raises(KeyboardInterrupt):
        write_json({"a": 2}, str(path))
    assert json.loads(path.read_text()) == {"a": 1} and os.listdir(tmp_path) == ["split.json"]
