"""Output flood benchmark (issue 22): 100 jobs with a progress parser each print
200,000 lines at once. While they do, and after, a client pings the daemon's WebSocket
and a bare tornado echo server at the same moment (the floor: the machine is just as
busy for both), and `zephserver-status` is timed (beside the same command on the idle
daemon, before the flood). Once the last job has ended, the daemon's CPU is sampled
until it is idle.

    python bench/bench_flood.py      (JOBS=100, LINES=200000)
"""

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime

from _common import REPO, cpu_seconds, daemon_running, median, pct, until_idle
from bench_websocket import PING, echo_server

from tests.support.daemon import run_cli, short_tmpdir, write_settings
from tests.support.web import Ws
from zephserver.config import load_settings
from zephserver.infra.control_protocol import ControlClient

JOBS = int(os.environ.get("JOBS", "100"))
LINES = int(os.environ.get("LINES", "200000"))
# one line at a time, as a simulation prints: "step i of n" padded to 80 bytes
FLOOD = """
import sys
n = int(sys.argv[1])
write = sys.stdout.write
for i in range(1, n + 1):
    write(f"step {i:>9} of {n:>9} " + "x" * 53 + "\\n")
"""
IDLE_CPU = 0.05  # a core's share below which the daemon counts as idle (per 200 ms window)


# Pings run in a process of their own, so that this client's work (its job list, the
# updates it is sent) delays neither. Pinging stops when stdin closes; the latencies (ms)
# come back as JSON lines, the daemon's then the echo's.
PINGER = """
import asyncio, json, sys, threading, time
from tornado.websocket import websocket_connect
PING = sys.argv[3]

async def main():
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)),
                     daemon=True).start()
    conns = [await websocket_connect(url) for url in sys.argv[1:3]]
    lat = [[], []]
    while not stop.is_set():
        for i, ws in enumerate(conns):
            t = time.perf_counter()
            await ws.write_message(PING)
            await ws.read_message()
            lat[i].append((time.perf_counter() - t) * 1e3)
        await asyncio.sleep(0.01)
    for got in lat:
        print(json.dumps(got), flush=True)

asyncio.run(main())
"""


def status_once(settings: str, how: str | None) -> float:
    """ms for `zephserver-status --json`; for the same request sent straight to the
    control socket (``how`` its path: the daemon's own share); or, ``how`` "python", for
    starting a bare interpreter (what any new process pays on a machine this busy)."""
    t = time.perf_counter()
    if how is None:
        run_cli("zephserver-status", "--settings", settings, "--json")
    elif how == "python":
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    else:
        with ControlClient(how, 30) as client:
            client.call("status")
    return (time.perf_counter() - t) * 1e3


def status_times(settings: str, stop: threading.Event, out: dict) -> None:
    while not stop.is_set():
        for kind, how in out["how"].items():
            out[kind].append(status_once(settings, how))
        stop.wait(0.2)


def time_status(settings: str, how: str | None, n: int = 5) -> float:
    return median([status_once(settings, how) for _ in range(n)])


async def flood(url: str, echo_url: str, token: str, pid: int, settings: str) -> None:
    ws = await Ws.connect(url, token=token)
    await ws.call("jobs.subscribe", {})
    socket_path = load_settings(settings).CONFIGURATION_NETWORK_INTERFACE
    idle = {kind: time_status(settings, how) for kind, how in
            (("cli", None), ("socket", socket_path), ("python", "python"))}
    zeph_url = url.replace("http://", "ws://") + "/ws"
    pinger = subprocess.Popen([sys.executable, "-c", PINGER, zeph_url, echo_url, PING],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    stop_status = threading.Event()
    status: dict = {"how": {"cli": None, "socket": socket_path, "python": "python"},
                    "cli": [], "socket": [], "python": []}
    statuser = threading.Thread(target=status_times, args=(settings, stop_status, status))
    statuser.start()
    t0, cpu0 = time.perf_counter(), cpu_seconds(pid)
    batch = [{"jsonrpc": "2.0", "id": i, "method": "jobs.submit",
              "params": {"app": "flood", "params": {"n": LINES}}} for i in range(JOBS)]
    await ws.send(batch)
    ids: set[int] = set()
    while not ids:
        reply = await ws.recv(120)
        if isinstance(reply, list):
            if any("result" not in r for r in reply):
                raise SystemExit(f"submission refused: {reply[0]}")
            ids = {r["result"]["id"] for r in reply}
    while True:
        jobs = (await ws.call("jobs.list", {"limit": JOBS + 10}, timeout=120))["result"]["jobs"]
        mine = [j for j in jobs if j["id"] in ids]
        # done when every job ended and its parser has read its last line
        if len(mine) == JOBS and all(j["state"] == "SUCCEEDED" and
                                     (j["progress"] or {}).get("percent") == 100.0
                                     for j in mine):
            break
        if any(j["state"] in ("FAILED", "CANCELLED") for j in mine):
            failed = [j for j in mine if j["state"] in ("FAILED", "CANCELLED")]
            raise SystemExit(f"a flood job failed: {failed}")
        await asyncio.sleep(0.2)
    flood_s = time.perf_counter() - t0
    stop_status.set()
    out, _ = pinger.communicate(timeout=60)
    zeph_lat, echo_lat = (json.loads(line) for line in out.splitlines())
    statuser.join()
    # idle: the first 200 ms window in which the daemon used under IDLE_CPU of a core
    last_end = max(datetime.fromisoformat(j["finished"]) for j in mine).timestamp()
    idle_after = await until_idle(pid, IDLE_CPU) - last_end
    cpu_used = cpu_seconds(pid) - cpu0
    progress = {j["progress"]["percent"] for j in mine}
    await ws.aclose()
    parsed_after = time.time() - (time.perf_counter() - t0 - flood_s) - last_end
    print(f"{JOBS} jobs x {LINES:,} lines with a progress parser: all ended and parsed in "
          f"{flood_s:.1f} s, progress {sorted(progress)}; the last line parsed "
          f"{parsed_after:.2f} s after the last job ended", flush=True)
    print(f"ws ping during the flood: p50 {median(zeph_lat):.2f} ms, p99 {pct(zeph_lat, 99):.1f} "
          f"ms ({len(zeph_lat)} pings) | baseline bare tornado echo pinged at the same moment: "
          f"p50 {median(echo_lat):.2f} ms, p99 {pct(echo_lat, 99):.1f} ms | goal p99 < 50 ms",
          flush=True)
    python = f"`python -c pass` at the same moments: p50 {median(status['python']):.0f} ms, " \
             f"max {max(status['python']):.0f} ms (idle machine {idle['python']:.0f} ms)"
    for kind, what in (("cli", "zephserver-status"), ("socket", "status on the control socket")):
        print(f"{what} during the flood: p50 {median(status[kind]):.0f} ms, max "
              f"{max(status[kind]):.0f} ms ({len(status[kind])} runs; idle daemon "
              f"{idle[kind]:.0f} ms) | baseline {python} | goal < 100 ms", flush=True)
    print(f"daemon idle (< {IDLE_CPU:.0%} of a core) {idle_after:.2f} s after the last job ended, "
          f"{cpu_used:.1f} s of CPU used from the submission on | goal within 1 s", flush=True)


def main() -> None:
    os.chdir(REPO)
    work = short_tmpdir("zb")
    apps = {"flood": {"argv": ["$python", "-c", FLOOD, "$n"],
                      "params": {"n": {"type": "int", "min": 1, "max": 10**8}},
                      "parser": {"progress": r"step\s+(?P<value>\d+) of\s+(?P<total>\d+)"}}}
    settings = write_settings(work, LOG_LEVEL="WARNING", APPS=apps, WS_MAX_BATCH=200,
                              WS_MAX_IN_FLIGHT=256, TASK_QUEUE_SIZE=512,
                              RESOURCES={"cores": JOBS * 2, "memory": 10**6, "licenses": {}},
                              JOBS_DIR=str(work / "jobs"))
    with daemon_running(settings) as (daemon, token), echo_server() as echo_url:
        pid = json.loads(daemon.cli("zephserver-status", "--json").stdout)["pid"]
        asyncio.run(flood(daemon.url, echo_url, token, pid, str(settings)))


if __name__ == "__main__":
    main()
