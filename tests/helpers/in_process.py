"""A ``$PYTHON`` for the protocol scripts whose ``train.py`` calls run inside the test process.

The script's ``$PYTHON train.py ARGS`` calls are forwarded through two FIFOs and run here with
``train.main(ARGS)``: starting a fresh interpreter (importing torch) costs more than a tiny run.
Anything else the script would start with ``$PYTHON`` is refused (exit 97).
"""
import os
import threading
import traceback

SHIM = """#!/usr/bin/env bash
# $PYTHON for the scripts: hand one `train.py ARGS` call to the test process, exit with its code.
if [[ "$1" != train.py ]]; then echo "shim: only train.py calls are forwarded, got $1" >&2; exit 97; fi
shift
printf '%s\\0' "$PWD" "$@" > "$SHIM_DIR/args"
echo run > "$SHIM_DIR/request"
read -r code < "$SHIM_DIR/reply"
exit "$code"
"""


class InProcessPython:
    """A ``$PYTHON`` whose ``train.py`` calls run in this process (one at a time, as the scripts do)."""

    def __init__(self, directory):
        self.dir = directory
        self.path = directory / "python"
        self.path.write_text(SHIM)
        self.path.chmod(0o755)
        for fifo in ("request", "reply"):
            os.mkfifo(directory / fifo)
        self.calls = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        import train

        while (self.dir / "request").read_text().strip() == "run":
            cwd, *argv = (self.dir / "args").read_text().split("\0")[:-1]
            self.calls.append(argv)
            code, here = 0, os.getcwd()
            try:
                os.chdir(cwd)  # the script runs train.py from the repository root
                train.main(argv)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException:  # always answer, or the script would wait forever
                traceback.print_exc()
                code = 1
            finally:
                os.chdir(here)
            (self.dir / "reply").write_text(f"{code}\n")

    def close(self):
        if self.thread.is_alive():  # else nobody would open the FIFO and this write would block
            (self.dir / "request").write_text("stop\n")
        self.thread.join(timeout=30)
