"""One user cannot starve the others (issue 23): alice floods slow calls over several
connections; bob's ping keeps its latency, because one user holds at most
TASK_POOL_USER_SHARE of the task threads and of the queue."""

import asyncio
import json
import shutil
import statistics
import time

import pytest

from tests.support.daemon import child_env, short_tmpdir, write_settings
from tests.support.web import Ws, run, start_with_users
from zephserver import defaults

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def server():
    work = short_tmpdir()
    settings = write_settings(work, DJANGO_SETTINGS_MODULE="tests.support.django_test_settings",
                              TASKS_PATH={**defaults.TASKS_PATH,
                                          "slow": "tests.support.tasks/SlowTask"})
    daemon = start_with_users(settings, child_env())
    yield daemon
    daemon.cli("zephserver-stop")
    daemon.close()
    shutil.rmtree(work, ignore_errors=True)


async def flood(server, connections: int, in_flight: int, stop: asyncio.Event) -> int:
    """Keep ``in_flight`` slow calls running on each of ``connections``; how many ended."""
    done = 0

    async def one_connection():
        nonlocal done
        ws = await Ws.connect(server.url, token=server.tokens["alice"])
        ids = iter(range(1, 10**9))
        for _ in range(in_flight):
            await ws.send({"jsonrpc": "2.0", "id": next(ids), "method": "slow"})
        while not stop.is_set():
            reply = json.loads(await ws.conn.read_message())
            done += 1
            assert "result" in reply or reply["error"]["code"] == -32004, reply
            await ws.send({"jsonrpc": "2.0", "id": next(ids), "method": "slow"})
        await ws.aclose()

    tasks = [asyncio.create_task(one_connection()) for _ in range(connections)]
    await asyncio.gather(*tasks)
    return done


def test_a_flood_of_slow_calls_leaves_others_their_latency(server):
    async def scenario():
        stop = asyncio.Event()
        flooding = asyncio.create_task(flood(server, 4, 32, stop))
        bob = await Ws.connect(server.url, token=server.tokens["bob"])
        await asyncio.sleep(0)  # (the flood's connections open first)
        while True:  # the flood is on once alice's calls queue up
            status = (await bob.call("ping"))["result"]
            assert status == "pong"
            if flooding.done() or await _flooding(server):
                break
        latencies = []
        for _ in range(200):
            started = time.perf_counter()
            assert (await bob.call("ping"))["result"] == "pong"
            latencies.append(time.perf_counter() - started)
        stop.set()
        ended = await flooding
        await bob.aclose()
        return latencies, ended

    latencies, ended = run(scenario())
    latencies.sort()
    p50, p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]
    print(f"bob's ping under alice's flood of 128 slow calls: p50 {p50 * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms (goal p99 < 50 ms); alice's calls ended: {ended}")
    assert p99 < 0.050
    assert ended > 0


async def _flooding(server) -> bool:
    """True once the daemon's task queue holds alice's waiting calls."""
    loop = asyncio.get_running_loop()
    text = await loop.run_in_executor(None, _metrics, server.url)
    waiting = [line for line in text.splitlines()
               if line.startswith("zephserver_task_pool_queued ")]
    return bool(waiting) and float(waiting[0].split()[1]) > 0


def _metrics(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        return r.read().decode()
