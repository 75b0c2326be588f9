"""WebSocket benchmark (issues 3 and 22): zephserver `ping` (router, answered on the loop
thread) vs a bare tornado echo server, both in their own process on this machine, driven
by the same client.

Prints round trips/s and p50/p99 latency for 1 and 100 concurrent clients, and the ratio.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from _common import REPO, daemon_running, median, pct
from tornado.websocket import websocket_connect

from tests.support.daemon import short_tmpdir, write_settings

ECHO_SERVER = """
import asyncio, sys, tornado.web, tornado.websocket
class Echo(tornado.websocket.WebSocketHandler):
    def on_message(self, m):
        self.write_message(m)
async def main():
    app = tornado.web.Application([(r"/ws", Echo)])
    server = app.listen(0, "127.0.0.1")
    port = list(server._sockets.values())[0].getsockname()[1]
    print(port, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""
PING = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})
DURATION = 3.0


async def client(url: str, stop_at: float, latencies: list[float]) -> None:
    ws = await websocket_connect(url)
    while time.perf_counter() < stop_at:
        t = time.perf_counter()
        await ws.write_message(PING)
        await ws.read_message()
        latencies.append(time.perf_counter() - t)
    ws.close()


async def drive(url: str, clients: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    await asyncio.gather(*(client(url, time.perf_counter() + 0.5, []) for _ in range(clients)))
    start = time.perf_counter()
    await asyncio.gather(*(client(url, start + DURATION, latencies) for _ in range(clients)))
    return len(latencies) / (time.perf_counter() - start), latencies


@contextmanager
def echo_server() -> Iterator[str]:
    """A bare tornado echo server in a process of its own: its WebSocket URL."""
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE,
                            text=True)
    try:
        yield f"ws://127.0.0.1:{echo.stdout.readline().strip()}/ws"
    finally:
        echo.kill()
        echo.wait()


def measure(url: str, clients: int) -> tuple[float, list[float]]:
    return asyncio.run(drive(url, clients))


def main() -> None:
    os.chdir(REPO)
    # POOL=n overrides TASK_POOL_SIZE to compare pool sizes
    settings = write_settings(short_tmpdir("zb"), LOG_LEVEL="WARNING",
                              TASK_POOL_SIZE=int(os.environ.get("POOL", "8")))
    with daemon_running(settings) as (daemon, _), echo_server() as echo_url:
        zeph_url = daemon.url.replace("http://", "ws://") + "/ws"
        for clients in (1, 100):
            # alternate the two servers to spread the machine's noise over both
            e_rate, e_lat = measure(echo_url, clients)
            z_rate, z_lat = measure(zeph_url, clients)
            print(f"{clients:>3} client(s): zephserver ping {z_rate:,.0f} rt/s "
                  f"(p50 {median(z_lat) * 1e3:.2f} ms, p99 {pct(z_lat, 99) * 1e3:.2f} ms) | "
                  f"baseline bare tornado echo {e_rate:,.0f} rt/s (p50 {median(e_lat) * 1e3:.2f}"
                  f" ms, p99 {pct(e_lat, 99) * 1e3:.2f} ms) | ratio {z_rate / e_rate:.2f} | goal "
                  f"{'>= 0.70' if clients == 1 else '>= 0.75, p99 < 50 ms'}", flush=True)


if __name__ == "__main__":
    main()
