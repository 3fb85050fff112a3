"""The protocol scripts: end to end on miniature datasets with a tiny CLIP (CPU, seconds per run),
and their handling of mistakes and executors with a stand-in ``train.py`` (milliseconds per run)."""
import glob
import json
import os
import shutil
import subprocess

import pytest

from tests.helpers.dataset_fixtures import write_fixture
from tests.helpers.fake_train import read_calls, write_fake_python
from tests.helpers.in_process import InProcessPython
from tests.helpers.runs import REPO, final_accuracy, tiny_opts
from tools import parse_test_res

SCRIPTS = sorted(glob.glob(os.path.join(REPO, "scripts", "dpl", "*.sh"))) + [
    os.path.join(REPO, "scripts", name) for name in ("test.sh", "quickstart.sh")]
# A CLIP path that word splitting or a quoting slip would break.
ODD = "my clip's \"dir\""


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fixture("DescribableTextures", root)
    write_fixture("EuroSAT", root)
    return root


@pytest.fixture(scope="module")
def python(tmp_path_factory):
    """The scripts' $PYTHON: their train.py calls run in this process (no interpreter start-up)."""
    shim = InProcessPython(tmp_path_factory.mktemp("shim"))
    yield shim
    shim.close()


def run_script(python, name, args, data_root, output, clip_path, epochs=1, **env_extra):
    env = dict(os.environ, DATA=str(data_root), OUTPUT=str(output), CLIP_CHECKPOINT=str(clip_path),
               PYTHON=str(python.path), SHIM_DIR=str(python.dir), SEEDS="1", **env_extra)
    # CLIP_CHECKPOINT already sets MODEL.BACKBONE.PATH; drop it from the shared tiny overrides.
    opts = tiny_opts(clip_path, epochs=epochs)
    i = opts.index("MODEL.BACKBONE.PATH")
    del opts[i:i + 2]
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "dpl", name), *args, *opts],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_search_sh_writes_artifact_skips_when_finished_and_rewrites_a_lost_one(python, data_root, tmp_path,
                                                                             tiny_clip_path):
    clip = tmp_path / ODD / "tiny clip.pt"  # issue 19.1: spaces and quotes in the CLIP path
    clip.parent.mkdir()
    shutil.copy(tiny_clip_path, clip)
    out = run_script(python, "search.sh", ["dtd", "1", "2"], data_root, tmp_path, clip, epochs=2)
    run_dir = tmp_path / "fewshot" / "DPLSearch" / "vit_b16" / "dtd" / "shots_2" / "seed1"
    art = json.load(open(run_dir / "prompt_config.json"))
    assert art["provenance"]["num_shots"] == 2 and art["provenance"]["epochs_run"] == 2
    for f in ("alpha_history.json", "alpha_heatmap.png", "alpha_convergence.png", "log.txt"):
        assert (run_dir / f).is_file()
    assert str(run_dir / "prompt_config.json") in out
    assert f"PATH: {clip}\n" in (run_dir / "log.txt").read_text()  # one argument, intact
    again = run_script(python, "search.sh", ["dtd", "1", "2"], data_root, tmp_path, clip, epochs=2)
    assert "Skip (finished)" in again
    # issue 19.3: the marker does not outlive the artifact; the re-run writes the same one again
    (run_dir / "prompt_config.json").unlink()
    rerun = run_script(python, "search.sh", ["dtd", "1", "2"], data_root, tmp_path, clip, epochs=2)
    assert f"Re-run (marked finished, but its prompt_config.json is missing): {run_dir}" in rerun
    again = json.load(open(run_dir / "prompt_config.json"))
    del art["provenance"]["created"], again["provenance"]["created"]
    assert again == art


@pytest.mark.slow
def test_fewshot_sh_and_table(python, data_root, tmp_path, tiny_clip_path, capsys):
    run_script(python, "fewshot.sh", ["dtd", "eurosat"], data_root, tmp_path, tiny_clip_path, SHOTS_LIST="1")
    accs = {}
    for ds in ("dtd", "eurosat"):
        run = tmp_path / "fewshot" / "DPLTrain" / "vit_b16" / ds / "shots_1" / "seed1"
        assert (run / ".done").is_file()
        # the train stage used its own search artifact
        cfg = json.load(open(run / "prompt_config.json"))
        search = json.load(open(tmp_path / "fewshot" / "DPLSearch" / "vit_b16" / ds / "shots_1" / "seed1"
                                / "prompt_config.json"))
        assert cfg["text"]["lengths"] == search["text"]["lengths"]
        accs[ds] = final_accuracy(run / "log.txt")
    parse_test_res.main([str(tmp_path / "fewshot"), "--csv", str(tmp_path / "t.csv")])
    rows = [line.split(",") for line in open(tmp_path / "t.csv").read().splitlines()]
    assert len(rows) == 2  # the DPLSearch runs are not listed
    header, row = rows[0], rows[1]
    assert header[1:3] == ["dtd", "eurosat"]
    assert row[1] == f"{accs['dtd']:.2f} ± 0.00" and row[2] == f"{accs['eurosat']:.2f} ± 0.00"
    assert row[3] == f"{(accs['dtd'] + accs['eurosat']) / 2:.2f}"


@pytest.mark.slow
def test_base2new_sh_and_table(python, data_root, tmp_path, tiny_clip_path, capsys):
    run_script(python, "base2new.sh", ["dtd"], data_root, tmp_path, tiny_clip_path)
    base_run = tmp_path / "base2new_base" / "DPLTrain" / "vit_b16_base2new" / "dtd" / "shots_16" / "seed1"
    new_run = tmp_path / "base2new_new" / "DPLTrain" / "vit_b16_base2new" / "dtd" / "shots_16" / "seed1"
    search = json.load(open(tmp_path / "base2new_base" / "DPLSearch" / "vit_b16_base2new" / "dtd"
                            / "shots_16" / "seed1" / "prompt_config.json"))
    assert search["provenance"]["subsample_classes"] == "base"
    base, new = final_accuracy(base_run / "log.txt"), final_accuracy(new_run / "log.txt")
    assert "SUBSAMPLE NEW CLASSES" in open(new_run / "log.txt").read()
    capsys.readouterr()  # drop the in-process runs' output
    parse_test_res.main([str(tmp_path), "--base2new"])
    out = capsys.readouterr().out
    hm = 2 * base * new / (base + new) if base + new else 0.0
    line = next(l for l in out.splitlines() if "dtd" in l and "average" not in l)
    assert f"{base:.2f}" in line and f"{new:.2f}" in line and f"{hm:.2f}" in line


# ---- Mistakes and executors, with a stand-in train.py (tests.helpers.fake_train) -------------------

def run_fake(script, args, tmp_path, shell="bash", **env_extra):
    """Run scripts/dpl/SCRIPT ARGS with the stand-in train.py -> (process, recorded train.py calls)."""
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir(exist_ok=True)
    (tmp_path / "data").mkdir(exist_ok=True)
    env = dict(os.environ, DATA=str(tmp_path / "data"), OUTPUT=str(tmp_path / "out"),
               PYTHON=write_fake_python(fake_dir), FAKE_CALLS=str(fake_dir / "calls"),
               **{"SEEDS": "1", "SHOTS_LIST": "1", "GRID_POLL": "0.1", **env_extra})
    for knob in ("CFG", "SEARCH_CFG", "TRAINER", "EXECUTOR", "JOBS", "GPUS_PER_JOB", "CUDA_VISIBLE_DEVICES"):
        if knob not in env_extra:
            env.pop(knob, None)
    path = script if os.path.isabs(script) else os.path.join(REPO, "scripts", "dpl", script)
    proc = subprocess.run([shell, path, *args], env=env, capture_output=True, text=True, timeout=120)
    return proc, read_calls(fake_dir / "calls")


# Every script with arguments it accepts: (script, args, extra environment)
EVERY_SCRIPT = [
    ("search.sh", ["dtd", "1"], {}),
    ("train.sh", ["dtd", "1", "2"], {}),
    ("fewshot.sh", ["dtd", "eurosat"], {}),
    ("base2new.sh", ["dtd"], {}),
    ("xd.sh", [], {"TARGETS": "dtd eurosat"}),
    ("dg.sh", [], {"TARGETS": "imagenet_a"}),
]


@pytest.mark.parametrize("script,args,env", EVERY_SCRIPT, ids=[s for s, _, _ in EVERY_SCRIPT])
def test_clip_path_with_spaces_and_quotes_reaches_train_py_whole(script, args, env, tmp_path):
    clip = str(tmp_path / ODD / "Vi T-B 16.pt")
    proc, calls = run_fake(script, [*args, "OPTIM.MAX_EPOCH", "1"], tmp_path, CLIP_CHECKPOINT=clip, **env)
    assert proc.returncode == 0, proc.stderr
    assert calls
    for call in calls:
        argv = call["argv"]
        assert argv[argv.index("MODEL.BACKBONE.PATH") + 1] == clip
        assert argv[-2:] == ["OPTIM.MAX_EPOCH", "1"]


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_every_script_refuses_a_non_bash_shell(script, tmp_path):
    shell = shutil.which("dash") or "sh"
    if os.path.realpath(shutil.which(shell) or "").endswith("bash"):
        pytest.skip("no non-bash sh here (sh is bash)")
    proc, calls = run_fake(script, ["dtd", "1"], tmp_path, shell=shell)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "run it with bash" in proc.stderr, proc.stderr
    assert proc.stdout == "" and calls == [] and not (tmp_path / "out").exists()


def test_lost_artifacts_are_rewritten_never_a_dead_end(tmp_path):
    search = tmp_path / "out" / "fewshot" / "DPLSearch" / "vit_b16" / "dtd" / "shots_2" / "seed1"
    trained = tmp_path / "out" / "fewshot" / "DPLTrain" / "vit_b16" / "dtd" / "shots_2" / "seed1"
    proc, calls = run_fake("train.sh", ["dtd", "1", "2"], tmp_path)
    assert proc.returncode == 0 and len(calls) == 2  # search, then train
    (search / "prompt_config.json").unlink()
    proc, calls = run_fake("train.sh", ["dtd", "1", "2"], tmp_path)
    # the search runs again (its marker no longer counts), the finished train run is skipped
    assert proc.returncode == 0, proc.stderr
    assert f"Re-run (marked finished, but its prompt_config.json is missing): {search}" in proc.stdout
    assert f"Skip (finished): {trained}" in proc.stdout
    assert len(calls) == 3 and (search / "prompt_config.json").is_file()
    # a train run whose checkpoint is gone trains again instead of leaving base2new/xd stuck
    shutil.rmtree(trained / "prompt_learner")
    proc, calls = run_fake("train.sh", ["dtd", "1", "2"], tmp_path)
    assert f"Re-run (marked finished, but its */checkpoint is missing): {trained}" in proc.stdout
    assert len(calls) == 4 and calls[-1]["argv"][calls[-1]["argv"].index("--output-dir") + 1] == str(trained)


BAD_DATASETS = [
    ("fewshot.sh", ["caltec101", "dtd"], {}, "'caltec101'"),
    ("fewshot.sh", ["dtd", "eurosatt", "OPTIM.MAX_EPOCH", "1"], {}, "'eurosatt'"),
    ("base2new.sh", ["caltec101", "dtd"], {}, "'caltec101'"),
    ("search.sh", ["caltec101", "1"], {}, "'caltec101'"),
    ("train.sh", ["caltec101", "1"], {}, "'caltec101'"),
    ("xd.sh", [], {"TARGETS": "dtd caltec101"}, "'caltec101' in TARGETS"),
    ("dg.sh", [], {"SOURCE": "imagenett"}, "'imagenett' in SOURCE"),
]


@pytest.mark.parametrize("script,args,env,named", BAD_DATASETS, ids=[f"{s}-{n}" for s, _, _, n in BAD_DATASETS])
def test_bad_dataset_names_stop_before_the_first_run(script, args, env, named, tmp_path):
    proc, calls = run_fake(script, args, tmp_path, **env)
    assert proc.returncode == 2 and calls == [] and proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert f"unknown dataset {named}" in proc.stderr and "caltech101 " in proc.stderr  # the valid names


def test_transfer_scripts_take_targets_from_the_environment(tmp_path):
    proc, calls = run_fake("xd.sh", ["dtd"], tmp_path)
    assert proc.returncode == 2 and calls == []
    assert 'TARGETS="dtd" bash scripts/dpl/xd.sh' in proc.stderr


@pytest.mark.parametrize("knob,value", [("EXECUTOR", "slrum"), ("JOBS", "two"), ("GPUS_PER_JOB", "-1"),
                                        ("SLURM_TIME", "1h")])
def test_bad_executor_settings_stop_before_the_first_run(knob, value, tmp_path):
    proc, calls = run_fake("fewshot.sh", ["dtd"], tmp_path, **{knob: value})
    assert proc.returncode == 2 and calls == [] and proc.stderr.count("\n") == 1
    assert f"{knob}={value}" in proc.stderr


def test_local_executor_gives_each_cell_its_own_gpus_under_torchrun(tmp_path):
    proc, calls = run_fake("fewshot.sh", ["dtd", "eurosat"], tmp_path, SEEDS="1 2", EXECUTOR="local",
                           JOBS="2", GPUS_PER_JOB="2", CUDA_VISIBLE_DEVICES="0,1,2,3", FAKE_SLEEP="0.3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 cell(s) as local processes, 2 at a time, 2 GPU(s) each" in proc.stdout
    assert len(calls) == 8
    for call in calls:
        assert call["launcher"] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        assert call["gpus"] in ("0,1", "2,3")
    # a cell's search and train ran on the same GPUs; overlapping calls never shared one
    by_cell = {}
    for call in calls:
        dataset_shots_seed = tuple(call["argv"][call["argv"].index("--output-dir") + 1].split("/")[-3:])
        by_cell.setdefault(dataset_shots_seed, set()).add(call["gpus"])
    assert len(by_cell) == 4 and all(len(gpus) == 1 for gpus in by_cell.values())
    for a in calls:
        for b in calls:
            if a is not b and a["start"] < b["end"] and b["start"] < a["end"]:
                assert a["gpus"] != b["gpus"]
    assert any(a is not b and a["start"] < b["end"] and b["start"] < a["end"] for a in calls for b in calls)


def test_grid_cells_of_every_protocol_skip_when_finished(tmp_path):
    """base2new and xd cells (train + evaluate) run once through EXECUTOR=local, then are skipped."""
    for script, args, env, runs in (("base2new.sh", ["dtd"], {}, 2), ("xd.sh", [], {"TARGETS": "dtd eurosat"}, 3)):
        proc, calls = run_fake(script, args, tmp_path, EXECUTOR="local", SEEDS="1 2", **env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "all 2 cell(s) finished" in proc.stdout
        again, calls_again = run_fake(script, args, tmp_path, EXECUTOR="local", SEEDS="1 2", **env)
        assert "Nothing to run: every cell is finished." in again.stdout and calls_again == calls
    evals = [c["argv"] for c in calls if "--eval-only" in c["argv"]]
    assert len(evals) == 2 * 3 and all(a[a.index("--load-epoch") + 1] == "1" for a in evals)


# Which DPLSearch config a script runs (issue 22 §1): the paper's loop by default, SEARCH_CFG=vit_b16_fast
# the fast one; base2new.sh runs a SEARCH_CFG's _base2new twin where one exists.
SEARCH_CFGS = [
    ("search.sh", ["dtd", "1"], {}, "vit_b16"),
    ("search.sh", ["dtd", "1"], {"SEARCH_CFG": "vit_b16_fast"}, "vit_b16_fast"),
    ("fewshot.sh", ["dtd"], {"SEARCH_CFG": "vit_b16_fast"}, "vit_b16_fast"),
    ("base2new.sh", ["dtd"], {}, "vit_b16_base2new"),
    ("base2new.sh", ["dtd"], {"SEARCH_CFG": "vit_b16_fast"}, "vit_b16_fast_base2new"),
    ("base2new.sh", ["dtd"], {"SEARCH_CFG": "vit_b16_fast", "EXECUTOR": "local"}, "vit_b16_fast_base2new"),
    ("base2new.sh", ["dtd"], {"SEARCH_CFG": "vit_b16_fast_base2new"}, "vit_b16_fast_base2new"),
    ("base2new.sh", ["dtd"], {"SEARCH_CFG": "vit_b16_official"}, "vit_b16_official"),  # no twin: as given
]


@pytest.mark.parametrize("script,args,env,config", SEARCH_CFGS,
                         ids=[f"{s}-{e.get('SEARCH_CFG', 'default')}-{e.get('EXECUTOR', 'sequential')}"
                              for s, _, e, _ in SEARCH_CFGS])
def test_search_cfg_selects_the_search_config(script, args, env, config, tmp_path):
    proc, calls = run_fake(script, args, tmp_path, **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    searches = [c["argv"] for c in calls if c["argv"][c["argv"].index("--trainer") + 1] == "DPLSearch"]
    assert len(searches) == 1
    argv = searches[0]
    assert argv[argv.index("--config-file") + 1] == f"configs/trainers/DPLSearch/{config}.yaml"
    assert f"/DPLSearch/{config}/dtd/" in argv[argv.index("--output-dir") + 1]
    twin = env.get("SEARCH_CFG") == "vit_b16_fast" and script == "base2new.sh"
    said = ("SEARCH_CFG=vit_b16_fast: base-to-new runs its twin "
            "configs/trainers/DPLSearch/vit_b16_fast_base2new.yaml")
    assert (said in proc.stdout) == twin, proc.stdout
