"""Applications and helpers for the job tests (real programs, started by the real daemon)."""

import asyncio
import contextlib
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from tests.support.web import Ws

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "LOST"}

WAIT_FOR_FILE = """
import os, sys, time
print("start", os.getpid(), flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)
print("end", flush=True)
sys.exit(int(sys.argv[2]))
"""

IGNORE_TERM = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
while True:
    time.sleep(1)
"""

LINES = """
import sys
n, width = int(sys.argv[1]), int(sys.argv[2])
line = ("x" * (width - 1) + "\\n").encode()
out = sys.stdout.buffer
for i in range(n):
    out.write(b"%08d" % i + line[8:])
out.write(b"no newline at the end")
"""


# what a job's process runs at: its niceness, and its session's scheduling group's
PRIORITY = """
import os
print("nice", os.nice(0))
try:
    print(open("/proc/self/autogroup").read().strip())
except OSError:
    print("no autogroup")
for line in open("/proc/self/cgroup"):
    if "cpu" in line.split(":")[1].split(","):
        print("cpu", line.rstrip().split(":", 2)[2])
"""


def job_apps(root: Path) -> dict[str, dict]:
    py = "$python"
    return {
        "echo": {"argv": [py, "-c", "import sys; print(sys.argv[1])", "$text"],
                 "params": {"text": {"type": "str", "regexp": r"[A-Za-z0-9 _.-]{0,80}",
                                     "default": "hello"}},
                 "resources": {"cores": 1}},
        "sleep": {"argv": ["sleep", "$seconds"],
                  "params": {"seconds": {"type": "float", "default": 30, "min": 0, "max": 3600},
                             "ncpu": {"type": "int", "default": 1, "min": 1, "max": 64},
                             "mode": {"type": "str", "inList": ["a", "b"], "default": "a"}},
                  "resources": {"cores": "$ncpu", "licenses": {"lic": "$ncpu"}}},
        "exit": {"argv": [py, "-c", "import sys; print('bye'); sys.exit(int(sys.argv[1]))",
                          "$code"],
                 "params": {"code": {"type": "int", "default": 0, "min": 0, "max": 255}}},
        "missing": {"argv": ["/nonexistent/solver", "-v"]},
        "stubborn": {"argv": [py, "-u", "-c", IGNORE_TERM], "grace": 0.5},
        "forker": {"argv": ["sh", "-c", "sleep 1000 & sleep 1000 & echo forked; wait"],
                   "grace": 2},
        "waitfile": {"argv": [py, "-u", "-c", WAIT_FOR_FILE, "$flag", "$code"],
                     "params": {"flag": {"type": "path", "root": str(root), "must_exist": False},
                                "code": {"type": "int", "default": 0, "min": 0, "max": 255}},
                     "resources": {"cores": 0}},
        "lines": {"argv": [py, "-c", LINES, "$n", "$width"],
                  "params": {"n": {"type": "int", "default": 1000, "min": 0, "max": 10**8},
                             "width": {"type": "int", "default": 80, "min": 9, "max": 10000}}},
        "input": {"argv": ["cat", "$file"],
                  "params": {"file": {"type": "path", "root": str(root / "inputs")}}},
        "wall": {"argv": ["sleep", "30"], "wall_time": 0.5, "grace": 1},
        "demo": {"argv": [py, "-u", "-m", "zephserver.examples.demo_job", "--steps", "$steps",
                          "--delay", "0.01"],
                 "params": {"steps": {"type": "int", "default": 5, "min": 1, "max": 1000}},
                 "parser": {"progress": r"step (?P<value>\d+) of (?P<total>\d+)",
                            "status": r"^demo: (?P<status>.+)"}},
        "lsdyna": {"argv": [py, "-u", "-m", "zephserver.examples.fake_lsdyna", "--steps", "40",
                            "--delay", "$delay"],
                   "params": {"delay": {"type": "float", "default": 0.01, "min": 0, "max": 1}},
                   "parser": "lsdyna",
                   "controls": {"sw1": {"file": "d3kil", "payload": "sw1\n"}}},
        "true": {"argv": ["/bin/true"], "resources": {"cores": 1}},
        "priority": {"argv": [py, "-c", PRIORITY]},
    }


async def wait_job(ws: Ws, job_id: int, states: set[str], timeout: float = 30) -> dict:
    """Poll ``jobs.get`` until the job is in one of ``states`` (deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = await ws.call("jobs.get", {"id": job_id})
        job = reply["result"]
        if job["state"] in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['state']}: {job}")
        await asyncio.sleep(0.02)


async def submit(ws: Ws, app: str, **params: Any) -> dict:
    reply = await ws.call("jobs.submit", {"app": app, "params": params})
    assert "result" in reply, reply
    return reply["result"]


def proc_stat(pid: int | str) -> list[bytes] | None:
    """/proc/PID/stat from the state field on (state, ppid, pgrp, ...), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2:].split()


def zombies_of(pid: int) -> list[int]:
    """The children of ``pid`` that died and were not reaped."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = [int(c) for c in f.read().split()]
    return [c for c in children if (proc_stat(c) or [b""])[0] == b"Z"]


def is_zombie_or_gone(pid: int) -> bool:
    fields = proc_stat(pid)
    return fields is None or fields[0] == b"Z"


def processes_in_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        fields = proc_stat(entry) if entry.isdigit() else None
        if fields is not None and fields[0] != b"Z" and int(fields[2]) == pgid:
            out.append(int(entry))
    return out


def keepers_under(path: Path) -> list[int]:
    """The pids of the keepers (launch.keeper) of daemons whose DATA_DIR is in ``path``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"keeper.py") for a in args) and any(
                a.startswith(os.fsencode(str(path))) and a.endswith(b"keeper.sock")
                for a in args):
            found.append(int(entry))
    return found


def kill_jobs_under(path: Path) -> None:
    """Kill leftover job processes whose command line mentions ``path`` (test cleanup:
    jobs outlive the daemon by design)."""
    needle = os.fsencode(str(path))
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle in f.read():
                    os.killpg(int(entry), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue
    remove_cgroups_of(path)


def remove_cgroups_of(path: Path) -> None:
    """The cgroups of the daemons whose DATA_DIR is ``path`` or a directory in it: a
    daemon that is not restarted leaves its jobs' (emptied) groups, as it should."""
    from zephserver.launch.cgroups import tops

    candidates = [path, *(p for p in path.iterdir() if p.is_dir())] if path.is_dir() else []
    for top in (t for data_dir in candidates for t in tops(str(data_dir))):
        remove_groups(top)


def zephserver_groups() -> set[str]:
    """Every daemon's top cgroup folder (``zephserver-<digest>``) under ours, in every
    hierarchy (where they go: the folders of ``tops`` for any DATA_DIR)."""
    from zephserver.launch.cgroups import tops

    found = set()
    for root in {os.path.dirname(top) for top in tops("/")}:
        with contextlib.suppress(OSError):
            found |= {os.path.join(root, n) for n in os.listdir(root)
                      if n.startswith("zephserver-")}
    return found


def remove_groups(top: str) -> None:
    """``top`` and the groups below it, what still runs in them killed first."""
    for root, dirs, _files in os.walk(top, topdown=False):
        for name in dirs:
            group = os.path.join(root, name)
            # what still runs in it first (a program the keeper started names no path
            # of the test's in its command line)
            try:
                with open(os.path.join(group, "cgroup.kill"), "w") as f:
                    f.write("1")
            except FileNotFoundError:  # (a v1 hierarchy: one at a time)
                for pid in _members(group).split():
                    with contextlib.suppress(OSError):
                        os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
            deadline = time.monotonic() + 5
            while _members(group) and time.monotonic() < deadline:
                time.sleep(0.01)  # (cleanup: the kill is asynchronous)
            with contextlib.suppress(OSError):
                os.rmdir(group)
    with contextlib.suppress(OSError):
        os.rmdir(top)


# The kernel's weight of each niceness 0..19 (kernel/sched/core.c, sched_prio_to_weight).
NICE_WEIGHTS = (1024, 820, 655, 526, 423, 335, 272, 215, 172, 137,
                110, 87, 70, 56, 45, 36, 29, 23, 18, 15)


def autogroup_nice(pid: int | str = "self") -> int | None:
    """The niceness of the autogroup of process ``pid`` (None: no autogroups here, or
    ``pid`` is in the kernel's default one, which shows nothing)."""
    try:
        with open(f"/proc/{pid}/autogroup") as f:
            fields = f.read().split()
    except OSError:
        return None
    return int(fields[-1]) if fields else None


def cgroup_mount(controller: str) -> str | None:
    """Where the v1 hierarchy of ``controller`` is mounted, if we may write to it."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            before, _, after = line.partition(" - ")
            fstype, _source, options = after.split()[:3]
            if fstype == "cgroup" and controller in options.split(","):
                mount = before.split()[4]
                return mount if os.access(mount, os.W_OK) else None
    return None


def _members(group: str) -> str:
    try:
        with open(os.path.join(group, "cgroup.procs")) as f:
            return f.read().strip()
    except OSError:
        return ""


def stop_site(daemon: Any, work: Path, *servers: Any) -> None:
    """A test module's daemon stopped, its helper servers closed, every job left under
    ``work`` killed and ``work`` removed."""
    daemon.cli("zephserver-stop")
    daemon.close()
    for server in servers:
        server.close()
    kill_jobs_under(work)
    shutil.rmtree(work, ignore_errors=True)


def pids_of(marker: str) -> list[int]:
    """Processes running ``sleep <marker>`` (a test's own, told apart by its marker)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[:2] == [b"sleep", marker.encode()]:
                        found.append(int(entry))
            except OSError:
                pass
    return found
