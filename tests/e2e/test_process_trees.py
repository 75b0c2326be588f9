"""A stop reaches the whole tree: a descendant that left the process group (setsid) dies
on cancel, on wall time, and when its job ends; the agent's delete does the same. And
resources.memory is a hard limit."""

import uuid

import pytest

from tests.support.archives import ArchiveServer, make_zip
from tests.support.daemon import child_env, short_tmpdir, write_settings
from tests.support.jobs import (
    PRIORITY,
    TERMINAL,
    autogroup_nice,
    pids_of,
    stop_site,
    submit,
    wait_job,
)
from tests.support.poll import poll_async, poll_until
from tests.support.sessions import rest
from tests.support.web import Ws, run, start_with_users

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SH = "/bin/sh"
# A descendant in a session of its own (out of the job's process group), then the job.
ESCAPE = 'setsid sleep "$$0" & echo escaped; exec sleep 300'
HUNGRY = ("import sys, time; chunks = [bytearray(1 << 20) for _ in range(int(sys.argv[1]))]; "
          "print('holding', len(chunks), 'MiB', flush=True); time.sleep(0.2)")
FINISH = 'setsid sleep "$$0" & echo escaped; sleep 0.5'


def marker() -> str:
    return f"{3000 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"


@pytest.fixture(scope="module", params=[True, False], ids=["cgroups", "subreaper"])
def site(request):
    """A daemon with a cgroup per job, and one without (JOB_CGROUPS = False: the process
    group, and a subreaper shim that keeps escaped descendants under it)."""
    work = short_tmpdir("zt")
    (work / "files").mkdir()
    files = ArchiveServer(work / "files")
    apps = {"escape": {"argv": [SH, "-c", ESCAPE, "$mark"], "grace": 1,
                       "params": {"mark": {"type": "str", "regexp": r"^[0-9.]+$"}},
                       "resources": {"cores": 0}},
            "walltime": {"argv": [SH, "-c", ESCAPE, "$mark"], "grace": 1, "wall_time": 1,
                         "params": {"mark": {"type": "str", "regexp": r"^[0-9.]+$"}},
                         "resources": {"cores": 0}},
            "finish": {"argv": [SH, "-c", FINISH, "$mark"], "grace": 1,
                       "params": {"mark": {"type": "str", "regexp": r"^[0-9.]+$"}},
                       "resources": {"cores": 0}},
            "priority": {"argv": ["$python", "-c", PRIORITY], "resources": {"cores": 0}},
            "hungry": {"argv": ["$python", "-c", HUNGRY, "$mib"], "grace": 1,
                       "params": {"mib": {"type": "int", "min": 1, "max": 1024}},
                       "resources": {"cores": 0, "memory": 64}}}
    daemon = start_with_users(write_settings(
        work, APPS=apps, AGENT_FILE_ROOTS=[str(work / "files")], AGENT_ALLOW=None,
        RESOURCES={"cores": 4, "memory": 4096, "licenses": {}}, JOB_CGROUPS=request.param,
        AGENT_GRACE=1.0, DJANGO_SETTINGS_MODULE="tests.support.django_test_settings"),
        child_env())
    daemon.files, daemon.work, daemon.cgroups = files, work, request.param
    yield daemon
    stop_site(daemon, work, files)


@pytest.mark.parametrize(("app", "how", "end"), [("escape", "cancel", "CANCELLED"),
                                           ("walltime", "wall time", "TIMED_OUT"),
                                           ("finish", "its own end", "SUCCEEDED")])
def test_an_escaped_descendant_dies_with_its_job(site, app, how, end):
    mark = marker()

    async def scenario():
        ws = await Ws.connect(site.url, token=site.tokens["alice"])
        try:
            job = await submit(ws, app, mark=mark)
            await wait_job(ws, job["id"], {"RUNNING", *TERMINAL})
            await poll_async(lambda: pids_of(mark), 10)
            escaped = pids_of(mark)
            if how == "cancel":
                assert "result" in await ws.call("jobs.cancel", {"id": job["id"]})
            done = await wait_job(ws, job["id"], TERMINAL, 20)
            return escaped, done
        finally:
            await ws.aclose()

    escaped, done = run(scenario())
    assert done["state"] == end, done
    assert escaped  # it was running, out of the job's process group
    poll_until(lambda: not pids_of(mark), 10, what=f"the escapee killed at {how}")


def test_an_agent_process_escapee_dies_on_delete(site):
    mark = marker()
    make_zip(site.work / "files" / f"{mark}.zip",
             {"Procfile": f"web: setsid sleep {mark} & exec sleep 300\n"})
    token = site.tokens["alice"]
    status, doc, _ = rest("POST", site.url + "/agent/create-process", token,
                          {"app": "esc", "node": "web", "process_type": "web",
                           "source_url": f"{site.files.url}/{mark}.zip"})
    assert status == 201, doc
    poll_until(lambda: pids_of(mark), 20, what="the agent process and its escapee")
    assert rest("DELETE", doc["delete"], token)[0] == 200
    poll_until(lambda: not pids_of(mark), 10, what="the escapee killed at delete")


def test_without_cgroups_each_job_session_is_set_below_the_daemon(site):
    """Under the shim (no cgroups: no shared cpu group either), each job's session, its
    autogroup, runs JOB_NICE steps below the daemon's (with cgroups, jobs share a cpu
    group instead: tests/e2e/test_jobs.py)."""
    if site.cgroups:
        pytest.skip("with cgroups: tests/e2e/test_jobs.py::test_jobs_run_below_the_daemon")

    async def scenario():
        ws = await Ws.connect(site.url, token=site.tokens["alice"])
        try:
            job = await submit(ws, "priority")
            await wait_job(ws, job["id"], {"SUCCEEDED"})
            out = await ws.call("jobs.output", {"id": job["id"]})
            return out["result"]["data"].splitlines()
        finally:
            await ws.aclose()

    _nice, group, *_cpu = run(scenario())
    daemon_group = autogroup_nice(site.pid)
    if daemon_group is None:
        pytest.skip("no autogroups here")
    assert group.endswith(f" nice {min(19, daemon_group + 10)}"), group


@pytest.mark.parametrize(("mib", "state"), [(16, "SUCCEEDED"), (256, "FAILED")])
def test_resources_memory_is_a_hard_limit(site, mib, state):
    """64 MiB asked: a program that stays under it runs; one that goes over is stopped
    by the kernel and its job says so (as Slurm's OUT_OF_MEMORY)."""
    if not site.cgroups:
        pytest.skip("a memory limit needs the memory cgroup")
    async def scenario():
        ws = await Ws.connect(site.url, token=site.tokens["alice"])
        try:
            job = await submit(ws, "hungry", mib=mib)
            return await wait_job(ws, job["id"], TERMINAL, 30)
        finally:
            await ws.aclose()

    done = run(scenario())
    assert done["state"] == state, done
    if state == "FAILED":
        assert done["state_reason"] == "out of memory (limit 64 MiB)", done
