"""Floods: a job printing flat out to a subscriber, many idle WebSockets, and a client
that never reads. Each is measured beside the same figure without the flood, in the
same run; the assertions catch stalls (ten times the goal), the figures tell the rest."""

import asyncio
import json
import socket
import statistics
import time
import urllib.request

import pytest

from tests.reliability.conftest import scale
from tests.support.console import handshake, send_text
from tests.support.daemon import child_env, short_tmpdir, write_settings
from tests.support.jobs import stop_site
from tests.support.poll import poll_async, poll_until
from tests.support.web import Ws, run, start_with_users

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

FLOOD = "yes 'a line of a job that prints flat out, with some padding' | head -c 400000000"
IDLE = scale(300, 1000)


@pytest.fixture(scope="module")
def server():
    work = short_tmpdir("zf")
    apps = {"flood": {"argv": ["/bin/sh", "-c", FLOOD], "resources": {"cores": 0},
                      "grace": 1}}
    daemon = start_with_users(write_settings(
        work, APPS=apps, DJANGO_SETTINGS_MODULE="tests.support.django_test_settings",
        LOG_LEVEL="WARNING", WS_MAX_CONNECTIONS=IDLE + 100), child_env())
    yield daemon
    stop_site(daemon, work)


async def ping_times(ws: Ws, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        assert (await ws.call("ping"))["result"] == "pong"
        times.append((time.perf_counter() - started) * 1000)
    return times


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def control_times(server, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        assert server.cli("zephserver-status").returncode == 0
        times.append((time.perf_counter() - started) * 1000)
    return times


def test_a_log_flood_leaves_ping_and_control_their_latency(server, figure):
    token = server.tokens["alice"]

    async def scenario():
        bob = await Ws.connect(server.url, token=server.tokens["bob"])
        quiet = await ping_times(bob, 200)
        quiet_control = await asyncio.to_thread(control_times, server, 5)
        owner = await Ws.connect(server.url, token=token)
        reader = await Ws.connect(server.url, token=token)
        job = (await owner.call("jobs.submit", {"app": "flood"}))["result"]
        await reader.call("jobs.subscribe", {"id": job["id"], "offset": 0})
        got = 0

        async def read():
            nonlocal got
            while True:
                note = await reader.until("job.output", timeout=30)
                got = note["next_offset"]

        reading = asyncio.create_task(read())
        await poll_async(lambda: got > 10 << 20, 30)  # the flood is under way
        flooded = await ping_times(bob, 200)
        flooded_control = await asyncio.to_thread(control_times, server, 5)
        moved = got
        await owner.call("jobs.cancel", {"id": job["id"]})  # the reader still reading
        reading.cancel()
        for ws in (bob, owner, reader):
            await ws.aclose()
        return quiet, flooded, quiet_control, flooded_control, moved

    quiet, flooded, quiet_control, flooded_control, moved = run(scenario())
    figure(f"ping p50/p99 {statistics.median(flooded):.2f}/{p99(flooded):.2f} ms while a job "
           f"floods a subscriber ({moved / 2**20:.0f} MiB delivered) | without the flood "
           f"{statistics.median(quiet):.2f}/{p99(quiet):.2f} ms | goal p99 < 50 ms")
    figure(f"zephserver-status median {statistics.median(flooded_control):.0f} ms under the "
           f"flood | without {statistics.median(quiet_control):.0f} ms")
    assert p99(flooded) < 500
    assert max(flooded_control) < 10 * max(max(quiet_control), 1000)


def open_websockets(server) -> int:
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("zephserver_websocket_connections "):
                return int(float(line.split()[1]))
    raise AssertionError("no zephserver_websocket_connections in /metrics")


def raw_socket(server, token: str) -> socket.socket:
    host, port = server.url.split("//")[1].split(":")
    sock = socket.create_connection((host, int(port)))
    handshake(sock, server.url.replace("http", "ws", 1) + "/ws", token)
    return sock


def test_idle_websockets_and_a_client_that_never_reads(server, figure):
    """IDLE authenticated connections that say nothing, and one that subscribes to a
    flood and never reads: memory per connection, bounded buffering for the non-reader,
    ping latency for everyone else, and memory given back when they are gone."""
    token = server.tokens["alice"]
    before = server.rss_mib()
    idle = [raw_socket(server, token) for _ in range(IDLE)]

    async def ping_alone():
        ws = await Ws.connect(server.url, token=server.tokens["bob"])
        times = await ping_times(ws, 100)
        await ws.aclose()
        return times

    def answered(sock) -> bool:
        data = b""
        while b"pong" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return False
            data += chunk
        return True

    send_text(idle[-1], json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
    assert answered(idle[-1])  # all of them are open and served
    with_idle = server.rss_mib()
    pings_idle = run(ping_alone())

    never = raw_socket(server, token)
    never.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    async def start_flood():
        ws = await Ws.connect(server.url, token=token)
        job = (await ws.call("jobs.submit", {"app": "flood"}))["result"]
        await ws.aclose()
        return job["id"]

    job_id = run(start_flood())
    send_text(never, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "jobs.subscribe",
                                 "params": {"id": job_id, "offset": 0}}))
    poll_until(lambda: server.rss_mib() > with_idle + 1, 10, what="the non-reader's buffer")
    pings_never = run(ping_alone())
    peak = server.rss_mib()
    never.close()
    for sock in idle:
        sock.close()

    async def cancel():
        ws = await Ws.connect(server.url, token=token)
        await ws.call("jobs.cancel", {"id": job_id})
        await ws.aclose()

    run(cancel())
    poll_until(lambda: open_websockets(server) == 0, 20, what="the connections closed")
    after = server.rss_mib()
    per = (with_idle - before) * 1024 / IDLE
    figure(f"{IDLE} idle WebSockets: {per:.0f} KiB each (RSS {before:.1f} -> "
           f"{with_idle:.1f} MiB); ping p99 {p99(pings_idle):.2f} ms among them")
    figure(f"a subscriber that never reads a flood: RSS peak {peak:.1f} MiB (+"
           f"{peak - with_idle:.1f}), others' ping p99 {p99(pings_never):.2f} ms; all "
           f"closed: RSS {after:.1f} MiB ({after - before:+.1f} from before them)")
    assert per < 64
    assert peak - with_idle < 64  # the non-reader's buffer is bounded
    assert p99(pings_never) < 500
