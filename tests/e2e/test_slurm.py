"""The Slurm executor against a real one-node Slurm (munged, slurmctld, slurmd started by
the suite in a temporary folder): submit, states, live output, progress, cancel, wall
time, failures, slurmctld away, and a daemon killed and restarted with Slurm jobs
pending, running and ending meanwhile."""

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import socket

import pytest

from tests.support import slurm as slurm_support
from tests.support.daemon import DaemonProcess, child_env, short_tmpdir, write_settings
from tests.support.jobs import TERMINAL, kill_jobs_under, stop_site, wait_job
from tests.support.poll import poll_until
from tests.support.sessions import rest
from tests.support.web import Ws, readyz, run, start_with_users

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180),
              pytest.mark.skipif(bool(slurm_support.available()),
                                 reason=slurm_support.available() or "-")]

PROGRAM = """
import os, sys, time
print("argv", repr(sys.argv[1:]), flush=True)
print("slurm job", os.environ.get("SLURM_JOB_ID"), "site", os.environ.get("ZEPH_SITE"),
      flush=True)
for i in range(1, 4):
    print(f"step {i} of 4", flush=True)
    time.sleep(float(sys.argv[1]) / 3)
sys.exit(int(sys.argv[2]))
"""
SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen()
print("serving on port", s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"hello from a compute node\\n")
    c.close()
"""
CONTROLLED = """
import os, time
print("waiting for STOP", flush=True)
while not os.path.exists("STOP"):
    time.sleep(0.05)
print("told:", open("STOP").read(), flush=True)
"""
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring TERM", flush=True)
while True:
    time.sleep(0.05)
"""
TRAP = """
import signal, sys, time
def bye(*_):
    print("got TERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("waiting", flush=True)
while True:
    time.sleep(0.05)
"""


def apps() -> dict:
    py = "$python"
    slurm = {"executor": "slurm", "slurm": {"partition": "debug", "env": {"ZEPH_SITE": "t"},
                                            "options": ["--nice=0"]}}
    return {
        "run": {**slurm, "argv": [py, "-u", "-c", PROGRAM, "$secs", "$code", "$text"],
                "params": {"secs": {"type": "float", "default": 0.3, "min": 0, "max": 120},
                           "code": {"type": "int", "default": 0, "min": 0, "max": 255},
                           "text": {"type": "str", "regexp": r"(?s).{0,200}",
                                    "default": "plain"}},
                "resources": {"cores": 1, "memory": 100},
                "parser": {"progress": r"step (?P<value>\d+) of (?P<total>\d+)"}},
        "trap": {**slurm, "argv": [py, "-u", "-c", TRAP], "grace": 5},
        "stubborn": {**slurm, "argv": [py, "-u", "-c", STUBBORN], "grace": 1},
        "controlled": {**slurm, "argv": [py, "-u", "-c", CONTROLLED],
                       "controls": {"stop": {"file": "STOP", "payload": "please stop"}}},
        "wall": {**slurm, "argv": ["sleep", "300"], "wall_time": 1.5, "grace": 1},
        # two licences in all (slurm.conf): a second holder waits in Slurm's queue
        "licensed": {**slurm, "argv": ["sleep", "$secs"],
                     "params": {"secs": {"type": "float", "default": 1, "min": 0, "max": 120}},
                     "resources": {"cores": 1, "licenses": {"dyna": 2}}},
        "unknown_licence": {**slurm, "argv": ["true"],
                            "resources": {"licenses": {"nosuch": 1}}},
        # more cores than any node: local capacity would refuse it; Slurm decides
        "huge": {**slurm, "argv": ["true"], "resources": {"cores": 64}},
        # a session on the compute node Slurm picks: port 0, told in its ready line
        "remote": {**slurm, "kind": "session", "argv": [py, "-u", "-c", SERVER, "$port"],
                   "ready_line": r"serving on port (?P<port>\d+)", "timeout": 60,
                   "grace": 1, "session_url": "ws://$host:$port/ws?id=$id"},
    }


@pytest.fixture(scope="module")
def slurm():
    with slurm_support.Slurm() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def site(slurm):
    work = short_tmpdir("zs")
    settings = write_settings(
        work, APPS=apps(), SLURM_CONF=str(slurm.conf), SLURM_TICK=0.2,
        SLURM_SUBMIT_RETRY=120.0, RESOURCES={"cores": 1, "memory": 1024, "licenses": {}},
        LAUNCHER_PROXY_FILE=str(work / "proxy.map"),
        DJANGO_SETTINGS_MODULE="tests.support.django_test_settings")
    daemon = start_with_users(settings, child_env())
    daemon.work, daemon.settings_path = work, settings
    yield daemon
    stop_site(daemon, work)


def session(site, scenario):
    async def go():
        ws = await Ws.connect(site.url, token=site.tokens["alice"])
        try:
            return await scenario(ws)
        finally:
            await ws.aclose()
    return run(go())


async def submit(ws, app, **params):
    reply = await ws.call("jobs.submit", {"app": app, "params": params})
    assert "result" in reply, reply
    return reply["result"]


async def output(ws, job_id):
    return (await ws.call("jobs.output", {"id": job_id}))["result"]["data"]


def test_a_job_runs_on_slurm_with_live_output_progress_and_its_exit_code(site, slurm):
    hostile = 'a b "c" \'d\' $(touch /tmp/zeph-pwned) `id` ; rm -rf / \n$HOME'

    async def scenario(ws):
        job = await submit(ws, "run", secs=1.5, code=3, text=hostile)
        seen = await ws.call("jobs.subscribe", {"id": job["id"]})
        assert "result" in seen, seen
        running = await wait_job(ws, job["id"], {"RUNNING", *TERMINAL})
        live = await ws.until("job.output", timeout=20)  # while it runs
        done = await wait_job(ws, job["id"], TERMINAL, 30)
        return running, live, done, await output(ws, job["id"])

    running, live, done, text = session(site, scenario)
    assert running["state"] == "RUNNING", running
    external = running["extra"]["external"]
    assert external["executor"] == "slurm", running
    assert external["nodes"] == slurm.host, running
    assert running["state_reason"] == f"running on {slurm.host} (Slurm job {external['id']})"
    assert live["data"], live
    assert not live.get("eof"), live
    assert done["state"] == "FAILED", done
    assert done["exit_code"] == 3, done
    assert done["state_reason"] == "exit code 3", done
    assert done["progress"]["percent"] == 75.0, done  # 3 of 4, as the parser read it
    # every parameter arrived as one literal argv word: no shell read it
    assert f"argv {['1.5', '3', hostile]!r}" in text, text
    assert f"slurm job {external['id']} site t" in text, text
    assert not os.path.exists("/tmp/zeph-pwned")
    # what Slurm was told (sbatch's words from the app and the job's resources)
    shown = slurm.run("scontrol", "-o", "show", "job", external["id"])
    for word in ("Partition=debug", "NumCPUs=1", "Nice=0", f"JobName={external['name']}",
                 f"JobId={external['id']}"):
        assert word in shown, (word, shown)


def to_the_end(site, app, **params):
    """Submit a job of ``app`` and wait for its end."""
    async def scenario(ws):
        job = await submit(ws, app, **params)
        return await wait_job(ws, job["id"], TERMINAL, 30)

    return session(site, scenario)


def test_a_job_that_succeeds(site):
    done = to_the_end(site, "run", secs=0)
    assert done["state"] == "SUCCEEDED", done
    assert done["exit_code"] == 0, done


async def cancelled_once_printing(ws, app, words):
    """A job of ``app`` cancelled once it runs and printed ``words``: its end, its log."""
    job = await submit(ws, app)
    await wait_job(ws, job["id"], {"RUNNING"}, 30)
    await poll_output(ws, job["id"], words)
    assert "result" in await ws.call("jobs.cancel", {"id": job["id"]})
    return await wait_job(ws, job["id"], TERMINAL, 30), await output(ws, job["id"])


def test_cancel_sends_term_then_the_job_ends_cancelled(site, slurm):
    async def scenario(ws):
        return await cancelled_once_printing(ws, "trap", "waiting")

    done, text = session(site, scenario)
    assert done["state"] == "CANCELLED", done
    assert done["state_reason"].startswith("cancelled by alice"), done
    assert "got TERM" in text, text  # it was asked first, and could finish cleanly
    assert slurm_state(slurm, done) in ("COMPLETED", "CANCELLED"), done


def test_a_job_that_ignores_term_is_killed_after_its_grace(site, slurm):
    async def scenario(ws):
        return await cancelled_once_printing(ws, "stubborn", "ignoring TERM")

    done, _ = session(site, scenario)
    assert done["state"] == "CANCELLED", done
    assert slurm_state(slurm, done) == "CANCELLED", done


def test_a_control_reaches_a_slurm_job_through_its_directory(site):
    async def scenario(ws):
        job = await submit(ws, "controlled")
        await wait_job(ws, job["id"], {"RUNNING"}, 30)
        await poll_output(ws, job["id"], "waiting for STOP")
        told = await ws.call("jobs.control", {"id": job["id"], "control": "stop"})
        done = await wait_job(ws, job["id"], TERMINAL, 30)
        return told, done, await output(ws, job["id"])

    told, done, text = session(site, scenario)
    assert "result" in told, told
    assert done["state"] == "SUCCEEDED", done
    assert "told: please stop" in text, text


def test_a_pending_job_waits_queued_with_slurms_reason_and_is_cancelled_there(site, slurm):
    async def scenario(ws):
        holder = await submit(ws, "licensed", secs=60)
        await wait_job(ws, holder["id"], {"RUNNING"}, 30)
        waiter = await submit(ws, "licensed", secs=1)
        pending = await wait_reason(ws, waiter["id"], "Licenses")
        move = await ws.call("queue.hold", {"id": waiter["id"]})
        assert "result" in await ws.call("jobs.cancel", {"id": waiter["id"]})
        cancelled = await wait_job(ws, waiter["id"], TERMINAL, 30)
        assert "result" in await ws.call("jobs.cancel", {"id": holder["id"]})
        await wait_job(ws, holder["id"], TERMINAL, 30)
        return pending, move, cancelled

    pending, move, cancelled = session(site, scenario)
    assert pending["state"] == "QUEUED", pending
    slurm_id = pending["extra"]["external"]["id"]
    assert pending["state_reason"] == f"pending in Slurm (job {slurm_id}): Licenses", pending
    assert move["error"]["code"] == -32006, move
    assert "can only be cancelled" in move["error"]["message"], move
    assert cancelled["state"] == "CANCELLED", cancelled
    assert slurm_state(slurm, cancelled) == "CANCELLED"


def test_wall_time_ends_a_slurm_job_timed_out(site):
    done = to_the_end(site, "wall")
    assert done["state"] == "TIMED_OUT", done
    assert done["state_reason"].startswith("wall time of 1.5s exceeded"), done


def test_what_slurm_refuses_fails_with_its_message(site):
    done = to_the_end(site, "unknown_licence")
    assert done["state"] == "FAILED", done
    assert done["state_reason"] == "sbatch refused it: Batch job submission failed: " \
                                   "Invalid license specification", done


def test_local_capacity_does_not_limit_slurm_jobs(site):
    """64 cores on a node offering 1: Slurm, not this node, says it can never run."""
    async def scenario(ws):
        job = await submit(ws, "huge")
        reason = await wait_reason(ws, job["id"], "PartitionConfig")
        assert "result" in await ws.call("jobs.cancel", {"id": job["id"]})
        return reason, await wait_job(ws, job["id"], TERMINAL, 30)

    reason, done = session(site, scenario)
    assert reason["state"] == "QUEUED", reason
    assert done["state"] == "CANCELLED", done


def test_slurmctld_away_during_a_submit(site, slurm):
    """The job waits in a visible "submitting" state with a backoff, nothing is marked
    LOST meanwhile, /readyz tells, and all goes on when slurmctld is back."""
    async def scenario(ws):
        running = await submit(ws, "licensed", secs=4)
        await wait_job(ws, running["id"], {"RUNNING"}, 30)
        slurm.stop_controller()
        try:
            job = await submit(ws, "run", secs=0)
            waiting = await wait_reason(ws, job["id"], "slurmctld unreachable", 60)
            status, ready = readyz(site.url)
            still = (await ws.call("jobs.get", {"id": running["id"]}))["result"]
        finally:
            slurm.start_controller()
        first = await wait_job(ws, running["id"], TERMINAL, 60)
        second = await wait_job(ws, job["id"], TERMINAL, 60)
        return waiting, (status, ready), still, first, second

    waiting, (status, ready), still, first, second = session(site, scenario)
    assert waiting["state"] == "STARTING", waiting
    assert waiting["state_reason"].startswith("submitting: slurmctld unreachable, retry in")
    assert still["state"] == "RUNNING", still  # squeue failing marks nothing LOST
    assert status == 503, ready
    assert "squeue fails" in str(ready), ready
    assert first["state"] == "SUCCEEDED", first
    assert second["state"] == "SUCCEEDED", second


def test_a_session_runs_on_the_compute_node_slurm_picks(site, slurm):
    """POST /paraview: Slurm runs it; its ready line tells the port it bound; the answer
    and the proxy map carry Slurm's host and that port; reached through the URL; DELETE
    ends it there and unlists it."""
    token = site.tokens["alice"]
    status, doc, _ = rest("POST", site.url + "/paraview", token, {"application": "remote"},
                          timeout=90)
    assert status == 200, doc
    port = int(doc["port"])
    assert doc["sessionURL"] == f"ws://{slurm.host}:{port}/ws?id={doc['id']}", doc
    assert doc["host"] == slurm.host, doc
    with socket.create_connection((slurm.host, port), timeout=10) as conn:
        assert conn.makefile("rb").readline() == b"hello from a compute node\n"
    proxy = (site.work / "proxy.map").read_text()
    assert f"{doc['id']} {slurm.host}:{port}" in proxy, proxy
    status, gone, _ = rest("DELETE", f"{site.url}/paraview/{doc['id']}", token)
    assert status == 200, gone

    async def ended(ws):
        return await wait_job(ws, int(doc["id"]), TERMINAL, 30)

    job = session(site, ended)
    assert job["state"] == "CANCELLED", job
    poll_until(lambda: f"{slurm.host}:{port}" not in (site.work / "proxy.map").read_text(),
               10, what="the session unlisted from the proxy map")
    poll_until(lambda: slurm_state(slurm, job) != "RUNNING", 20,
               what="the Slurm job of the session ended")


class OwnSite:
    """A daemon of the test's own (its own DATA_DIR and proxy map) on ``slurm``, that the
    test kills and starts again; every daemon stopped and the folder removed at close."""

    def __init__(self, slurm) -> None:
        self.work = short_tmpdir("zs")
        self.daemons = [start_with_users(write_settings(
            self.work, APPS=apps(), SLURM_CONF=str(slurm.conf), SLURM_TICK=0.2,
            RESOURCES={"cores": 1, "memory": 1024, "licenses": {}},
            LAUNCHER_PROXY_FILE=str(self.work / "proxy.map"),
            DJANGO_SETTINGS_MODULE="tests.support.django_test_settings"), child_env())]

    @property
    def daemon(self):
        return self.daemons[-1]

    def kill(self) -> None:
        self.daemon.kill(signal.SIGKILL)
        self.daemon.wait_exit()

    def start_again(self):
        again = DaemonProcess(self.daemons[0].settings, child_env()).start()
        again.tokens = self.daemons[0].tokens
        self.daemons.append(again)
        return again

    def close(self) -> None:
        for daemon in reversed(self.daemons):
            with contextlib.suppress(Exception):
                daemon.cli("zephserver-stop")
            daemon.close()
        kill_jobs_under(self.work)
        shutil.rmtree(self.work, ignore_errors=True)


def test_a_killed_daemon_readopts_its_slurm_jobs(slurm):
    """kill -9 of the daemon with a job running, one pending and one ending meanwhile:
    the restarted daemon re-adopts the first two and records the real end of the third."""
    with contextlib.closing(OwnSite(slurm)) as own:
        async def before(ws):
            holder = await submit(ws, "licensed", secs=6)
            holder = await wait_job(ws, holder["id"], {"RUNNING"}, 30)
            pending = await submit(ws, "licensed", secs=0.5)
            pending = await wait_reason(ws, pending["id"], "Licenses")
            short = await submit(ws, "run", secs=0.5, code=4)
            short = await wait_job(ws, short["id"], {"RUNNING"}, 30)
            return holder, pending, short

        holder, pending, short = session(own.daemon, before)
        own.kill()
        poll_until(lambda: slurm_state_of(slurm, short) == "FAILED", 30,
                   what="the short job ending while the daemon is down")
        again = own.start_again()

        async def after(ws):
            readopted = (await ws.call("jobs.get", {"id": holder["id"]}))["result"]
            ended = await wait_job(ws, short["id"], TERMINAL, 30)
            done = [await wait_job(ws, j["id"], TERMINAL, 60) for j in (holder, pending)]
            return readopted, ended, done

        readopted, ended, done = session(again, after)
        assert readopted["state"] in ("RUNNING", "SUCCEEDED"), readopted
        assert ended["state"] == "FAILED", ended
        assert ended["exit_code"] == 4, ended
        assert [j["state"] for j in done] == ["SUCCEEDED", "SUCCEEDED"], done
        assert "job manager: 3 running job(s) re-adopted" in again.output, again.output


@pytest.mark.parametrize("reached_slurm", [True, False], ids=["submitted", "not-submitted"])
def test_a_daemon_killed_while_submitting(slurm, reached_slurm):
    """The daemon dies while a job is being submitted (here: slurmctld away, the daemon
    killed). If sbatch got that far (the job is then submitted under the daemon's name
    for it), the restarted daemon adopts that Slurm job and submits no second one; if
    not, the job is queued again and submitted once."""
    with contextlib.closing(OwnSite(slurm)) as own:
        slurm.stop_controller()
        try:
            async def submitting(ws):
                job = await submit(ws, "run", secs=0, code=5)
                return await wait_reason(ws, job["id"], "slurmctld unreachable", 60)

            job = session(own.daemon, submitting)
            own.kill()
        finally:
            slurm.start_controller()
        tag = hashlib.sha1(os.path.realpath(own.work / "var").encode()).hexdigest()[:8]
        name = f"zeph-{tag}-{job['id']}"
        assert job["extra"]["external"]["name"] == name, job  # recorded before sbatch
        by_hand = slurm.run("sbatch", "--parsable", f"--job-name={name}", "-o", "/dev/null",
                            "--wrap", "sleep 1; exit 5").strip() if reached_slurm else None
        again = own.start_again()
        done = session(again, lambda ws: wait_job(ws, job["id"], TERMINAL, 60))
        assert done["state"] == "FAILED", done
        assert done["exit_code"] == 5, done
        named = slurm.run("squeue", "-h", "--states=all", f"--name={name}", "-o", "%i")
        assert len(named.split()) == 1, named  # one submission, never two
        assert done["extra"]["external"]["id"] == (by_hand or named.split()[0]), done


def test_a_restarted_daemon_keeps_a_slurm_session(slurm):
    """kill -9 of the daemon while a session runs on Slurm: restarted, it still lists it
    in the proxy map, answers for it, and DELETE still ends it there."""
    with contextlib.closing(OwnSite(slurm)) as own:
        token = own.daemon.tokens["alice"]
        status, doc, _ = rest("POST", own.daemon.url + "/paraview", token,
                              {"application": "remote"}, timeout=90)
        assert status == 200, doc
        own.kill()
        (own.work / "proxy.map").unlink()  # written again from the records
        again = own.start_again()
        proxy = (own.work / "proxy.map").read_text()
        assert f"{doc['id']} {slurm.host}:{doc['port']}" in proxy, proxy
        status, seen, _ = rest("GET", f"{again.url}/paraview/{doc['id']}", token)
        assert status == 200, seen
        assert seen["sessionURL"] == doc["sessionURL"], seen
        with socket.create_connection((slurm.host, int(doc["port"])), timeout=10) as conn:
            assert conn.makefile("rb").readline() == b"hello from a compute node\n"
        assert rest("DELETE", f"{again.url}/paraview/{doc['id']}", token)[0] == 200
        poll_until(lambda: doc["id"] + " " not in (own.work / "proxy.map").read_text(), 20,
                   what="the session unlisted after DELETE")


def test_a_job_no_slurm_source_knows_is_lost():
    """slurmctld restarted without its state (the job is gone from squeue, scontrol and,
    without accounting, sacct): the job becomes LOST with that reason."""
    with slurm_support.Slurm() as cluster, contextlib.closing(OwnSite(cluster)) as own:
        async def running(ws):
            job = await submit(ws, "licensed", secs=60)
            return await wait_job(ws, job["id"], {"RUNNING"}, 30)

        job = session(own.daemon, running)
        cluster.stop_controller()
        for state in (cluster.dir / "state").iterdir():
            if state.name.startswith("job_state"):
                state.unlink()
        cluster.start_controller()
        done = session(own.daemon, lambda ws: wait_job(ws, job["id"], TERMINAL, 30))
        slurm_id = job["extra"]["external"]["id"]
        assert done["state"] == "LOST", done
        assert done["state_reason"] == f"Slurm job {slurm_id} is known to neither squeue, " \
                                       "scontrol nor sacct", done


# -- helpers ------------------------------------------------------------------------------

async def wait_reason(ws, job_id, words, timeout=30):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = (await ws.call("jobs.get", {"id": job_id}))["result"]
        if words in job["state_reason"]:
            return job
        if job["state"] in TERMINAL or asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id}: no {words!r} in its reason: {job}")
        await asyncio.sleep(0.05)


async def poll_output(ws, job_id, words, timeout=30):
    deadline = asyncio.get_running_loop().time() + timeout
    while words not in await output(ws, job_id):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} never printed {words!r}")
        await asyncio.sleep(0.05)


def slurm_state(slurm, job):
    shown = slurm.run("scontrol", "-o", "show", "job", job["extra"]["external"]["id"])
    return dict(w.split("=", 1) for w in shown.split() if "=" in w)["JobState"]


def slurm_state_of(slurm, job):
    shown = slurm.run("squeue", "-h", "--states=all", "-o", "%i %T")
    states = dict(line.split() for line in shown.splitlines())
    return states.get(str(job.get("extra", {}).get("external", {}).get("id")))
