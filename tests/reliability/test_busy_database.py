"""A locked SQLite (issue 23): the wait is bounded, clients hear -32003 "busy" with a
retry hint (never -32012 or -32603), no service crashes, and a job that ends while the
database is locked has its real exit code once the lock is gone."""

import json
import shutil
import sqlite3
import time

import pytest

from tests.support.daemon import child_env, short_tmpdir, write_settings
from tests.support.jobs import job_apps, submit, wait_job
from tests.support.web import Ws, run, start_with_users

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def server():
    work = short_tmpdir()
    settings = write_settings(work, APPS=job_apps(work),
                              DJANGO_SETTINGS_MODULE="tests.support.django_test_settings")
    daemon = start_with_users(settings, child_env())
    daemon.work = work
    yield daemon
    daemon.cli("zephserver-stop")
    daemon.close()
    shutil.rmtree(work, ignore_errors=True)


def test_a_locked_database_is_busy_not_a_crash_and_loses_no_exit(server):
    db = server.work / "var" / "zephserver.sqlite3"
    go = server.work / "go"

    async def scenario():
        ws = await Ws.connect(server.url, token=server.tokens["alice"])
        waiting = await submit(ws, "waitfile", flag=str(go), code=3)
        await wait_job(ws, waiting["id"], {"RUNNING"})
        lock = sqlite3.connect(db, timeout=1, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            go.write_text("")  # the job exits with 3 while nobody can write its record
            started = time.monotonic()
            refused = await ws.call("jobs.submit", {"app": "echo", "params": {}}, timeout=30)
            waited = time.monotonic() - started
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        done = await wait_job(ws, waiting["id"], {"SUCCEEDED", "FAILED", "LOST"}, timeout=30)
        after = await ws.call("jobs.submit", {"app": "echo", "params": {}})
        await ws.aclose()
        return refused, waited, done, after

    refused, waited, done, after = run(scenario())
    print(f"a submit while SQLite is locked: {refused['error']['code']} after {waited:.1f}s")
    assert refused["error"]["code"] == -32003, refused
    assert "busy" in refused["error"]["message"]
    assert refused["error"]["data"]["retry_after"] > 0
    assert waited < 15
    assert (done["state"], done["exit_code"]) == ("FAILED", 3)
    assert "result" in after, after
    status = json.loads(server.cli("zephserver-status", "--json").stdout)
    assert all(s["restarts"] == 0 for s in status["services"]), status["services"]
