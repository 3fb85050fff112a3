"""A real one-node SLURM cluster (Debian's slurm-wlm + munge) started and stopped by the tests.

Set-up: slurm.conf for one node (auth/munge, no cgroups, no accounting), munged, slurmctld and
slurmd started as daemons, then a wait for the node to be idle. One such cluster fits a machine (ports
6817/6818), so a lock file serialises test sessions, and a cluster left behind by a killed session
(its daemons' pids are recorded next to the lock) is stopped before a new one starts.
Without accounting ``sacct`` fails, and submitit then never learns that a task died hard; a small
``sacct`` stand-in answering from ``squeue`` (jobs stay listed: ``MinJobAge`` is high) is put first on
``PATH`` of the test's commands (``LocalSlurm.env``).
"""
from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")
SBIN = ("/usr/sbin", "/sbin")
STATE_DIR = os.path.join(tempfile.gettempdir(), "dpl-local-slurm")
LOCK = os.path.join(STATE_DIR, "lock")
PIDS = os.path.join(STATE_DIR, "pids")  # daemons of the running cluster, for a later cleanup

SACCT = """#!/bin/sh
# sacct stand-in for a cluster without accounting: the states submitit asks for, from squeue.
# submitit calls: sacct -o JobID,State,NodeList --parsable2 -j ID[,ID...]
jobs=""
while [ $# -gt 0 ]; do
    case "$1" in -j) jobs="${jobs:+$jobs,}$2"; shift ;; -j*) jobs="${jobs:+$jobs,}${1#-j}" ;; esac
    shift
done
echo "JobID|State|NodeList"
squeue -h -t all -r -j "$jobs" -o '%i|%T|%N' 2>/dev/null
exit 0
"""


def which(name: str):
    """A binary on PATH or in the sbin folders (not always on a user's PATH)."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def missing_binaries() -> list:
    return [b for b in BINARIES if which(b) is None]


def skip_reason():
    """Why a local cluster cannot start here, or None."""
    missing = missing_binaries()
    if missing:
        return ("SLURM tests skipped: " + ", ".join(missing) + " not installed (as root: apt-get install -y "
                "--no-install-recommends slurm-wlm munge; .ci/run does this)")
    if os.geteuid() != 0:
        return "SLURM tests skipped: starting a local cluster needs root (munged/slurmd)"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie is as good as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def _terminate(pids, timeout: float = 10.0) -> None:
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.time() + timeout
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _read_pid(path: str, timeout: float = 10.0) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(path) as fh:
                return int(fh.read().strip())
        except (OSError, ValueError):
            time.sleep(0.05)
    raise RuntimeError(f"no pid file {path} after {timeout}s")


class LocalSlurm:
    """Start with ``start()`` (returns None or a reason to skip), stop with ``stop()``."""

    def __init__(self, workdir: str):
        self.dir = workdir
        self.host = socket.gethostname().split(".")[0]
        self.conf = os.path.join(workdir, "slurm.conf")
        self.bin = os.path.join(workdir, "bin")
        self.pids = []
        self._lock = None

    @property
    def env(self) -> dict:
        """Environment for commands that talk to this cluster."""
        path = os.pathsep.join([self.bin, os.environ.get("PATH", ""), *SBIN])
        return dict(os.environ, SLURM_CONF=self.conf, PATH=path)

    def start(self, lock_timeout: float = 300.0):
        reason = skip_reason()
        if reason:
            return reason
        os.makedirs(STATE_DIR, exist_ok=True)
        self._lock = open(LOCK, "w")
        deadline = time.time() + lock_timeout
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() > deadline:
                    return f"SLURM tests skipped: another test session held {LOCK} for {lock_timeout:.0f}s"
                time.sleep(1)
        self._stop_leftover()
        busy = [p for p in (6817, 6818) if _port_busy(p)]
        if busy:
            return f"SLURM tests skipped: port(s) {busy} in use by a SLURM that these tests did not start"
        self._write_files()
        self._start_daemons()
        return None

    def _stop_leftover(self) -> None:
        if os.path.exists(PIDS):
            with open(PIDS) as fh:
                _terminate([int(p) for p in fh.read().split()])
            os.remove(PIDS)

    def _write_files(self) -> None:
        for sub in ("state", "spool", "log", "bin"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        with open("/proc/meminfo") as fh:
            avail_kb = next(int(l.split()[1]) for l in fh if l.startswith("MemAvailable"))
        d = self.dir
        conf = f"""ClusterName=dpltest
SlurmctldHost={self.host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job waits cred_expire seconds before it starts again (default 120)
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=3600
MailProg=/bin/true
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={int(avail_kb * 0.9 / 1024)} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        with open(self.conf, "w") as fh:
            fh.write(conf)
        sacct = os.path.join(self.bin, "sacct")
        with open(sacct, "w") as fh:
            fh.write(SACCT)
        os.chmod(sacct, 0o755)

    def _record(self, pid: int) -> None:
        self.pids.append(pid)
        with open(PIDS, "w") as fh:
            fh.write(" ".join(map(str, self.pids)))

    def _start_daemons(self) -> None:
        env = self.env
        if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode != 0:
            munge = pwd.getpwnam("munge")
            os.makedirs("/run/munge", exist_ok=True)
            os.chown("/run/munge", munge.pw_uid, munge.pw_gid)
            piddir = os.path.join(STATE_DIR, "munge")  # munged (user munge) cannot reach pytest's tmp
            os.makedirs(piddir, exist_ok=True)
            os.chown(piddir, munge.pw_uid, munge.pw_gid)
            pidfile = os.path.join(piddir, "munged.pid")
            if os.path.exists(pidfile):
                os.remove(pidfile)
            subprocess.run(["runuser", "-u", "munge", "--", which("munged"), f"--pid-file={pidfile}"],
                           check=True, env=env)
            self._record(_read_pid(pidfile))
        subprocess.run([which("slurmctld"), "-f", self.conf], check=True, env=env)
        self._record(_read_pid(os.path.join(self.dir, "slurmctld.pid")))
        subprocess.run([which("slurmd"), "-f", self.conf], check=True, env=env)
        self._record(_read_pid(os.path.join(self.dir, "slurmd.pid")))
        deadline = time.time() + 30
        while time.time() < deadline:
            state = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=env)
            if state.stdout.strip() == "idle":
                return
            time.sleep(0.2)
        raise RuntimeError(f"local SLURM node not idle after 30s; logs in {self.dir}/log")

    def stop(self) -> None:
        if self.pids:
            env = self.env
            subprocess.run(["scancel", "--user", "root"], capture_output=True, env=env)
            deadline = time.time() + 15
            while time.time() < deadline:
                queue = subprocess.run(["squeue", "-h", "-t", "pending,running,completing"],
                                       capture_output=True, text=True, env=env)
                if queue.returncode != 0 or not queue.stdout.strip():
                    break
                time.sleep(0.2)
            _terminate(list(reversed(self.pids)))
            self.pids = []
            if os.path.exists(PIDS):
                os.remove(PIDS)
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None
