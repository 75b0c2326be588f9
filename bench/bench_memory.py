"""Daemon memory (issue 22): RSS fresh, with 100 running jobs, and from job 1,000 to job
10,000 of a stream of short jobs; beside circus and supervisord each supervising 100
`sleep` processes, measured in the same run (bench/_peers.py).

    python bench/bench_memory.py      (JOBS=10000; PEERS=0 skips the peers)
"""

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import _peers
from _common import REPO, daemon_running, median, rss_mib

from tests.reliability.test_memory import drained, settled, submit_many, trims
from tests.support.daemon import child_env, short_tmpdir, write_settings
from tests.support.jobs import keepers_under
from tests.support.web import Ws
from zephserver import interpreter

JOBS = int(os.environ.get("JOBS", "10000"))
BURST = 1000


def quiet_rss(pid: int) -> float:
    """RSS once it has stopped moving (median of reads over a second)."""
    reads = []
    for _ in range(5):
        time.sleep(0.2)
        reads.append(rss_mib(pid))
    return median(reads)


# The floor under "RSS fresh": an interpreter that loads what every daemon loads (tornado's
# servers, Django set up as the daemon sets it up: its apps and models; the daemon loads
# Django's request handler only for the first web request, prometheus_client only for the
# first scrape) as the daemon's interpreter runs (zephserver.interpreter: its allocator
# settings, no docstrings), and runs nothing of zephserver's services.
LIBRARY_FLOOR = """
import sys, tempfile
sys.modules.setdefault("curses", None)
from zephserver import memory
memory.one_arena()
import tornado.httpserver, tornado.web, tornado.websocket, tornado.wsgi
from zephserver.config import settings_from_values
from zephserver.web.django_setup import setup_django
setup_django(settings_from_values(DATA_DIR=tempfile.mkdtemp()))
memory.give_back_now()
print("loaded", flush=True)
sys.stdin.read()
"""


def library_floor() -> float:
    """RSS of LIBRARY_FLOOR's interpreter (MiB), run as the daemon's is (its start's
    objects packed by pymalloc where settled_heap.so is built, in glibc's heap otherwise;
    no per-thread caches, no docstrings, no column positions: zephserver.interpreter)."""
    env = {**child_env(), "PYTHONMALLOC": interpreter.allocator(),
           "GLIBC_TUNABLES": interpreter.NO_THREAD_CACHE}
    with subprocess.Popen([sys.executable, *interpreter.FLAGS, "-OO", "-c", LIBRARY_FLOOR],
                          stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env=env, cwd=REPO) as floor:
        try:
            line = floor.stdout.readline() if floor.stdout else ""
            if line != "loaded\n":
                raise RuntimeError(f"the library floor did not load (it said {line!r})")
            return quiet_rss(floor.pid)
        finally:
            floor.kill()


def peers() -> str:
    if not _peers.available():
        return "peers not measured"
    found = []
    for name, run in (("circus", _peers.circusd), ("supervisord", _peers.supervisord)):
        with run(100) as pid:
            found.append(f"{name} {quiet_rss(pid):.1f} MiB")
    return ", ".join(found) + " (100 sleeps each)"


async def until_running(ws: Ws, n: int) -> None:
    while True:
        if (await ws.call("jobs.list", {"state": "RUNNING", "limit": 1}))["result"]["total"] >= n:
            return
        await asyncio.sleep(0.1)


def keeper_rss(work: Path) -> str:
    """The keeper's RSS (it starts the jobs where they have cgroups), told apart: it is
    a process of its own, like circus's and supervisord's children are not."""
    found = [rss_mib(pid) for pid in keepers_under(work)]
    return f"{found[0]:.1f} MiB" if found else "none (no cgroups: jobs run under the shim)"


async def hundred_running(ws: Ws, pid: int, work: Path) -> tuple[float, str]:
    batch = [{"jsonrpc": "2.0", "id": i, "method": "jobs.submit", "params": {"app": "hold"}}
             for i in range(100)]
    await ws.send(batch)
    while not isinstance(reply := await ws.recv(60), list):
        pass
    ids = [r["result"]["id"] for r in reply]
    await until_running(ws, 100)
    rss, keeper = await asyncio.to_thread(quiet_rss, pid), keeper_rss(work)
    for i in ids:
        await ws.call("jobs.cancel", {"id": i})
    await drained(ws)
    return rss, keeper


async def stream(ws: Ws, daemon) -> dict[int, float]:
    readings = {}
    for done in range(BURST, JOBS + 1, BURST):
        count, _ = trims(daemon)
        await submit_many(ws, BURST)
        await drained(ws)
        readings[done] = await asyncio.to_thread(settled, daemon, count)
    return readings


async def measure(daemon, token: str, work: Path) -> tuple[float, tuple[float, str], dict]:
    fresh = await asyncio.to_thread(quiet_rss, daemon.pid)
    ws = await Ws.connect(daemon.url, token=token)
    with_100 = await hundred_running(ws, daemon.pid, work)
    readings = await stream(ws, daemon)
    await ws.aclose()
    return fresh, with_100, readings


def main() -> None:
    os.chdir(REPO)
    peer = peers()
    work = short_tmpdir("zb", "/dev/shm")  # 10,000 jobs' files: removed in seconds there
    apps = {"true": {"argv": ["/bin/true"], "resources": {"cores": 1}},
            "hold": {"argv": ["sleep", "1000"], "resources": {"cores": 1}, "grace": 2}}
    settings = write_settings(work, LOG_LEVEL="WARNING", APPS=apps,
                              RESOURCES={"cores": 200, "memory": 100000, "licenses": {}},
                              WS_MAX_IN_FLIGHT=256, WS_MAX_BATCH=200, TASK_QUEUE_SIZE=512)
    with daemon_running(settings) as (daemon, token):
        fresh, (with_100, keeper), readings = asyncio.run(measure(daemon, token, work))
    print(f"daemon RSS fresh {fresh:.1f} MiB, with 100 running jobs {with_100:.1f} MiB (and its "
          f"keeper {keeper}) | floor, same run: its libraries loaded in a bare interpreter "
          f"{library_floor():.1f} MiB | peers, same run: {peer} | goal < 48 MiB fresh",
          flush=True)
    first, last = readings[BURST], readings[JOBS]
    print(f"daemon RSS after job {BURST:,} {first:.1f} MiB, after job {JOBS:,} {last:.1f} MiB "
          f"({last - first:+.1f}; every 1,000: {', '.join(f'{r:.1f}' for r in readings.values())})"
          f" | goal flat within 2 MiB from job 1,000 to job 10,000", flush=True)


if __name__ == "__main__":
    main()
