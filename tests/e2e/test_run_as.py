"""Work as whom: with the daemon started as root (as this suite is), an app runs as its
run_as account or as the owner's own account ("$user" through USER_MAP), with that
account's groups, home and files; it is re-adopted and stopped as any other job; and a
settings file that would run work as root by accident is refused. Uses the machine's
own nobody and daemon accounts."""

import grp
import os
import pwd
import shutil
import signal

import pytest

from tests.support.archives import ArchiveServer, make_zip
from tests.support.daemon import DaemonProcess, child_env, run_cli, short_tmpdir, write_settings
from tests.support.jobs import (
    TERMINAL,
    is_zombie_or_gone,
    stop_site,
    submit,
    wait_job,
)
from tests.support.poll import poll_until
from tests.support.sessions import rest
from tests.support.web import Ws, run, start_with_users

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SH = "/bin/sh"
SHOW = 'echo "$$(id -un):$$(id -gn):$$HOME:$$USER"; touch made-here; exec sleep "$$0"'
NOBODY, DAEMON = pwd.getpwnam("nobody"), pwd.getpwnam("daemon")


def apps() -> dict:
    show = {"argv": [SH, "-c", SHOW, "$seconds"], "grace": 1, "resources": {"cores": 0},
            "params": {"seconds": {"type": "int", "default": 0, "min": 0, "max": 600}}}
    return {"as-nobody": {**show, "run_as": "nobody"},
            "as-owner": {**show, "run_as": "$user"}}


@pytest.fixture(scope="module")
def site():
    work = short_tmpdir("zu")
    os.chmod(work, 0o755)  # the accounts reach their job directories through it
    (work / "files").mkdir()
    files = ArchiveServer(work / "files")
    make_zip(work / "files" / "who.zip", {"Procfile": "web: id -un; exec sleep 600\n"})
    settings = write_settings(work, APPS=apps(), RUN_AS="nobody", USER_MAP={"alice": "daemon"},
                              AGENT_ALLOW=None, AGENT_FILE_ROOTS=[str(work / "files")],
                              DJANGO_SETTINGS_MODULE="tests.support.django_test_settings")
    daemon = start_with_users(settings, child_env())
    daemon.work, daemon.files = work, files
    yield daemon
    stop_site(daemon, work, files)


def job_of(site, who: str, app: str, seconds: int = 0) -> dict:
    async def scenario():
        ws = await Ws.connect(site.url, token=site.tokens[who])
        try:
            job = await submit(ws, app, seconds=seconds)
            states = {"RUNNING"} if seconds else {"SUCCEEDED", "FAILED"}
            return await wait_job(ws, job["id"], states | TERMINAL)
        finally:
            await ws.aclose()
    return run(scenario())


def log_of(site, job: dict) -> str:
    path = site.work / "var" / "jobs" / str(job["id"]) / "output.log"
    poll_until(lambda: path.exists() and b"\n" in path.read_bytes(), 10, what="its line")
    return path.read_text()


@pytest.mark.parametrize(("who", "app", "account"), [("bob", "as-nobody", NOBODY),
                                                     ("alice", "as-owner", DAEMON)])
def test_a_job_runs_as_its_account_and_owns_its_files(site, who, app, account):
    job = job_of(site, who, app)
    assert job["state"] == "SUCCEEDED", (job, log_of(site, job))
    group = grp.getgrgid(account.pw_gid).gr_name
    assert log_of(site, job).splitlines()[0] == \
        f"{account.pw_name}:{group}:{account.pw_dir}:{account.pw_name}"
    job_dir = site.work / "var" / "jobs" / str(job["id"])
    for path in (job_dir, job_dir / "made-here", job_dir / "output.log"):
        assert os.stat(path).st_uid == account.pw_uid, path
    # Where its pid and exit status are kept: the keeper's ledger (where jobs have
    # cgroups), else the shim's files' folder; the daemon's either way, out of the job's
    # reach (it can neither write one nor replace one).
    ledger = site.work / "var" / "keeper.ledger"
    kept = os.stat(ledger if ledger.exists() else site.work / "var" / "jobs" / ".zeph-meta")
    assert kept.st_uid == 0
    assert not kept.st_mode & 0o022


def test_a_user_without_an_account_is_refused(site):
    async def scenario():
        ws = await Ws.connect(site.url, token=site.tokens["bob"])
        try:
            return await ws.call("jobs.submit", {"app": "as-owner"})
        finally:
            await ws.aclose()
    answer = run(scenario())
    assert answer["error"]["code"] == -32002, answer
    assert "bob has none (USER_MAP)" in answer["error"]["message"]


def test_an_agent_process_runs_as_run_as(site):
    token = site.tokens["alice"]
    status, doc, _ = rest("POST", site.url + "/agent/create-process", token,
                          {"app": "who", "node": "web", "process_type": "web",
                           "source_url": f"{site.files.url}/who.zip"})
    assert status == 201, doc
    logs = site.work / "var" / "agent"
    poll_until(lambda: any(p.read_text().startswith("nobody\n") for p in logs.rglob("*.log")),
               20, what="the process's id -un")
    assert rest("DELETE", doc["delete"], token)[0] == 200


def test_zz_a_run_as_job_is_readopted_and_cancelled_after_kill9(site):
    """(Last: it replaces the module's daemon, which the fixture then finds stopped.)"""
    job = job_of(site, "bob", "as-nobody", seconds=600)
    assert job["state"] == "RUNNING"
    pid = job["pid"]
    site.kill(signal.SIGKILL)
    site.wait_exit()
    again = DaemonProcess(site.settings, site.env).start()
    again.tokens = site.tokens

    async def scenario():
        ws = await Ws.connect(again.url, token=again.tokens["bob"])
        try:
            seen = (await ws.call("jobs.get", {"id": job["id"]}))["result"]
            await ws.call("jobs.cancel", {"id": job["id"]})
            return seen, await wait_job(ws, job["id"], TERMINAL)
        finally:
            await ws.aclose()

    try:
        seen, done = run(scenario())
    finally:
        again.cli("zephserver-stop")
        again.close()
    assert (seen["state"], seen["pid"]) == ("RUNNING", pid)
    assert done["state"] == "CANCELLED", done
    poll_until(lambda: is_zombie_or_gone(pid), 10, what="the program gone")


def test_settings_that_would_run_work_as_root_are_refused():
    work = short_tmpdir("zv")
    try:
        settings = write_settings(work, RUN_AS=None, APPS={"plain": {"argv": ["/bin/true"]}})
        result = run_cli("zephserver-start", "--settings", str(settings))
        assert result.returncode == 6, result.stderr
        assert "app 'plain' would run as root" in result.stderr
        assert "agent processes would run as root" in result.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)
