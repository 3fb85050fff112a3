"""Tee ``sys.stdout`` into a log file (``log.txt``), as CoOp-family runs expect."""
from __future__ import annotations

import os
import sys
import time

__all__ = ["Logger", "setup_logger"]


class Logger:
    """A stdout replacement that writes to the console and to ``fpath`` (mode "w").

    ``flush`` also fsyncs the file so a killed run keeps its log. stderr is not captured, so
    progress bars and warnings stay out of the log, as in Dassl.
    """

    def __init__(self, fpath=None, console=None):
        self.console = console if console is not None else sys.stdout
        self.file = None
        if fpath is not None:
            os.makedirs(os.path.dirname(os.path.abspath(fpath)), exist_ok=True)
            self.file = open(fpath, "w")

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.close()

    def write(self, msg):
        self.console.write(msg)
        if self.file is not None:
            self.file.write(msg)

    def flush(self):
        self.console.flush()
        if self.file is not None and not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())

    def isatty(self):
        return False

    def close(self):
        if self.file is not None and not self.file.closed:
            self.file.close()

    def __getattr__(self, name):
        # Anything else (encoding, fileno, ...) is the console's.
        return getattr(self.__dict__.get("console", sys.__stdout__), name)


def log_file_path(output):
    """``output`` itself if it ends in .txt/.log, else ``output/log.txt``; timestamped if taken."""
    if output.endswith(".txt") or output.endswith(".log"):
        fpath = output
    else:
        fpath = os.path.join(output, "log.txt")
    if os.path.exists(fpath):
        fpath += time.strftime("-%Y-%m-%d-%H-%M-%S")
    return fpath


def setup_logger(output=None):
    """Replace ``sys.stdout`` with a Logger writing to the log file for ``output`` (None: no-op).

    An existing log file is never overwritten: the new one gets a ``-YYYY-mm-dd-HH-MM-SS`` suffix.
    Calling it again replaces the previous Logger (its file is closed), it does not stack.
    """
    if output is None:
        return None
    console = sys.stdout
    if isinstance(console, Logger):
        console.close()
        console = console.console
    logger = Logger(log_file_path(output), console=console)
    sys.stdout = logger
    return logger
