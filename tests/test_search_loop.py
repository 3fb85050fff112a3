"""ISSUE 22 §1: the default search is the paper's loop (Algorithm 1), the fast loop is one config
away, the log says which loop runs, odd loop settings are warned about or refused, and the artifact
records how it was searched."""
import glob
import json
import os

import pytest
import torch
import yaml

from dpl.artifact import ArtifactError, build_artifact, load_artifact, save_artifact
from tests.helpers.runs import REPO, run_train, tiny_opts, train_args

SEARCH_CONFIGS = os.path.join(REPO, "configs", "trainers", "DPLSearch")
LOOP = ("ALPHA_EVERY", "PATIENCE", "MIN_EPOCHS")
PAPER_LOOP = {"ALPHA_EVERY": 1, "PATIENCE": 0, "MIN_EPOCHS": 0}
FAST_LOOP = {"ALPHA_EVERY": 4, "PATIENCE": 3, "MIN_EPOCHS": 40}


def search_cfg(config=None, *opts):
    import train

    argv = ["--trainer", "DPLSearch"]
    if config:
        argv += ["--config-file", os.path.join(SEARCH_CONFIGS, f"{config}.yaml")]
    return train.setup_cfg(train.get_parser().parse_args(argv + list(opts)))


def loop_of(cfg):
    return {k: cfg.TRAINER.DPL.SEARCH[k] for k in LOOP}


def yaml_search_keys(config):
    with open(os.path.join(SEARCH_CONFIGS, f"{config}.yaml"), encoding="utf-8") as fh:
        return yaml.safe_load(fh)["TRAINER"]["DPL"]["SEARCH"]


# -- the configs ------------------------------------------------------------------------------
@pytest.mark.parametrize("config", [None, "vit_b16", "vit_b16_base2new", "vit_b16_official", "demo"])
def test_default_and_paper_configs_run_algorithm_1(config):
    cfg = search_cfg(config)
    assert loop_of(cfg) == PAPER_LOOP
    if config is not None:  # each search config states its loop instead of inheriting it
        assert {k: yaml_search_keys(config)[k] for k in LOOP} == PAPER_LOOP


@pytest.mark.parametrize("fast,paper", [("vit_b16_fast", "vit_b16"),
                                        ("vit_b16_fast_base2new", "vit_b16_base2new")])
def test_fast_configs_differ_from_their_paper_twin_only_in_the_loop(fast, paper):
    fast_cfg, paper_cfg = search_cfg(fast), search_cfg(paper)
    assert loop_of(fast_cfg) == FAST_LOOP
    from dassl.utils.run_record import flat_config

    a, b = flat_config(fast_cfg), flat_config(paper_cfg)
    assert {k for k in a if a[k] != b[k]} == {f"TRAINER.DPL.SEARCH.{k}" for k in LOOP}
    with open(os.path.join(SEARCH_CONFIGS, f"{fast}.yaml"), encoding="utf-8") as fh:
        head = fh.read().split("\nDATALOADER:")[0]
    assert "NOT the paper's" in head and "exists" in head  # says it is not the paper's loop, and why


# -- the loop line and the warning ---------------------------------------------------------------
LINES = [
    ("vit_b16", [], "Search loop: α every step, 80 epochs (Algorithm 1)"),
    ("vit_b16_fast", [], "Search loop: α every 4 steps, early stop from epoch 40 when settled "
                         "(configuration unchanged for 3 epochs), at most 80 epochs (fast, not the paper's loop)"),
    ("vit_b16", ["TRAINER.DPL.SEARCH.ALPHA_EVERY", "2"],
     "Search loop: α every 2 steps, 80 epochs (fast, not the paper's loop)"),
    ("vit_b16", ["TRAINER.DPL.SEARCH.PATIENCE", "2"],  # from epoch 3: 2 unchanged epochs after the 1st
     "Search loop: α every step, early stop from epoch 3 when settled (configuration unchanged for "
     "2 epochs), at most 80 epochs (fast, not the paper's loop)"),
    ("vit_b16", ["TRAINER.DPL.SEARCH.UPDATE_MODE", "simultaneous"],
     "Search loop: α every step, 80 epochs, UPDATE_MODE simultaneous (not the paper's loop)"),
    ("vit_b16", ["TRAINER.DPL.SEARCH.CLASS_SAMPLE", "50"],
     "Search loop: α every step, 80 epochs, CLASS_SAMPLE 50 (not the paper's loop)"),
]


@pytest.mark.parametrize("config,opts,line", LINES)
def test_search_loop_line(config, opts, line):
    from trainers.dpl_search import DPLSearch

    assert DPLSearch.run_notes(search_cfg(config, *opts)) == [line]


@pytest.mark.parametrize("opts,named", [
    (["OPTIM.MAX_EPOCH", "40"], "MIN_EPOCHS 40 >= OPTIM.MAX_EPOCH 40 while PATIENCE is 3"),
    (["OPTIM.MAX_EPOCH", "10"], "MIN_EPOCHS 40 >= OPTIM.MAX_EPOCH 10 while PATIENCE is 3"),
    (["OPTIM.MAX_EPOCH", "3", "TRAINER.DPL.SEARCH.MIN_EPOCHS", "0"],
     "PATIENCE 3 needs 4 epochs, but OPTIM.MAX_EPOCH is 3"),
])
def test_an_early_stop_that_can_never_fire_is_one_warning(opts, named):
    from trainers.dpl_search import DPLSearch

    cfg = search_cfg("vit_b16_fast", *opts)
    line, warning = DPLSearch.run_notes(cfg)
    epochs = cfg.OPTIM.MAX_EPOCH
    assert line == f"Search loop: α every 4 steps, {epochs} epochs (fast, not the paper's loop)"
    assert warning.startswith("Warning: TRAINER.DPL.SEARCH.") and named in warning
    assert f"early stop can never fire, all {epochs} epochs run" in warning and "\n" not in warning
    # One epoch fewer than MAX_EPOCH can still stop early: no warning.
    assert len(DPLSearch.run_notes(search_cfg("vit_b16_fast", "OPTIM.MAX_EPOCH", "41"))) == 1


@pytest.mark.parametrize("key,value,fix", [
    ("PATIENCE", "-1", "set it to 0 (no early stop, the paper's loop)"),
    ("MIN_EPOCHS", "-2", "set it to 0 or a number of epochs"),
    ("ALPHA_EVERY", "0", "set it to 1 (an α step at every prompt step, the paper's loop)"),
])
def test_loop_settings_out_of_range_are_one_line_errors(key, value, fix, data_root, tiny_clip_path,
                                                        tmp_path, capsys):
    import train

    out = tmp_path / "x"
    argv = train_args("DPLSearch", "vit_b16", "dtd", data_root, out) + \
        tiny_opts(tiny_clip_path, 1) + [f"TRAINER.DPL.SEARCH.{key}", value]
    with pytest.raises(SystemExit) as exc:
        train.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"train.py: error: TRAINER.DPL.SEARCH.{key} must be >= " in err
    assert f"got {value}; {fix}" in err
    assert not (out / "log.txt").exists()  # refused before the log is opened


# -- real (tiny) runs: the log's first lines and the artifact's search block ---------------------------
def search(root, out, clip_path, config, seed, epochs=2, opts=()):
    argv = train_args("DPLSearch", config, "dtd", root, out, seed=seed)
    run_train(argv + tiny_opts(clip_path, epochs) + ["TRAINER.DPL.SEARCH.PLOT", "False", *opts])
    with open(os.path.join(out, "log.txt"), encoding="utf-8") as fh:
        log = fh.read().splitlines()
    return log, load_artifact(os.path.join(out, "prompt_config.json"))


def head_of(log):
    """The log's lines before the argument dump (its first lines)."""
    return log[:log.index("** Arguments **")]


@pytest.mark.slow
def test_paper_search_logs_its_loop_first_and_records_it(data_root, tiny_clip_path, tmp_path):
    log, art = search(data_root, tmp_path / "paper", tiny_clip_path, "vit_b16", seed=1)
    assert "Search loop: α every step, 2 epochs (Algorithm 1)" in head_of(log)
    assert not any(line.startswith("Warning:") for line in log)
    assert art["search"] == {"alpha_every": 1, "patience": 0, "min_epochs": 0,
                             "update_mode": "alternate", "class_sample": 0, "epochs_run": 2,
                             "seed": 1, "world_size": 1}


@pytest.mark.slow
def test_fast_search_without_seed_logs_its_loop_and_records_the_drawn_seed(data_root, tiny_clip_path,
                                                                            tmp_path):
    out = tmp_path / "fast"
    log, art = search(data_root, out, tiny_clip_path, "vit_b16_fast", seed=-1)
    head = head_of(log)
    assert "Search loop: α every 4 steps, 2 epochs (fast, not the paper's loop)" in head
    assert any(line.startswith("Warning: TRAINER.DPL.SEARCH.MIN_EPOCHS 40 >= OPTIM.MAX_EPOCH 2")
               for line in head)
    # The seed the search drew for its α batches (kept in its checkpoints for a resume).
    ckpt = sorted(glob.glob(str(out / "alpha" / "model.pth.tar-*")))[-1]
    drawn = torch.load(ckpt, weights_only=True)["trainer_state"]["alpha_batch_seed"]
    assert art["provenance"]["seed"] == -1 and drawn >= 0
    assert art["search"] == {"alpha_every": 4, "patience": 3, "min_epochs": 40,
                             "update_mode": "alternate", "class_sample": 0, "epochs_run": 2,
                             "seed": drawn, "world_size": 1}
    # One seed for the whole run (model init, few-shot draw, α batches), logged and recorded:
    # --seed with it repeats the unseeded search exactly.
    assert any(line.startswith(f"SEED -1 (no --seed): this run draws seed {drawn};") for line in log)
    _, again = search(data_root, tmp_path / "again", tiny_clip_path, "vit_b16_fast", seed=drawn)
    assert again["search"] == art["search"]
    for branch in ("text", "vision"):
        assert again[branch] == art[branch], branch


# -- older artifacts ---------------------------------------------------------------------------
def _branch(n, width):
    return {"num_blocks": n, "width": width, "options": [0, 2], "lengths": [2] * n}


def test_artifacts_without_a_search_block_still_load(tmp_path):
    art = build_artifact("ViT-B/16", _branch(3, 64), _branch(4, 64), {"dataset": "x"})
    assert "search" not in art
    path = str(tmp_path / "old.json")
    save_artifact(path, art)
    assert "search" not in load_artifact(path, {"text": {"num_blocks": 3, "width": 64},
                                                 "vision": {"num_blocks": 4, "width": 64}})


def test_a_search_block_that_is_not_an_object_is_refused(tmp_path):
    art = build_artifact("ViT-B/16", _branch(3, 64), _branch(4, 64), {"dataset": "x"},
                         search={"alpha_every": 1, "seed": 7})
    assert art["search"]["alpha_every"] == 1 and art["search"]["patience"] is None
    art["search"] = [1, 0, 0]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(art))
    with pytest.raises(ArtifactError, match="search must be a JSON object"):
        load_artifact(str(path))
