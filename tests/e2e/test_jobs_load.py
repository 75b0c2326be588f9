"""Jobs under faults and load: a full log disk, 10,000 short jobs."""

import asyncio
import shutil
import subprocess

import pytest

from tests.e2e.test_jobs import connect, start_server
from tests.support.jobs import TERMINAL, kill_jobs_under, proc_stat, submit, wait_job
from tests.support.poll import poll_until
from tests.support.web import Ws, run

pytestmark = pytest.mark.e2e


def zombies_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = [int(c) for c in f.read().split()]
    return [c for c in children if (proc_stat(c) or [b""])[0] == b"Z"]


@pytest.fixture
def small_disk(workdir):
    """A 256 KiB tmpfs for job logs (this machine's tests run as root)."""
    mount = workdir / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                   check=True)
    yield mount
    kill_jobs_under(workdir)
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_log_disk_full_fails_the_job_and_the_daemon_keeps_serving(workdir, small_disk):
    server = start_server(workdir, JOBS_DIR=str(small_disk))
    try:
        async def scenario():
            ws = await connect(server)
            job = await submit(ws, "lines", n=100_000, width=80)  # 8 MB into 256 KiB
            done = await wait_job(ws, job["id"], TERMINAL, 30)
            anon = await Ws.connect(server.url)
            pong = await anon.call("ping")
            await anon.aclose()
            listed = (await ws.call("jobs.list", {"limit": 5}))["result"]
            await ws.aclose()
            return done, pong, listed

        done, pong, listed = run(scenario())
        assert done["state"] == "FAILED", done
        assert "the disk holding its log is full" in done["state_reason"], done
        assert pong["result"] == "pong"
        assert listed["jobs"][0]["id"] == done["id"]
        server.cli("zephserver-stop")
    finally:
        server.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ten_thousand_short_jobs(workdir):
    """10,000 /bin/true jobs through the queue: every record terminal, no zombie, the
    daemon's memory back near where it was after a warm-up."""
    server = start_server(workdir, RESOURCES={"cores": 16, "memory": 4096, "licenses": {}},
                          WS_MAX_IN_FLIGHT=200, WS_MAX_BATCH=200, TASK_QUEUE_SIZE=512,
                          LOG_LEVEL="WARNING")
    pid = int(server.cli("zephserver-status", "--json").stdout.split('"pid": ')[1].split(",")[0])
    try:
        async def submit_many(ws, count):
            sent = 0
            while sent < count:
                n = min(200, count - sent)
                batch = [{"jsonrpc": "2.0", "id": sent + i, "method": "jobs.submit",
                          "params": {"app": "true"}} for i in range(n)]
                await ws.send(batch)
                while True:
                    reply = await ws.recv(60)
                    if isinstance(reply, list):
                        break
                assert all("result" in r for r in reply), [r for r in reply if "error" in r][:3]
                sent += n

        async def drained(ws):
            deadline = asyncio.get_running_loop().time() + 300
            while True:
                left = (await ws.call("jobs.list", {"state": ["QUEUED", "STARTING",
                                                              "RUNNING"], "limit": 1}))
                if left["result"]["total"] == 0:
                    return
                assert asyncio.get_running_loop().time() < deadline, left
                await asyncio.sleep(0.2)

        async def scenario():
            ws = await connect(server)
            await submit_many(ws, 500)
            await drained(ws)
            warm = server.rss_mib()
            await submit_many(ws, 9500)
            await drained(ws)
            listing = (await ws.call("jobs.list", {"limit": 1}))["result"]
            ok = (await ws.call("jobs.list", {"state": "SUCCEEDED", "limit": 1}))["result"]
            await ws.aclose()
            return warm, listing, ok

        warm, listing, ok = run(scenario())
        assert listing["total"] == ok["total"] == 10_000
        poll_until(lambda: zombies_of(pid) == [], 10)
        after = server.rss_mib()
        print(f"daemon RSS after the warm-up {warm:.1f} MiB, after 10,000 jobs "
              f"{after:.1f} MiB")
        assert after - warm < 12, (warm, after)
        server.cli("zephserver-stop")
    finally:
        server.close()
        kill_jobs_under(workdir)
        shutil.rmtree(workdir / "var" / "jobs", ignore_errors=True)
