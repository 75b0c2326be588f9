"""The keeper (launch.keeper): where jobs get cgroups, it starts them, is their parent and
outlives the daemon, so a job's end is recorded even while no daemon runs."""

import os
import shutil
import signal

import pytest

from tests.support.daemon import DaemonProcess, short_tmpdir
from tests.support.jobs import (
    TERMINAL,
    is_zombie_or_gone,
    keepers_under,
    kill_jobs_under,
    proc_stat,
    submit,
    wait_job,
)
from tests.support.poll import poll_until
from tests.support.web import Ws, run

from .test_jobs import start_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def work():
    path = short_tmpdir()
    yield path
    kill_jobs_under(path)
    shutil.rmtree(path, ignore_errors=True)


def _parent(pid: int) -> int:
    fields = proc_stat(pid)
    assert fields is not None, f"pid {pid} is gone"
    return int(fields[1])


def _kept(daemon) -> int:
    """The pid of the daemon's keeper (the test is skipped where jobs have no cgroups:
    they run under the shim there)."""
    keepers = keepers_under(daemon.work)
    if not keepers:
        pytest.skip("no keeper: jobs have no cgroups here (JOB_CGROUPS or the kernel)")
    assert len(keepers) == 1, keepers
    return keepers[0]


def _restart(daemon):
    again = DaemonProcess(daemon.settings, daemon.env).start()
    again.tokens, again.work = daemon.tokens, daemon.work
    return again


def test_a_job_that_ends_while_no_daemon_runs_has_its_status(work):
    """The daemon is killed; one job is killed meanwhile and another exits with a code of
    its own. The next daemon reads both statuses the keeper recorded, starts its new jobs
    through that same keeper (a third job still runs under it), and hears from it how
    that third job ends."""
    first = start_server(work)
    daemons = [first]
    try:
        async def before():
            ws = await Ws.connect(first.url, token=first.tokens["alice"])
            killed = await submit(ws, "waitfile", flag="never")
            exits = await submit(ws, "waitfile", flag="go", code=7)
            stays = await submit(ws, "waitfile", flag="later", code=5)
            jobs = [await wait_job(ws, j["id"], {"RUNNING"}) for j in (killed, exits, stays)]
            await ws.aclose()
            return jobs

        killed, exits, stays = run(before())
        keeper = _kept(first)
        for job in (killed, exits, stays):  # nothing in between: the keeper's own children
            assert _parent(job["pid"]) == keeper
        first.kill()
        first.wait_exit()
        os.kill(killed["pid"], signal.SIGKILL)
        (work / "go").touch()
        poll_until(lambda: proc_stat(killed["pid"]) is None and proc_stat(exits["pid"]) is None,
                   10)
        second = _restart(first)
        daemons.append(second)

        async def after():
            ws = await Ws.connect(second.url, token=second.tokens["alice"])
            ended = [await wait_job(ws, j["id"], TERMINAL) for j in (killed, exits)]
            new = await submit(ws, "waitfile", flag="never")
            new = await wait_job(ws, new["id"], {"RUNNING"})
            parent = _parent(new["pid"])
            await ws.call("jobs.cancel", {"id": new["id"]})
            cancelled = await wait_job(ws, new["id"], TERMINAL)
            (work / "later").touch()
            later = await wait_job(ws, stays["id"], TERMINAL)
            await ws.aclose()
            return ended, parent, cancelled, later

        (was_killed, exited), parent, cancelled, later = run(after())
        assert was_killed["state"] == "FAILED", was_killed
        assert "signal SIGKILL" in was_killed["state_reason"], was_killed
        assert "while the daemon was down" in was_killed["state_reason"], was_killed
        assert (exited["state"], exited["exit_code"]) == ("FAILED", 7), exited
        assert parent == keeper
        assert cancelled["state"] == "CANCELLED", cancelled
        assert (later["state"], later["exit_code"]) == ("FAILED", 5), later
        second.cli("zephserver-stop")
    finally:
        for daemon in daemons:
            daemon.close()


def test_a_lost_keeper_is_replaced_and_its_jobs_still_end(work):
    """The keeper is killed under a running daemon: its job runs on (its end is seen,
    though its status is lost), and the next job starts under a new keeper."""
    daemon = start_server(work)
    try:
        async def scenario():
            ws = await Ws.connect(daemon.url, token=daemon.tokens["alice"])
            orphan = await wait_job(ws, (await submit(ws, "waitfile", flag="end"))["id"],
                                    {"RUNNING"})
            keeper = _kept(daemon)
            os.kill(keeper, signal.SIGKILL)
            poll_until(lambda: is_zombie_or_gone(keeper), 10)
            (work / "end").touch()
            ended = await wait_job(ws, orphan["id"], TERMINAL)
            after = await submit(ws, "exit", code=3)
            after = await wait_job(ws, after["id"], TERMINAL)
            await ws.aclose()
            return keeper, ended, after

        keeper, ended, after = run(scenario())
        assert ended["state"] == "LOST", ended
        assert "not recorded" in ended["state_reason"], ended
        assert (after["state"], after["exit_code"]) == ("FAILED", 3), after
        assert keepers_under(work) not in ([], [keeper])
        daemon.cli("zephserver-stop")
    finally:
        daemon.close()


def test_the_keeper_leaves_with_the_daemon_when_no_job_runs(work):
    daemon = start_server(work)
    try:
        async def scenario():
            ws = await Ws.connect(daemon.url, token=daemon.tokens["alice"])
            job = await wait_job(ws, (await submit(ws, "exit", code=0))["id"], TERMINAL)
            await ws.aclose()
            return job

        assert run(scenario())["state"] == "SUCCEEDED"
        keeper = _kept(daemon)
        daemon.cli("zephserver-stop")
        daemon.wait_exit()
        poll_until(lambda: keepers_under(work) == [], 10)
        assert is_zombie_or_gone(keeper)  # (init here may take its time to reap)
    finally:
        daemon.close()


def test_a_job_the_keeper_has_not_started_yet_holds_its_share_and_can_be_cancelled(work):
    """The manager does not wait for the keeper's answer: while the keeper is stopped
    (SIGSTOP) a job asked of it is STARTING, holds what it needs (both licenses: the next
    job waits for one), and a cancel is taken at once; once the keeper answers, the job's process is
    stopped and the job ends CANCELLED, and the waiting one runs."""
    daemon = start_server(work)
    try:
        async def scenario():
            ws = await Ws.connect(daemon.url, token=daemon.tokens["alice"])
            first = await wait_job(ws, (await submit(ws, "exit", code=0))["id"], TERMINAL)
            keeper = _kept(daemon)  # (started by the first job)
            os.kill(keeper, signal.SIGSTOP)
            try:
                held = await submit(ws, "sleep", seconds=60, ncpu=2)
                held = await wait_job(ws, held["id"], {"STARTING"})
                waits = await submit(ws, "sleep", seconds=60, ncpu=1)
                waiting = (await ws.call("jobs.get", {"id": waits["id"]}))["result"]
                cancel = await ws.call("jobs.cancel", {"id": held["id"]})
            finally:
                os.kill(keeper, signal.SIGCONT)
            ended = await wait_job(ws, held["id"], TERMINAL)
            runs = await wait_job(ws, waits["id"], {"RUNNING"})
            await ws.call("jobs.cancel", {"id": waits["id"]})
            await wait_job(ws, waits["id"], TERMINAL)
            await ws.aclose()
            return first, held, waiting, cancel, ended, runs

        first, held, waiting, cancel, ended, runs = run(scenario())
        assert first["state"] == "SUCCEEDED", first
        assert held["pid"] is None, held  # asked of the keeper, not started
        assert waiting["state"] == "QUEUED", waiting
        assert "result" in cancel, cancel
        assert cancel["result"]["state"] == "STARTING", cancel
        assert "cancelled by alice" in cancel["result"]["state_reason"], cancel
        assert ended["state"] == "CANCELLED", ended
        assert ended["pid"] is not None, ended
        assert is_zombie_or_gone(ended["pid"]), ended
        assert runs["state"] == "RUNNING", runs
        daemon.cli("zephserver-stop")
    finally:
        daemon.close()
