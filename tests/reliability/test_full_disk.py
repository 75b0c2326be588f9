"""A full disk loses nothing (issue 23): with DATA_DIR on a small tmpfs filled to the
last byte, jobs that exit meanwhile are recorded with their real exit codes once space
comes back; meanwhile /readyz and zephserver-status say what is wrong. Needs root (the
test mounts the tmpfs and unmounts it, even when it fails half way)."""

import json
import os

import pytest

from tests.support import disk
from tests.support.daemon import child_env, write_settings
from tests.support.jobs import job_apps, submit, wait_job
from tests.support.poll import poll_until
from tests.support.web import Ws, readyz, run, start_with_users

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120),
              pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")]


@pytest.fixture
def small_data_dir():
    with disk.small_data_dir() as work:
        yield work


def test_exits_during_a_full_disk_are_recorded_when_space_returns(small_data_dir):
    work = small_data_dir
    # waits for its flag, then exits with its code without a word: a full disk must not
    # change what it does
    quiet = {"argv": ["$python", "-c", "import os, sys, time\n"
                      "while not os.path.exists(sys.argv[1]): time.sleep(0.02)\n"
                      "os._exit(int(sys.argv[2]))", "$flag", "$code"],
             "params": {"flag": {"type": "path", "root": str(work), "must_exist": False},
                        "code": {"type": "int", "default": 0, "min": 0, "max": 255}},
             "resources": {"cores": 0}}
    daemon = start_with_users(write_settings(
        work, APPS={**job_apps(work), "quiet": quiet}, DATA_DIR_MIN_FREE=0,  # (no watermark:
        DJANGO_SETTINGS_MODULE="tests.support.django_test_settings"), child_env())  # all fills)
    try:
        codes = [1, 2, 3, 0]

        async def start_jobs():
            ws = await Ws.connect(daemon.url, token=daemon.tokens["alice"])
            jobs = [await submit(ws, "quiet", flag=str(work / f"go{c}"), code=c)
                    for c in codes]
            for job in jobs:
                await wait_job(ws, job["id"], {"RUNNING"})
            await ws.aclose()
            return jobs
        jobs = run(start_jobs())
        filler = disk.fill(work / "var")
        for c in codes:
            (work / f"go{c}").write_text("")  # they all exit while nothing can be written
        _status, body = poll_until(lambda: (r := readyz(daemon.url))[0] == 503 and r, 30,
                                  0.1, "/readyz saying what is wrong")
        assert any("database writes failing" in p for p in body["problems"]), body
        degraded = daemon.cli("zephserver-status", "--json")
        assert degraded.returncode == 5, degraded.stdout
        assert json.loads(degraded.stdout)["database"]["state"] == "failing"
        os.unlink(filler)  # space comes back

        async def outcomes():
            ws = await Ws.connect(daemon.url, token=daemon.tokens["alice"])
            done = [await wait_job(ws, job["id"], {"SUCCEEDED", "FAILED", "LOST"},
                                   timeout=30) for job in jobs]
            await ws.aclose()
            return done
        done = run(outcomes())
        assert [(j["state"], j["exit_code"]) for j in done] == [
            ("FAILED", 1), ("FAILED", 2), ("FAILED", 3), ("SUCCEEDED", 0)]
        poll_until(lambda: readyz(daemon.url)[0] == 200, 20, 0.1, "ready again")
        assert "the database takes writes again" in daemon.output
    finally:
        daemon.cli("zephserver-stop")
        daemon.close()
