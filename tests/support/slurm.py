"""A real one-node Slurm for the tests: munged, slurmctld and slurmd started as root in a
temporary folder on free ports (shared/recipes.md), stopped and removed afterwards, even
when a test fails half way.

    with Slurm() as slurm:
        slurm.env            # {"SLURM_CONF": ...}: what every Slurm command needs
        slurm.stop_controller(); slurm.start_controller()   # slurmctld down, then back
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.daemon import short_tmpdir
from tests.support.postgres import free_port
from tests.support.server import ScratchServer

CPUS = 4
MEMORY_MIB = 4000


def available() -> str:
    """Why a real Slurm cannot run here ("" when it can)."""
    if os.geteuid() != 0:
        return "Slurm's daemons are started as root"
    for program in ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged"):
        if not os.access(program, os.X_OK):
            return f"{program} is not installed (make test installs slurm-wlm and munge)"
    return ""


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _gone(pid: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid is not None and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return pid is None


class Slurm(ScratchServer):
    def __init__(self, cpus: int = CPUS) -> None:
        self.cpus = cpus
        self.dir = short_tmpdir("zslurm")
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.dir / "slurm.conf"
        self.env = {"SLURM_CONF": str(self.conf)}
        self.ctld_port, self.slurmd_port = free_port(), free_port()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> "Slurm":
        d = self.dir
        for sub in ("state", "spool", "log", "munge", "out"):
            (d / sub).mkdir()
        shutil.chown(d / "munge", "munge", "munge")
        os.chmod(d, 0o755)  # jobs running as other accounts reach their folders
        self._write_conf()
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged",
                        f"--socket={d}/munge/munge.sock", f"--pid-file={d}/munge/munged.pid",
                        f"--log-file={d}/munge/munged.log",
                        f"--seed-file={d}/munge/munged.seed"],
                       check=True, capture_output=True, timeout=30)
        self.start_controller()
        subprocess.run(["/usr/sbin/slurmd", "-N", self.host], env=self._env(),
                       check=True, capture_output=True, timeout=30)
        self._wait_idle()
        return self

    def _write_conf(self) -> None:
        d = self.dir
        self.conf.write_text("\n".join([
            "ClusterName=zeph", f"SlurmctldHost={self.host}(127.0.0.1)", "SlurmUser=root",
            f"SlurmctldPort={self.ctld_port}", f"SlurmdPort={self.slurmd_port}",
            "AuthType=auth/munge", f"AuthInfo=socket={d}/munge/munge.sock",
            "CredType=cred/munge", f"StateSaveLocation={d}/state",
            f"SlurmdSpoolDir={d}/spool", f"SlurmctldPidFile={d}/slurmctld.pid",
            f"SlurmdPidFile={d}/slurmd.pid", f"SlurmctldLogFile={d}/log/slurmctld.log",
            f"SlurmdLogFile={d}/log/slurmd.log", "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none", "MpiDefault=none", "MailProg=/bin/true",
            "ReturnToService=2", "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none", "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={d}/log/jobcomp.txt",
            # a quick scheduler and short timeouts: tests wait on events, not on Slurm
            "SchedulerParameters=sched_interval=1,bf_interval=1",
            "MessageTimeout=5", "KillWait=2", "MinJobAge=600",
            # more cores than the machine has: jobs here mostly wait, not compute
            "SlurmdParameters=config_overrides",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} "
            f"RealMemory={MEMORY_MIB} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
            "Licenses=dyna:2", ""]))

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def start_controller(self) -> None:
        subprocess.run(["/usr/sbin/slurmctld"], env=self._env(), check=True,
                       capture_output=True, timeout=30)
        self.wait_answering()

    def stop_controller(self) -> None:
        pid = _pid(self.dir / "slurmctld.pid")
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            if not _gone(pid, 20):
                os.kill(pid, signal.SIGKILL)

    def wait_answering(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            done = subprocess.run(["sinfo", "-h"], env=self._env(), capture_output=True,
                                  text=True, timeout=30)
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"slurmctld does not answer: {done.stderr}\n"
                                   f"{self.logs()}")
            time.sleep(0.1)

    def _wait_idle(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            done = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self._env(),
                                  capture_output=True, text=True, timeout=30)
            if done.stdout.strip() == "idle":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Slurm node is not idle: {done.stdout!r} "
                                   f"{done.stderr}\n{self.logs()}")
            time.sleep(0.1)

    def logs(self) -> str:
        out = []
        for name in ("log/slurmctld.log", "log/slurmd.log"):
            path = self.dir / name
            if path.exists():
                out.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-30:]))
        return "\n".join(out)

    def _cancel_all(self, timeout: float = 15) -> None:
        """Every job of this Slurm killed, while its daemons still run."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            while time.monotonic() < deadline:
                ids = self.run("squeue", "-h", "-o", "%i").split()
                if not ids:
                    return
                subprocess.run(["scancel", "--full", "--signal=KILL", *ids], env=self._env(),
                               capture_output=True, timeout=30)
                subprocess.run(["scancel", *ids], env=self._env(), capture_output=True,
                               timeout=30)
                time.sleep(0.2)

    def _leftovers(self) -> list[int]:
        """Processes of this Slurm still there (job steps outlive slurmd): the steps
        (their working directory is in its folder) and the jobs (their environment names
        its slurm.conf)."""
        mark, top = f"SLURM_CONF={self.conf}".encode(), str(self.dir) + os.sep
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                try:
                    if os.readlink(f"/proc/{entry}/cwd").startswith(top):
                        found.append(int(entry))
                        continue
                    with open(f"/proc/{entry}/environ", "rb") as f:
                        if mark in f.read().split(b"\0"):
                            found.append(int(entry))
                except OSError:
                    pass
        return found

    def close(self) -> None:
        if (self.dir / "slurmctld.pid").exists():
            self._cancel_all()
        pids = [_pid(self.dir / f) for f in ("slurmd.pid", "slurmctld.pid",
                                             "munge/munged.pid")]
        for pid in pids:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        for pid in pids:
            if pid is not None and not _gone(pid, 20):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for pid in self._leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- asking Slurm directly -------------------------------------------------------------

    def run(self, *argv: str) -> str:
        return subprocess.run(list(argv), env=self._env(), check=True, capture_output=True,
                              text=True, timeout=30).stdout
