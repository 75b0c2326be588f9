"""Batch jobs end to end: the real daemon launches real programs; clients use /ws."""

import asyncio
import os
import shutil
import signal

import pytest

from tests.support.daemon import DaemonProcess, child_env, short_tmpdir, write_settings
from tests.support.jobs import (
    NICE_WEIGHTS,
    TERMINAL,
    autogroup_nice,
    cgroup_mount,
    is_zombie_or_gone,
    job_apps,
    keepers_under,
    kill_jobs_under,
    processes_in_group,
    submit,
    wait_job,
)
from tests.support.poll import poll_async, poll_until
from tests.support.web import Ws, run, start_with_users
from zephserver.launch import keeper, shim

pytestmark = pytest.mark.e2e

def start_server(work, **settings):
    env = child_env()
    (work / "inputs").mkdir(exist_ok=True)
    values = {"APPS": job_apps(work), "DJANGO_SETTINGS_MODULE":
              "tests.support.django_test_settings",
              "RESOURCES": {"cores": 4, "memory": 4096, "licenses": {"lic": 2}},
              "JOB_PROGRESS_INTERVAL": 0.0, **settings}
    path = write_settings(work, **values)
    daemon = start_with_users(path, env)
    daemon.work = work
    return daemon


@pytest.fixture(scope="module")
def server():
    work = short_tmpdir()
    daemon = start_server(work)
    yield daemon
    daemon.cli("zephserver-stop")
    daemon.close()
    kill_jobs_under(work)
    print(daemon.output[-5000:])
    shutil.rmtree(work, ignore_errors=True)


def connect(server, who="alice"):
    return Ws.connect(server.url, token=server.tokens[who])


def test_submit_runs_to_success_with_output_and_updates(server):
    """A job is submitted, seen STARTING, RUNNING then SUCCEEDED through job.updated (one
    update per state), with its output."""
    async def scenario():
        ws = await connect(server)
        assert (await ws.call("jobs.subscribe", {}))["result"] == {"subscribed": "all"}
        job = await submit(ws, "echo", text="hello world")
        seen = []
        while not seen or seen[-1]["state"] not in TERMINAL:
            update = await ws.until("job.updated")
            if update["id"] == job["id"]:
                seen.append(update)
        out = await ws.call("jobs.output", {"id": job["id"]})
        await ws.aclose()
        return job, seen, out["result"]

    job, seen, out = run(scenario())
    assert job["app"] == "echo"
    assert job["owner"] == "alice"
    assert job["params"] == {
        "text": "hello world"}
    # each transition announced once, in order (QUEUED and STARTING commit together)
    assert [u["state"] for u in seen] == ["STARTING", "RUNNING", "SUCCEEDED"]
    final = seen[-1]
    assert final["exit_code"] == 0
    assert final["pid"]
    assert final["finished"]
    assert out["data"] == "hello world\n"
    assert out["eof"] is True
    assert out["next_offset"] == 12


@pytest.mark.parametrize(("params", "field"), [
    ({"nope": 1}, "nope"),
    ({"text": "rm -rf /; echo"}, "text"),
    ({"text": 5}, "text"),
])
def test_bad_params_name_the_field(server, params, field):
    async def scenario():
        ws = await connect(server)
        reply = await ws.call("jobs.submit", {"app": "echo", "params": params})
        await ws.aclose()
        return reply

    error = run(scenario())["error"]
    assert error["code"] == -32602, error
    assert error["data"]["field"] == field, error


def test_bad_submissions(server):
    """Unknown app, negative and huge ncpu, a value outside inList, a path escaping its
    root (by .. and by symlink): each refused with -32602 naming the field."""
    outside = server.work.parent / f"{server.work.name}-outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret").write_text("secret")
    link = server.work / "inputs" / "link"
    if not link.exists():
        link.symlink_to(outside / "secret")
    (server.work / "inputs" / "ok.txt").write_text("inside\n")

    async def scenario():
        ws = await connect(server)
        out = {}
        for key, request in {
            "app": {"app": "no-such-app"},
            "neg": {"app": "sleep", "params": {"ncpu": -1}},
            "huge": {"app": "sleep", "params": {"ncpu": 64}},
            "inlist": {"app": "sleep", "params": {"mode": "c"}},
            "dotdot": {"app": "input", "params": {"file": "../settings.py"}},
            "symlink": {"app": "input", "params": {"file": "link"}},
            "absolute": {"app": "input", "params": {"file": "/etc/passwd"}},
            "prio": {"app": "echo", "priority": 5},
        }.items():
            out[key] = (await ws.call("jobs.submit", request))["error"]
        ok = await submit(ws, "input", file="ok.txt")
        done = await wait_job(ws, ok["id"], TERMINAL)
        await ws.aclose()
        return out, done

    errors, done = run(scenario())
    shutil.rmtree(outside)
    assert errors["app"]["data"]["field"] == "app"
    assert errors["neg"]["data"]["field"] == "ncpu"
    assert "at least 1" in errors["neg"]["message"]
    assert errors["huge"]["data"]["field"] == "ncpu"
    assert "has 4" in errors["huge"]["message"]
    assert errors["inlist"]["data"]["field"] == "mode"
    for key in ("dotdot", "symlink", "absolute"):
        assert errors[key]["code"] == -32602
        assert errors[key]["data"]["field"] == "file"
        assert "escapes its root" in errors[key]["message"], errors[key]
    assert errors["prio"]["code"] == -32002
    assert done["state"] == "SUCCEEDED"


def test_missing_program_fails_clearly(server):
    async def scenario():
        ws = await connect(server)
        job = await submit(ws, "missing")
        done = await wait_job(ws, job["id"], TERMINAL)
        await ws.aclose()
        return done

    done = run(scenario())
    assert done["state"] == "FAILED", done
    assert "program not found" in done["state_reason"]
    assert "/nonexistent/solver" in done[
        "state_reason"]
    assert done["pid"] is None


def test_exit_code_recorded(server):
    async def scenario():
        ws = await connect(server)
        job = await submit(ws, "exit", code=7)
        done = await wait_job(ws, job["id"], TERMINAL)
        await ws.aclose()
        return done

    done = run(scenario())
    assert done["state"] == "FAILED"
    assert done["exit_code"] == 7
    assert done["state_reason"] == "exit code 7"


def test_cancel_rules(server):
    """Cancel: another user's job is answered as an unknown one (-32005, nothing said of
    it), a finished job -32006, a running job CANCELLED, a queued one CANCELLED before it
    starts."""
    async def scenario():
        alice, bob = await connect(server), await connect(server, "bob")
        running = await submit(alice, "sleep")
        await wait_job(alice, running["id"], {"RUNNING"})
        theirs = (await bob.call("jobs.cancel", {"id": running["id"]}))["error"]
        peek = (await bob.call("jobs.get", {"id": running["id"]}))["error"]
        cancelled = (await alice.call("jobs.cancel", {"id": running["id"]}))["result"]
        done = await wait_job(alice, running["id"], TERMINAL)
        again = (await alice.call("jobs.cancel", {"id": running["id"]}))["error"]
        unknown = (await alice.call("jobs.cancel", {"id": 10**9}))["error"]
        await alice.aclose()
        await bob.aclose()
        return theirs, peek, cancelled, done, again, unknown

    theirs, peek, cancelled, done, again, unknown = run(scenario())
    for error in (theirs, peek):
        assert error == {**unknown, "message": f"no job {done['id']}"}
    assert cancelled["state"] == "RUNNING"
    assert "stopping" in cancelled["state_reason"]
    assert done["state"] == "CANCELLED"
    assert "cancelled by alice" in done["state_reason"]
    assert again["code"] == -32006
    assert unknown["code"] == -32005


def test_sigterm_ignorer_killed_after_grace_and_grandchildren_go(server):
    async def scenario():
        ws = await connect(server)
        stubborn = await submit(ws, "stubborn")
        forker = await submit(ws, "forker")
        for job in (stubborn, forker):
            await wait_job(ws, job["id"], {"RUNNING"})
        # wait until both programs really run (their first line is in the log)
        for job, text in ((stubborn, "ignoring"), (forker, "forked")):
            for _ in range(500):
                if text in (await ws.call("jobs.output", {"id": job["id"]}))["result"]["data"]:
                    break
                await asyncio.sleep(0.01)
        pids = {}
        for job in (stubborn, forker):
            pids[job["id"]] = (await ws.call("jobs.get", {"id": job["id"]}))["result"]["pid"]
            await ws.call("jobs.cancel", {"id": job["id"]})
        done = [await wait_job(ws, j["id"], TERMINAL, 15) for j in (stubborn, forker)]
        await ws.aclose()
        return pids, done

    pids, (stubborn, forker) = run(scenario())
    assert stubborn["state"] == "CANCELLED", stubborn
    assert "SIGKILL" in stubborn["state_reason"], stubborn
    assert forker["state"] == "CANCELLED"
    for pgid in pids.values():
        assert processes_in_group(pgid) == []


def test_wall_time_exceeded(server):
    async def scenario():
        ws = await connect(server)
        job = await submit(ws, "wall")
        done = await wait_job(ws, job["id"], TERMINAL, 15)
        await ws.aclose()
        return done

    done = run(scenario())
    assert done["state"] == "TIMED_OUT"
    assert "wall time" in done["state_reason"]


def test_output_offsets_resume_without_gap_or_duplicate(server):
    """job.output notifications carry offsets; a client that drops and resubscribes from
    its last offset gets every byte once; the last line has no newline and is kept."""
    async def scenario():
        ws = await connect(server)
        job = await submit(ws, "lines", n=20000, width=80)
        got = bytearray()
        sub = await ws.call("jobs.subscribe", {"id": job["id"]})
        assert sub["result"]["subscribed"] == job["id"]
        while len(got) < 100_000:
            note = await ws.until("job.output")
            assert note["offset"] == len(got)
            got += note["data"].encode()
        await ws.aclose()  # drop mid-stream
        ws = await connect(server)
        await ws.call("jobs.subscribe", {"id": job["id"], "offset": len(got)})
        while True:
            note = await ws.until("job.output")
            if note.get("eof"):
                break
            assert note["offset"] == len(got), (note["offset"], len(got))
            got += note["data"].encode()
        past = (await ws.call("jobs.output", {"id": job["id"], "offset": 10**9}))["result"]
        middle = (await ws.call("jobs.output", {"id": job["id"], "offset": 80 * 3,
                                                 "limit": 80}))["result"]
        await ws.aclose()
        return bytes(got), past, middle

    got, past, middle = run(scenario())
    lines = got.split(b"\n")
    assert len(lines) == 20001
    assert [int(line[:8]) for line in lines[:-1]] == list(range(20000))
    assert lines[-1] == b"no newline at the end"
    assert past["data"] == ""
    assert past["eof"] is True
    assert middle["data"].startswith("00000003")
    assert len(middle["data"]) == 80


def test_progress_regex_and_lsdyna_parser_and_control(server):
    async def scenario():
        ws = await connect(server)
        demo = await submit(ws, "demo", steps=4)
        demo_done = await wait_job(ws, demo["id"], TERMINAL)
        # slow enough (40 steps of 0.2 s) that the switch always arrives before the end
        dyna = await submit(ws, "lsdyna", delay=0.2)
        await wait_job(ws, dyna["id"], {"RUNNING"})
        # progress is reported while it runs
        for _ in range(500):
            progress = (await ws.call("jobs.get", {"id": dyna["id"]}))["result"]["progress"]
            if (progress.get("percent") or 0) > 0:
                break
            await asyncio.sleep(0.02)
        bad = (await ws.call("jobs.control", {"id": dyna["id"], "control": "sw9"}))["error"]
        control = (await ws.call("jobs.control", {"id": dyna["id"], "control": "sw1"}))
        dyna_done = await wait_job(ws, dyna["id"], TERMINAL)
        for _ in range(200):  # the final progress lands just after the exit
            dyna_done = (await ws.call("jobs.get", {"id": dyna["id"]}))["result"]
            if dyna_done["progress"].get("status") == "normal termination":
                break
            await asyncio.sleep(0.02)
        await ws.aclose()
        return demo_done, progress, bad, control, dyna_done

    demo_done, progress, bad, control, dyna_done = run(scenario())
    assert demo_done["progress"]["percent"] == 100.0
    assert demo_done["progress"]["status"] == "done"
    assert 0 < progress["percent"] < 100
    assert progress["details"]["termination_time"] == 10.0
    assert progress["details"]["added_mass"] == pytest.approx(1.2345e-3)
    assert progress["details"]["mass_increase_percent"] == 0.5
    assert bad["code"] == -32602
    assert bad["data"]["field"] == "control"
    assert control["result"]["file"] == "d3kil"
    assert dyna_done["state"] == "SUCCEEDED"
    out = dyna_done
    assert out["progress"]["status"] == "normal termination"
    # stopped by the switch before its 40 steps: the time reached is below the end
    assert out["progress"]["details"]["time"] < 10.0


def test_queue_resources_hold_move_update(server):
    """Licences (2) limit what runs; others wait with a reason; hold/release/move/update
    reorder or change the queue; cancelling a runner starts the next one."""
    async def scenario():
        ws = await connect(server)
        boss = await connect(server, "boss")
        a = await submit(ws, "sleep", ncpu=2)  # takes both licences
        await wait_job(ws, a["id"], {"RUNNING"})
        b = await submit(ws, "sleep")
        c = await submit(ws, "sleep")
        d = await submit(ws, "sleep")
        queued = (await ws.call("queue.list"))["result"]
        mine = [q for q in queued if q["id"] in (b["id"], c["id"], d["id"])]
        held = (await ws.call("queue.hold", {"id": b["id"]}))["result"]
        moved = (await ws.call("queue.move", {"id": d["id"], "position": 0}))["result"]
        order = [q["id"] for q in (await ws.call("queue.list"))["result"] if q["position"]
                 is not None and q["id"] in (c["id"], d["id"])]
        updated = (await ws.call("jobs.update", {"id": c["id"], "params": {"seconds": 31}}))
        too_many = (await ws.call("jobs.update", {"id": c["id"], "params": {"ncpu": 3}}))
        status = (await boss.call("resources.status"))["result"]
        running_update = (await ws.call("jobs.update", {"id": a["id"], "params": {}}))
        await ws.call("jobs.cancel", {"id": a["id"]})
        d_run = await wait_job(ws, d["id"], {"RUNNING"})
        c_run = await wait_job(ws, c["id"], {"RUNNING"})
        b_state = (await ws.call("jobs.get", {"id": b["id"]}))["result"]
        released = (await ws.call("queue.release", {"id": b["id"]}))["result"]
        for job in (b, c, d):
            await ws.call("jobs.cancel", {"id": job["id"]})
            await wait_job(ws, job["id"], TERMINAL)
        await ws.aclose()
        await boss.aclose()
        return (mine, held, moved, order, updated, too_many, status, running_update, d_run,
                c_run, b_state, released)

    (mine, held, moved, order, updated, too_many, status, running_update, d_run, c_run,
     b_state, released) = run(scenario())
    assert [q["position"] for q in mine] == sorted(q["position"] for q in mine)
    assert all("lic licence" in q["state_reason"] for q in mine), mine
    assert held["state"] == "HELD"
    assert moved["state"] == "QUEUED"
    assert order[0] == moved["id"]
    assert updated["result"]["params"]["seconds"] == 31
    assert too_many["error"]["code"] == -32602
    assert too_many["error"]["data"]["field"] == "ncpu"
    assert status["capacity"]["licenses"] == {"lic": 2}
    assert status["free"]["licenses"] == {
        "lic": 0}
    assert running_update["error"]["code"] == -32006
    assert d_run["state"] == c_run["state"] == "RUNNING"
    assert b_state["state"] == "HELD"
    assert released["state"] in ("QUEUED", "RUNNING")


def test_jobs_list_filters_and_privacy(server):
    async def scenario():
        alice, bob, boss = (await connect(server), await connect(server, "bob"),
                            await connect(server, "boss"))
        job = await submit(bob, "echo", text="bob")
        await wait_job(bob, job["id"], TERMINAL)
        mine = (await alice.call("jobs.list", {"limit": 500}))["result"]
        others = (await alice.call("jobs.list", {"owner": "bob"}))["error"]
        bobs = (await bob.call("jobs.list", {"state": "SUCCEEDED", "app": "echo"}))["result"]
        staff = (await boss.call("jobs.list", {"owner": "bob", "limit": 1}))["result"]
        bad = (await alice.call("jobs.list", {"state": "DONE"}))["error"]
        anon = await Ws.connect(server.url)
        refused = (await anon.call("jobs.list"))["error"]
        for ws in (alice, bob, boss, anon):
            await ws.aclose()
        return job, mine, others, bobs, staff, bad, refused

    job, mine, others, bobs, staff, bad, refused = run(scenario())
    assert all(j["owner"] == "alice" for j in mine["jobs"])
    assert job["id"] not in [
        j["id"] for j in mine["jobs"]]
    assert others["code"] == -32002
    assert bobs["jobs"][0]["id"] == job["id"]
    assert all(j["state"] == "SUCCEEDED"
                                                      for j in bobs["jobs"])
    assert staff["total"] >= 1
    assert len(staff["jobs"]) == 1
    assert staff["jobs"][0]["owner"] == "bob"
    assert bad["code"] == -32602
    assert bad["data"]["field"] == "state"
    assert refused["code"] == -32001


def test_apps_list(server):
    async def scenario():
        ws = await connect(server)
        reply = await ws.call("apps.list")
        await ws.aclose()
        return reply["result"]

    apps = {a["name"]: a for a in run(scenario())}
    assert apps["sleep"]["params"]["mode"]["inList"] == ["a", "b"]
    assert apps["sleep"]["params"]["ncpu"] == {"type": "int", "required": False, "default": 1,
                                               "min": 1, "max": 64}
    assert "argv" not in apps["sleep"]  # the command line is the administrator's business


def test_kill9_daemon_with_20_running_jobs(workdir, daemons):
    """kill -9 the daemon with 20 jobs running; 10 end while it is down. On restart all
    20 are re-adopted or recorded with their real exit codes, and their logs are complete."""
    first = start_server(workdir, RESOURCES={"cores": 4, "memory": 4096, "licenses": {}})
    daemons_started = [first]
    try:
        async def submit_all():
            ws = await connect(first)
            jobs = [await submit(ws, "waitfile", flag=f"flag{i}", code=i + 1)
                    for i in range(20)]
            running = [await wait_job(ws, j["id"], {"RUNNING"}) for j in jobs]
            await ws.aclose()
            return running

        running = run(submit_all())
        logs = [workdir / "var" / "jobs" / str(j["id"]) / "output.log" for j in running]
        poll_until(lambda: all(p.exists() and b"start" in p.read_bytes() for p in logs), 20)
        first.kill()
        first.wait_exit()
        for i in range(10):  # these end while the daemon is down
            (workdir / f"flag{i}").touch()
        poll_until(lambda: all(is_zombie_or_gone(j["pid"]) for j in running[:10]), 20)
        second = DaemonProcess(first.settings, first.env).start()
        second.tokens = first.tokens
        daemons_started.append(second)

        async def after_restart():
            ws = await connect(second)
            ended = [await wait_job(ws, j["id"], TERMINAL) for j in running[:10]]
            alive = [(await ws.call("jobs.get", {"id": j["id"]}))["result"]
                     for j in running[10:]]
            for i in range(10, 20):
                (workdir / f"flag{i}").touch()
            later = [await wait_job(ws, j["id"], TERMINAL) for j in running[10:]]
            await ws.aclose()
            return ended, alive, later

        ended, alive, later = run(after_restart())
        for i, job in enumerate(ended):
            assert (job["exit_code"], job["state"]) == (i + 1, "FAILED"), job
            assert "while the daemon was down" in job["state_reason"]
        for before, now in zip(running[10:], alive, strict=True):
            assert now["state"] == "RUNNING"
            assert now["pid"] == before["pid"]
        for i, job in enumerate(later, start=10):
            assert (job["exit_code"], job["state"]) == (i + 1, "FAILED"), job
        for path in logs:
            text = path.read_text()
            assert text.startswith("start "), text
            assert text.endswith("end\n"), text
        second.cli("zephserver-stop")
    finally:
        for d in daemons_started:
            d.close()
        kill_jobs_under(workdir)


def test_burst_then_cancel_all_at_once(server):
    """A burst of submits cancelled at once, most right after their spawn (before the
    program's exec): every one ends CANCELLED by SIGTERM, no process left in the groups."""
    async def scenario():
        ws = await connect(server, "bob")
        await ws.send([{"jsonrpc": "2.0", "id": i, "method": "jobs.submit",
                        "params": {"app": "waitfile", "params": {"flag": f"never{i}"}}}
                       for i in range(20)])
        replies = await ws.recv()
        ids = [r["result"]["id"] for r in replies]
        await ws.send([{"jsonrpc": "2.0", "id": i, "method": "jobs.cancel",
                        "params": {"id": job_id}} for i, job_id in enumerate(ids)])
        cancels = await ws.recv()
        done = [await wait_job(ws, job_id, TERMINAL) for job_id in ids]
        await ws.aclose()
        return cancels, done

    cancels, done = run(scenario())
    assert all("result" in c for c in cancels), cancels
    assert {d["state"] for d in done} == {"CANCELLED"}, done
    # SIGTERM reached every program, even one cancelled just as it was spawned
    assert not [d for d in done if "SIGKILL" in d["state_reason"]], done
    for job in done:
        if job["pid"]:
            assert processes_in_group(job["pid"]) == []


def test_a_burst_of_submits_is_written_together_each_with_its_own_record(server):
    """Submits arriving together are inserted in one statement: each caller still gets
    its own job (ids in the order asked), a refused one in the middle changes nothing
    for the others, and every record holds what its caller sent."""
    async def scenario():
        ws = await connect(server)
        asked = [{"jsonrpc": "2.0", "id": i, "method": "jobs.submit",
                  "params": {"app": "echo", "params": {"text": f"burst {i}"},
                             "name": f"b{i}"}} for i in range(30)]
        asked[12]["params"]["app"] = "no-such-app"
        await ws.send(asked)
        replies = {r["id"]: r for r in await ws.recv()}
        ids = [replies[i]["result"]["id"] for i in range(30) if i != 12]
        done = [await wait_job(ws, job_id, {"SUCCEEDED"}) for job_id in ids]
        outputs = [(await ws.call("jobs.output", {"id": job_id}))["result"]["data"]
                   for job_id in ids]
        await ws.aclose()
        return replies[12], ids, done, outputs

    refused, ids, done, outputs = run(scenario())
    assert refused["error"]["data"]["field"] == "app", refused
    assert ids == sorted(ids), ids
    assert len(set(ids)) == 29, ids
    asked = [i for i in range(30) if i != 12]
    assert [d["name"] for d in done] == [f"b{i}" for i in asked], done
    assert [d["params"]["text"] for d in done] == [f"burst {i}" for i in asked], done
    assert outputs == [f"burst {i}\n" for i in asked], outputs


def test_reload_settings_applies_apps_and_resources(workdir):
    """`zephserver-command reload` (and SIGHUP) re-reads the settings: new apps and
    capacity apply at once, a queued job starts when capacity grows, a bad file changes
    nothing, and what needs a restart is named."""
    server = start_server(workdir, RESOURCES={"cores": 4, "memory": 4096, "licenses": {
        "lic": {"command": ["echo", "0"]}}})
    try:
        async def before():
            ws = await connect(server)
            job = (await ws.call("jobs.submit", {"app": "sleep", "params": {"ncpu": 1}}))
            await ws.aclose()
            return job

        job = run(before())["result"]  # needs a "lic" licence: 0 available yet
        assert job["state"] == "QUEUED"
        text = server.settings.read_text()
        apps = job_apps(workdir)
        apps["later"] = {"argv": ["true"]}
        server.settings.write_text(text + f"APPS = {apps!r}\nRESOURCES = {{'cores': 4, "
                                   "'memory': 4096, 'licenses': {'lic': 1}}\n"
                                   "WS_MAX_BATCH = 7\n")
        result = server.cli("zephserver-command", "reload")
        assert result.returncode == 0, result.stderr
        assert "restart_needed_for" in result.stdout
        assert "WS_MAX_BATCH" in result.stdout

        async def after():
            ws = await connect(server)
            running = await wait_job(ws, job["id"], {"RUNNING"})
            names = [a["name"] for a in (await ws.call("apps.list"))["result"]]
            await ws.call("jobs.cancel", {"id": job["id"]})
            await wait_job(ws, job["id"], TERMINAL)
            await ws.aclose()
            return running, names

        running, names = run(after())
        assert running["state"] == "RUNNING"
        assert "later" in names
        server.settings.write_text(text + "APPS = {'x': {'argv': 'not a list'}}\n")
        bad = server.cli("zephserver-command", "reload")
        assert bad.returncode != 0
        assert "argv must be a non-empty list" in bad.stdout + bad.stderr
        os.kill(server.pid, signal.SIGHUP)  # the same, from a signal: logged, still up
        poll_until(lambda: "settings not reloaded" in server.output, 10)
        assert server.cli("zephserver-status").returncode == 0
        server.cli("zephserver-stop")
    finally:
        server.close()
        kill_jobs_under(workdir)


def test_queue_survives_restart_and_vanished_job_is_lost(workdir):
    """The queue is in the database: queued jobs are there, in order, after a restart. A
    job killed while the daemon was down, with what would record its status (its shim, or
    the keeper), is LOST with a reason."""
    first = start_server(workdir, RESOURCES={"cores": 4, "memory": 4096, "licenses": {
        "lic": {"command": ["echo", "0"]}}})
    started = [first]
    try:
        async def before():
            ws = await connect(first)
            queued = [await submit(ws, "sleep") for _ in range(3)]  # no licence yet
            victim = await submit(ws, "waitfile", flag="never")
            victim = await wait_job(ws, victim["id"], {"RUNNING"})
            order = [q["id"] for q in (await ws.call("queue.list"))["result"]]
            await ws.aclose()
            return queued, victim, order

        queued, victim, order = run(before())
        first.kill()
        first.wait_exit()
        for keeper in keepers_under(workdir):
            os.kill(keeper, signal.SIGKILL)
        os.killpg(victim["pid"], signal.SIGKILL)  # shim and program: no status written
        poll_until(lambda: processes_in_group(victim["pid"]) == [], 10)
        second = DaemonProcess(first.settings, first.env).start()
        second.tokens = first.tokens
        started.append(second)

        async def after():
            ws = await connect(second)
            lost = await wait_job(ws, victim["id"], TERMINAL)
            again = [q["id"] for q in (await ws.call("queue.list"))["result"]]
            states = {(await ws.call("jobs.get", {"id": j["id"]}))["result"]["state"]
                      for j in queued}
            await ws.aclose()
            return lost, again, states

        lost, again, states = run(after())
        assert lost["state"] == "LOST", lost
        assert "no exit status" in lost["state_reason"]
        assert again == order == [j["id"] for j in queued]
        assert states == {"QUEUED"}
        second.cli("zephserver-stop")
    finally:
        for d in started:
            d.close()
        kill_jobs_under(workdir)


def test_an_ended_job_leaves_no_record_of_its_process_behind(server):
    """A running job's process is recorded for a restart: in the keeper's ledger (where
    jobs have cgroups), or in the shim's pid file beside the job's directory. Once its end
    is in the database, the record goes (the ledger's entry with the next batch of
    spawns, the shim's files at once: two small files a job, forever, before); the job's
    own directory holds its log, nothing of ours."""
    data_dir = server.work / "var"
    ledger = keeper.Ledger(keeper.ledger_path(str(data_dir / "keeper.sock")))

    def recorded(job_id: int) -> bool:
        job_dir = str(data_dir / "jobs" / str(job_id))
        return f"job-{job_id}" in ledger.read() or \
            shim.recorded_pid(shim.meta_files(job_dir)) is not None

    async def scenario():
        ws = await connect(server)
        job = await submit(ws, "sleep", seconds=30)
        await wait_job(ws, job["id"], {"RUNNING"})
        await poll_async(lambda: recorded(job["id"]), 10, what="its record")
        assert "result" in await ws.call("jobs.cancel", {"id": job["id"]})
        await wait_job(ws, job["id"], {"CANCELLED"})
        after = await submit(ws, "sleep", seconds=0)
        await wait_job(ws, after["id"], {"SUCCEEDED"})
        await ws.aclose()
        return job["id"]

    job_id = run(scenario())
    poll_until(lambda: not recorded(job_id), 10, what="no record left")
    beside = shim.meta_files(str(data_dir / "jobs" / str(job_id)))
    assert not os.path.exists(beside.pid)
    assert not os.path.exists(beside.status)
    assert os.listdir(data_dir / "jobs" / str(job_id)) == ["output.log"]


def test_jobs_run_below_the_daemon(server):
    """A job runs JOB_NICE (10 by default) steps of niceness below the daemon: a hundred
    busy jobs cannot starve the daemon. Where the v1 cpu controller is, all jobs share one
    group that weighs as one process of that niceness; elsewhere each job's session (its
    autogroup, where the kernel has them) is set that far below."""
    async def scenario():
        ws = await connect(server)
        job = await submit(ws, "priority")
        await wait_job(ws, job["id"], {"SUCCEEDED"})
        out = await ws.call("jobs.output", {"id": job["id"]})
        await ws.aclose()
        return out["result"]["data"].splitlines()

    nice, group, *cpu = run(scenario())
    daemon_nice = os.getpriority(os.PRIO_PROCESS, server.pid)
    assert nice == f"nice {min(19, daemon_nice + 10)}"
    daemon_group = autogroup_nice(server.pid)
    mount = cgroup_mount("cpu")
    if daemon_group is not None and mount is None:  # its own session that far below
        assert group.endswith(f" nice {min(19, daemon_group + 10)}"), group
    # (in the shared cpu group below, the kernel weighs no autogroup: only tasks of the
    # root cpu group are weighed by theirs, so a job's is left as it is)
    if mount is not None:  # all jobs in one group weighing as one process that far below
        level = min(19, (daemon_nice if daemon_group is None else daemon_group) + 10)
        path = cpu[0].removeprefix("cpu ")
        assert path.endswith("/jobs"), cpu
        assert "/zephserver-" in path, cpu
        with open(f"{mount}{path}/cpu.shares") as f:
            assert int(f.read()) == NICE_WEIGHTS[level]
