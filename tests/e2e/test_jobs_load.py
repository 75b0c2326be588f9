"""Jobs under faults: a full log disk (10,000 short jobs are tests/reliability/test_memory.py)."""

import subprocess

import pytest

from tests.e2e.test_jobs import connect, start_server
from tests.support.jobs import TERMINAL, kill_jobs_under, submit, wait_job
from tests.support.web import Ws, run

pytestmark = pytest.mark.e2e


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
