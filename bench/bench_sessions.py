"""Sessions benchmark (issue 5), each figure beside a floor measured in the same run.

1. POST /paraview -> 200 for an app whose ready line comes at once, one at a time over
   a kept-alive connection: p50/p99 over N sessions (each deleted after). Floors: the same
   program started with posix_spawn and read until its ready line; and the daemon's own
   authenticated HTTP round trip (GET of an unknown session, a 404).
2. 50 concurrent POSTs: time until all are ready, and whether any port was handed out
   twice; floor: 50 posix_spawns of the program, each read until its ready line.

    python bench/bench_sessions.py      (N=200 by default)
"""

import http.client
import json
import os
import threading
import time
from urllib.parse import urlparse

from _common import REPO, daemon_running, median, pct

from tests.support.daemon import short_tmpdir, write_settings
from tests.support.sessions import free_port_range

N = int(os.environ.get("N", "200"))
CONCURRENT = 50
PROGRAM = ["/bin/sh", "-c", "echo ready; exec sleep 600"]


def spawn_until_ready() -> tuple[float, int]:
    """Start the program with its output on a pipe, read until "ready"; (ms, pid)."""
    t = time.perf_counter()
    r, w = os.pipe()
    actions = [(os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_CLOSE, r)]
    pid = os.posix_spawn(PROGRAM[0], PROGRAM, os.environ, file_actions=actions,
                         setsid=True)
    os.close(w)
    seen = b""
    while b"ready" not in seen:
        seen += os.read(r, 4096)
    elapsed = (time.perf_counter() - t) * 1e3
    os.close(r)
    return elapsed, pid


def reap(pids: list[int]) -> None:
    for pid in pids:
        os.killpg(pid, 15)
        os.waitpid(pid, 0)


class Client:
    def __init__(self, url: str, token: str) -> None:
        u = urlparse(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}",
                        "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        self.conn.request(method, path, json.dumps(body) if body is not None else None,
                          self.headers)
        resp = self.conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")


def timed(fn, *args) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*args)
    return (time.perf_counter() - t) * 1e3, out


def run_bench(url: str, token: str) -> None:
    client = Client(url, token)
    floor = []
    for _ in range(N):
        ms, pid = spawn_until_ready()
        floor.append(ms)
        reap([pid])
    http_floor = [timed(client.request, "GET", "/paraview/999999")[0] for _ in range(N)]
    posts = []
    for _ in range(N):
        ms, (status, body) = timed(client.request, "POST", "/paraview", {"application": "quick"})
        assert status == 200, body
        posts.append(ms)
        status, _ = client.request("DELETE", f"/paraview/{body['id']}")
        assert status == 200
    print(f"POST -> 200 (ready line at once), {N} sessions: p50 {median(posts):.2f} ms, "
          f"p99 {pct(posts, 99):.2f} ms | baseline spawn + read ready line: p50 "
          f"{median(floor):.2f} ms, p99 {pct(floor, 99):.2f} ms; authenticated GET 404: "
          f"p50 {median(http_floor):.2f} ms | ratio p50 {median(posts) / median(floor):.2f} "
          f"| goal p50 < 20 ms", flush=True)

    # 50 at once
    t = time.perf_counter()
    pids = [spawn_until_ready()[1] for _ in range(CONCURRENT)]
    floor_all = time.perf_counter() - t
    reap(pids)
    results: list[tuple[int, dict]] = []
    clients = [Client(url, token) for _ in range(CONCURRENT)]
    barrier = threading.Barrier(CONCURRENT + 1)

    def one(c: Client) -> None:
        barrier.wait()
        results.append(c.request("POST", "/paraview", {"application": "quick"}))

    threads = [threading.Thread(target=one, args=(c,)) for c in clients]
    for th in threads:
        th.start()
    barrier.wait()
    t = time.perf_counter()
    for th in threads:
        th.join()
    all_ready = time.perf_counter() - t
    ok = [body for status, body in results if status == 200]
    ports = [body["port"] for body in ok]
    print(f"{CONCURRENT} concurrent POSTs: all ready in {all_ready:.3f} s, {len(ok)} of "
          f"{CONCURRENT} got 200, ports handed out twice: {len(ports) - len(set(ports))} | "
          f"baseline {CONCURRENT} spawns read until ready: {floor_all:.3f} s | ratio "
          f"{all_ready / floor_all:.2f}", flush=True)
    for body in ok:
        client.request("DELETE", f"/paraview/{body['id']}")


def main() -> None:
    os.chdir(REPO)
    work = short_tmpdir("zb")
    low, high = free_port_range(300)
    apps = {"quick": {"kind": "session", "argv": PROGRAM, "ready_line": "ready",
                      "port_range": [low, high], "resources": {"cores": 0}, "grace": 1}}
    settings = write_settings(work, LOG_LEVEL="WARNING", APPS=apps,
                              LAUNCHER_PROXY_FILE=str(work / "proxy.map"))
    with daemon_running(settings) as (daemon, token):
        run_bench(daemon.url, token)


if __name__ == "__main__":
    main()
