"""Helpers shared by the benchmarks: percentiles and a one-line report format."""

import asyncio
import os
import shutil
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(what: str, value: float, unit: str, baseline_name: str, baseline: float,
           goal: str = "") -> None:
    ratio = value / baseline if baseline else float("inf")
    line = f"{what}: {value:.3f} {unit} | baseline {baseline_name}: {baseline:.3f} {unit} " \
           f"| ratio {ratio:.2f}"
    if goal:
        line += f" | goal {goal}"
    print(line, flush=True)


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` (MiB)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used (s)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def until_idle(pid: int, share: float = 0.05, window: float = 0.2,
                     deadline: float | None = None) -> float:
    """Until ``pid`` uses under ``share`` of a core over a ``window`` (or ``deadline`` s
    have passed); the wall-clock time (``time.time()``) that first idle window began."""
    end = None if deadline is None else time.monotonic() + deadline
    while True:
        c, t = cpu_seconds(pid), time.time()
        await asyncio.sleep(window)
        if (cpu_seconds(pid) - c) / (time.time() - t) < share or (
                end is not None and time.monotonic() > end):
            return t


def children_cpu_seconds(pid: int) -> float:
    """CPU time of the children ``pid`` has reaped (s): the programs it started."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


USER = """
from django.contrib.auth.models import User
from zephserver.web.models import ApiToken
print(ApiToken.issue(User.objects.create_user("bench", is_staff={staff}))[1])
"""


@contextmanager
def daemon_running(settings: Path, staff: bool = False) -> Iterator[tuple]:
    """``start_daemon``, then stopped, and the folder of ``settings`` removed."""
    from tests.support.daemon import run_cli

    try:
        daemon, token = start_daemon(settings, staff)
        try:
            yield daemon, token
        finally:
            run_cli("zephserver-stop", "--settings", str(settings))
            daemon.close()
    finally:
        shutil.rmtree(settings.parent, ignore_errors=True)


def start_daemon(settings: Path, staff: bool = False) -> tuple:
    """Migrate, create the user "bench", start the daemon: (DaemonProcess, its token)."""
    from tests.support.daemon import DaemonProcess, run_cli
    from tests.support.web import django_shell

    run_cli("zephserver-admin", "--settings", str(settings), "migrate", "-v0")
    token = django_shell(settings, USER.format(staff=staff), None).splitlines()[-1]
    return DaemonProcess(settings).start(), token
