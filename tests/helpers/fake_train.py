"""A stand-in ``$PYTHON`` for the protocol scripts: ``train.py`` calls are recorded and fake their
outputs in milliseconds; anything else (e.g. ``tools/grid.py``) runs with the real interpreter.

Each ``train.py`` call (also one under ``-m torch.distributed.run``) appends a JSON line to
``$FAKE_CALLS``: its argv (from ``train.py`` on), the launcher words before it, CUDA_VISIBLE_DEVICES,
start and end times. ``$FAKE_SLEEP`` seconds per call; ``$FAKE_SLEEP_FIRST`` seconds for the very first call
only (it creates its output folder first, as a run that was stopped midway leaves it); a call
with an argument containing ``$FAKE_FAIL`` exits 2 without writing anything. ``$FAKE_PIDS``, if set,
gets each call's process id when it starts.
"""
from __future__ import annotations

import os
import stat
import sys

SCRIPT = '''#!{python}
import json, os, subprocess, sys, time
args = sys.argv[1:]
if "train.py" not in args:
    os.execv({python!r}, [{python!r}] + args)
i = args.index("train.py")
launcher, argv = args[:i], args[i + 1:]
start = time.time()
if os.environ.get("FAKE_PIDS"):
    with open(os.environ["FAKE_PIDS"], "a") as fh:
        fh.write(f"{{os.getpid()}}\\n")
out = argv[argv.index("--output-dir") + 1]
if os.environ.get("FAKE_SLEEP_FIRST") and not os.path.exists(os.environ["FAKE_CALLS"] + ".first"):
    os.makedirs(out, exist_ok=True)
    open(os.environ["FAKE_CALLS"] + ".first", "w").close()
    time.sleep(float(os.environ["FAKE_SLEEP_FIRST"]))
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
fail = os.environ.get("FAKE_FAIL")
if fail and any(fail in a for a in argv):
    print("train.py: error: made to fail", file=sys.stderr)
    sys.exit(2)
trainer = argv[argv.index("--trainer") + 1]
os.makedirs(os.path.join(out, "prompt_learner"), exist_ok=True)
with open(os.path.join(out, "log.txt"), "a") as fh:
    fh.write("Finish training\\n* accuracy: 50.0%\\n")
if "--eval-only" not in argv:
    with open(os.path.join(out, "prompt_learner", "checkpoint"), "w") as fh:
        fh.write("model.pth.tar-1\\n")
    if trainer.startswith("DPL"):
        with open(os.path.join(out, "prompt_config.json"), "w") as fh:
            fh.write("{{}}")
with open(os.environ["FAKE_CALLS"], "a") as fh:
    fh.write(json.dumps(dict(argv=argv, launcher=launcher, cwd=os.getcwd(), start=start, end=time.time(),
                             gpus=os.environ.get("CUDA_VISIBLE_DEVICES"))) + "\\n")
'''


def write_fake_python(directory) -> str:
    """Write the stand-in into ``directory``; returns its path (use it as ``PYTHON``)."""
    path = os.path.join(str(directory), "python")
    with open(path, "w") as fh:
        fh.write(SCRIPT.format(python=sys.executable))
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return path


def read_calls(calls_file) -> list:
    """The recorded train.py calls, in the order they ended."""
    import json

    if not os.path.exists(calls_file):
        return []
    with open(calls_file) as fh:
        return [json.loads(line) for line in fh]
