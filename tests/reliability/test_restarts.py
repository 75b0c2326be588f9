"""The daemon stopped under its jobs' feet: a recorded pid that another program now
holds is never signalled, and a daemon frozen (SIGSTOP) then thawed (SIGCONT) catches up
on what happened meanwhile without restarting anything.

(kill -9 with 20 running jobs is tests/e2e/test_jobs.py; a stale lock and socket are
tests/e2e/test_daemon_lifecycle.py and tests/integration/test_control.py.)"""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from tests.e2e.test_jobs import connect, start_server
from tests.support.daemon import DaemonProcess, short_tmpdir, wait_pid_gone
from tests.support.jobs import (
    TERMINAL,
    keepers_under,
    kill_jobs_under,
    proc_stat,
    submit,
    wait_job,
)
from tests.support.poll import poll_until
from tests.support.web import run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def work():
    path = short_tmpdir("zr")
    yield path
    kill_jobs_under(path)
    shutil.rmtree(path, ignore_errors=True)


def start_time(pid: int) -> int:
    return int(proc_stat(pid)[19])


def spawn_with_pid(pid: int, tries: int = 50) -> subprocess.Popen:
    """A stranger that gets exactly ``pid`` (the kernel's next pid set through
    ns_last_pid, as root): what PID reuse looks like to the daemon."""
    for _ in range(tries):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
        if stranger.pid == pid:
            return stranger
        stranger.kill()
        stranger.wait()
    raise AssertionError(f"pid {pid} could not be taken (another process got it first)")


def test_a_reused_pid_is_never_signalled(work, figure):
    """kill -9 the daemon and its job; a stranger takes the job's pid; the restarted
    daemon records how the job ended (killed, as the keeper saw it; lost where the job's
    shim died with it) and leaves the stranger alone, at start and at stop."""
    daemon = first = start_server(work)
    stranger = None
    try:
        async def running_job():
            ws = await connect(daemon)
            job = await submit(ws, "waitfile", flag="never", code=0)
            job = await wait_job(ws, job["id"], {"RUNNING"})
            await ws.aclose()
            return job

        job = run(running_job())
        pid = job["pid"]
        kept = bool(keepers_under(work))
        daemon.kill()
        daemon.wait_exit()
        os.killpg(pid, signal.SIGKILL)  # the job dies while the daemon is down
        wait_pid_gone(pid)
        stranger = spawn_with_pid(pid)
        born = start_time(pid)
        again = DaemonProcess(daemon.settings, daemon.env).start()
        again.tokens = daemon.tokens
        daemon = again

        async def after():
            ws = await connect(daemon)
            done = await wait_job(ws, job["id"], TERMINAL)
            await ws.aclose()
            return done

        done = run(after())
        if kept:
            assert done["state"] == "FAILED", done
            assert "SIGKILL" in done["state_reason"], done
        else:
            assert done["state"] == "LOST", done
        assert stranger.poll() is None  # alive, never signalled
        assert start_time(pid) == born
        daemon.cli("zephserver-stop")
        daemon.wait_exit()
        assert stranger.poll() is None  # not at the daemon's stop either
        assert proc_stat(pid)[0] == b"S"  # sleeping, not stopped
        figure(f"pid {pid} reused by a stranger after kill -9: job {done['state']} "
               f"({done['state_reason']}); the stranger alive and never signalled")
    finally:
        if stranger is not None:
            stranger.kill()
            stranger.wait()
        first.close()
        daemon.close()


def test_a_frozen_daemon_catches_up_when_thawed(work, figure):
    """SIGSTOP the daemon for 2 s while a job ends and a client asks; after SIGCONT the
    question is answered, the exit recorded with its code, no service restarted."""
    daemon = start_server(work)
    try:
        async def scenario():
            ws = await connect(daemon)
            job = await submit(ws, "waitfile", flag="go", code=7)
            await wait_job(ws, job["id"], {"RUNNING"})
            os.kill(daemon.pid, signal.SIGSTOP)
            try:
                poll_until(lambda: proc_stat(daemon.pid)[0] == b"T", 5, what="stopped")
                (work / "go").touch()  # the job ends while the daemon is frozen
                await ws.send({"jsonrpc": "2.0", "id": "asked-while-frozen",
                               "method": "ping"})
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline:  # frozen for 2 s, whatever happens
                    assert proc_stat(daemon.pid)[0] == b"T"
                    await asyncio.sleep(0.1)
            finally:
                os.kill(daemon.pid, signal.SIGCONT)
            thawed = time.monotonic()
            reply = await ws.recv(10)
            answered = time.monotonic() - thawed
            done = await wait_job(ws, job["id"], TERMINAL, 10)
            await ws.aclose()
            return reply, answered, done

        reply, answered, done = run(scenario())
        assert reply == {"jsonrpc": "2.0", "id": "asked-while-frozen", "result": "pong"}
        assert (done["state"], done["exit_code"]) == ("FAILED", 7), done
        status = json.loads(daemon.cli("zephserver-status", "--json").stdout)
        assert {s["name"]: (s["state"], s["restarts"]) for s in status["services"]} == \
            {s["name"]: ("RUNNING", 0) for s in status["services"]}
        daemon.cli("zephserver-stop")
        figure(f"frozen 2 s: the ping asked meanwhile answered {answered * 1000:.1f} ms "
               f"after SIGCONT, the job's exit code 7 recorded, 0 services restarted")
    finally:
        daemon.close()
