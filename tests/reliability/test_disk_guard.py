"""Jobs cannot fill the disk (issue 23): under DATA_DIR_MIN_FREE new work waits with the
reason shown, and starts once there is room; a job whose log passes max_output is
stopped, and told so in its log and its record."""

import os
import shutil
import time

import pytest

from tests.support import disk
from tests.support.daemon import child_env, short_tmpdir, write_settings
from tests.support.jobs import job_apps, kill_jobs_under, submit, wait_job
from tests.support.web import Ws, readyz, run, start_with_users

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
MIB = 1024 * 1024


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_new_work_waits_for_room_on_the_disk():
    with disk.small_data_dir() as work:
        daemon = start_with_users(write_settings(
            work, APPS=job_apps(work), DATA_DIR_MIN_FREE=8 * MIB,
            DJANGO_SETTINGS_MODULE="tests.support.django_test_settings"), child_env())
        try:
            filler = disk.fill(work / "var", leave=4 * MIB)

            async def held():
                ws = await Ws.connect(daemon.url, token=daemon.tokens["alice"])
                job = await submit(ws, "echo", text="room")
                deadline = time.monotonic() + 10
                while True:
                    queue = (await ws.call("queue.list"))["result"]
                    mine = [j for j in queue if j["id"] == job["id"]]
                    if (mine and "DATA_DIR" in mine[0]["state_reason"]) or \
                            time.monotonic() > deadline:
                        break
                await ws.aclose()
                return job, mine
            job, mine = run(held())
            assert mine[0]["state"] == "QUEUED", mine
            assert "under DATA_DIR_MIN_FREE (8 MiB)" in mine[0]["state_reason"], mine
            status, body = readyz(daemon.url)
            assert status == 503
            assert any("new work waits" in p for p in body["problems"]), body
            os.unlink(filler)

            async def ran():
                ws = await Ws.connect(daemon.url, token=daemon.tokens["alice"])
                done = await wait_job(ws, job["id"], {"SUCCEEDED", "FAILED"}, timeout=20)
                await ws.aclose()
                return done
            assert run(ran())["state"] == "SUCCEEDED"
            assert "DATA_DIR has room again" in daemon.output
        finally:
            daemon.cli("zephserver-stop")
            daemon.close()


def test_a_job_past_its_max_output_is_stopped_and_told():
    work = short_tmpdir()
    apps = job_apps(work)
    apps["lines"] = {**apps["lines"], "max_output": MIB}
    daemon = start_with_users(write_settings(
        work, APPS=apps, DJANGO_SETTINGS_MODULE="tests.support.django_test_settings"),
        child_env())
    try:
        async def flood():
            ws = await Ws.connect(daemon.url, token=daemon.tokens["alice"])
            job = await submit(ws, "lines", n=10**8, width=80)
            done = await wait_job(ws, job["id"], {"SUCCEEDED", "FAILED"}, timeout=30)
            await ws.aclose()
            return done
        done = run(flood())
        assert done["state"] == "FAILED", done
        assert "passed its limit of 1048576 bytes (max_output)" in done["state_reason"]
        log = work / "var" / "jobs" / str(done["id"]) / "output.log"
        size = log.stat().st_size
        tail = log.read_bytes()[-200:].decode(errors="replace")
        assert "[zephserver: this job's output passed its limit" in tail
        print(f"max_output 1 MiB, a job printing flat out: its log stopped at "
              f"{size / MIB:.1f} MiB")
        assert size < 64 * MIB  # a look every 20 ms: what a flat-out printer writes meanwhile
    finally:
        daemon.cli("zephserver-stop")
        daemon.close()
        kill_jobs_under(work)
        shutil.rmtree(work, ignore_errors=True)
