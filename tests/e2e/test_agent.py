"""The process agent end to end: the smartmob-agent REST API under /agent/, Procfile
archives served by a real HTTP server, live consoles, restarts, and children that die
with the daemon."""

import asyncio
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from tests.support.archives import ArchiveServer, make_tar, make_zip
from tests.support.console import RawConsole
from tests.support.daemon import DaemonProcess, child_env, short_tmpdir, write_settings
from tests.support.jobs import is_zombie_or_gone, processes_in_group
from tests.support.poll import poll_until
from tests.support.sessions import rest
from tests.support.web import close_ws, run, start_with_users

pytestmark = pytest.mark.e2e

FLOOD = ('echo waiting for go; while [ ! -e go ]; do sleep 0.02; done; '  # when told
         'yes "a line with some padding to make it longer" | head -n 400000; exec sleep 600')
PROCFILE = f"""# the demo app
web: while true; do echo "tick $GREETING"; sleep 0.05; done
crash: echo "dying now"; exit 3
sleeper: exec sleep 600
flood: {FLOOD}
"""
VENV_PROCFILE = ("web: exec python -c \"import sys, time; print('prefix', sys.prefix, "
                 "flush=True); time.sleep(600)\"\n")


@pytest.fixture(scope="module")
def archives():
    root = short_tmpdir("za")
    make_zip(root / "app.zip", {"Procfile": PROCFILE, "README": "demo"})
    make_tar(root / "app.tar.gz", {"Procfile": PROCFILE})
    make_zip(root / "noproc.zip", {"README": "no Procfile here"})
    make_zip(root / "slip.zip", {"Procfile": PROCFILE, "../../evil.txt": "escaped"})
    make_zip(root / "venv.zip", {"Procfile": VENV_PROCFILE, "requirements.txt": "# none\n"})
    make_zip(root / "pipfail.zip", {"Procfile": VENV_PROCFILE,
                                    "requirements.txt": "not!! a requirement\n"})
    (root / "page.html").write_text("<html>not an archive</html>")
    server = ArchiveServer(root)
    server.root = root
    yield server
    server.close()
    shutil.rmtree(root, ignore_errors=True)


def start_agent(work, archives, **settings):
    env = child_env()
    values = {"DJANGO_SETTINGS_MODULE": "tests.support.django_test_settings",
              "AGENT_FILE_ROOTS": [str(archives.root)], "AGENT_BACKOFF_INITIAL": 0.05,
              "AGENT_MIN_UPTIME": 5.0, "AGENT_GRACE": 2.0, "AGENT_CONSOLE_REPLAY": 5,
              "AGENT_CONSOLE_MAX_PENDING": 2048,
              "AGENT_ALLOW": None,  # every logged-in user (the default is staff only)
              **settings}
    path = write_settings(work, **values)
    return start_with_users(path, env)


@pytest.fixture(scope="module")
def server(archives):
    work = short_tmpdir()
    daemon = start_agent(work, archives)
    yield daemon
    daemon.cli("zephserver-stop")
    daemon.close()
    print(daemon.output[-5000:])
    shutil.rmtree(work, ignore_errors=True)


def call(server, method, path, body=None, who="alice"):
    return rest(method, server.url + path, server.tokens.get(who), body)


def create(server, archives, node, process_type="web", archive="app.zip", who="alice",
           **more):
    body = {"app": "demo", "node": node, "process_type": process_type,
            "source_url": f"{archives.url}/{archive}", **more}
    status, doc, headers = call(server, "POST", "/agent/create-process", body, who)
    assert status == 201, doc
    assert headers["Location"] == doc["details"]
    return doc


def wait_state(server, slug, states, who="alice", timeout=30):
    def probe():
        status, doc, _ = call(server, "GET", f"/agent/process-status/{slug}", who=who)
        return doc if status == 200 and doc["state"] in states else None
    return poll_until(probe, timeout, interval=0.02, what=f"{slug} in {states}")


async def console(url, token, count, timeout=20):
    """Read ``count`` frames of an attached console."""
    conn = await websocket_connect(HTTPRequest(url, headers={
        "Authorization": f"Bearer {token}"}))
    frames = []
    try:
        while len(frames) < count:
            frame = await asyncio.wait_for(conn.read_message(), timeout)
            assert frame is not None, frames
            frames.append(frame)
    finally:
        await close_ws(conn)
    return frames


def test_walkthrough_of_the_agent_documentation(server, archives):
    """index -> empty list -> create -> listed -> attach and read lines -> delete."""
    status, index, _ = call(server, "GET", "/agent/")
    assert status == 200
    assert index == {"list": server.url + "/agent/list-processes",
                     "create": server.url + "/agent/create-process"}
    status, listing, _ = rest("GET", index["list"], server.tokens["alice"])
    assert (status, listing) == (200, {"processes": []})
    body = {"app": "myapp", "node": "web.0", "process_type": "web",
            "source_url": f"{archives.url}/app.zip", "env": {"GREETING": "hello"}}
    status, process, _headers = rest("POST", index["create"], server.tokens["alice"], body)
    assert status == 201, process
    ws_base = server.url.replace("http", "ws", 1)
    assert {k: process[k] for k in ("app", "node", "slug", "attach", "details", "delete")} == {
        "app": "myapp", "node": "web.0", "slug": "myapp.web.0",
        "attach": f"{ws_base}/agent/attach-console/myapp.web.0",
        "details": f"{server.url}/agent/process-status/myapp.web.0",
        "delete": f"{server.url}/agent/delete-process/myapp.web.0"}
    assert process["state"] in ("pending", "downloading", "unpacking", "starting", "running")
    status, listing, _ = rest("GET", index["list"], server.tokens["alice"])
    assert [p["slug"] for p in listing["processes"]] == ["myapp.web.0"]
    running = wait_state(server, "myapp.web.0", {"running"})
    assert running["pid"]
    assert running["restarts"] == 0

    async def two_consoles():
        return await asyncio.gather(console(process["attach"], server.tokens["alice"], 8),
                                    console(process["attach"], server.tokens["alice"], 8))
    first, second = run(two_consoles())
    for frames in (first, second):
        assert all(f == "tick hello" for f in frames), frames  # env reached the child
    status, answer, _ = rest("POST", process["delete"], server.tokens["alice"], {})
    assert (status, answer) == (200, {})
    assert call(server, "GET", "/agent/process-status/myapp.web.0")[0] == 404
    poll_until(lambda: processes_in_group(running["pid"]) == [], 10, what="group gone")
    assert call(server, "GET", "/agent/list-processes")[1] == {"processes": []}


def test_bad_requests(server, archives):
    good = {"app": "demo", "node": "bad.0", "process_type": "web",
            "source_url": f"{archives.url}/app.zip"}
    for key in ("app", "node", "process_type", "source_url"):
        body = {k: v for k, v in good.items() if k != key}
        status, answer, _ = call(server, "POST", "/agent/create-process", body)
        assert status == 400, answer
        assert key in answer["error"]
        assert answer["field"] == key
    cases = [({"app": 5}, "app"), ({"node": ["x"]}, "node"), ({"env": "A=1"}, "env"),
             ({"env": {"A": 1}}, "env"), ({"env": {"1A": "x"}}, "env"),
             ({"source_url": "ftp://example.com/a.zip"}, "source_url"),
             ({"source_url": "file:///etc/passwd"}, "source_url"),
             ({"node": "../x"}, "node"), ({"max_restarts": 0}, "max_restarts"),
             ({"command": "rm -rf /"}, "command"), ({"runs_on": 3}, "runs_on"),
             ({"runs_on": "nowhere"}, "runs_on")]  # (not a node: a single daemon)
    for change, field in cases:
        status, answer, _ = call(server, "POST", "/agent/create-process", {**good, **change})
        assert status == 400, (change, answer)
        assert answer["field"] == field, (change, answer)
    assert call(server, "POST", "/agent/create-process", b"[1, 2")[0] == 400
    doc = create(server, archives, "dup.0")
    status, answer, _ = call(server, "POST", "/agent/create-process",
                             {**good, "node": "dup.0"})
    assert status == 409, answer
    assert call(server, "GET", "/agent/process-status/demo.none")[0] == 404
    assert call(server, "POST", "/agent/delete-process/demo.none", {})[0] == 404
    assert call(server, "DELETE", "/agent/process-status/demo.none")[0] == 404
    assert call(server, "GET", f"/agent/process-status/{doc['slug']}", who="bob")[0] == 404
    assert call(server, "GET", f"/agent/process-status/{doc['slug']}", who="boss")[0] == 200
    assert rest("GET", server.url + "/agent/list-processes", None)[0] == 401
    # names are per user: bob's "dup.0" is his own, and reveals nothing of alice's
    assert call(server, "POST", f"/agent/delete-process/{doc['slug']}", {},
                who="bob")[0] == 404
    bobs = create(server, archives, "dup.0", who="bob")
    assert bobs["slug"] == doc["slug"]
    assert bobs["id"] != doc["id"]
    status, listed, _ = call(server, "GET", "/agent/list-processes", who="bob")
    assert [p["id"] for p in listed["processes"]] == [bobs["id"]]
    assert call(server, "POST", f"/agent/delete-process/{doc['slug']}", {},
                who="bob")[0] == 200
    assert call(server, "GET", f"/agent/process-status/{doc['slug']}")[1]["id"] == doc["id"]

    async def attach_unknown():
        with pytest.raises(HTTPClientError) as err:
            await websocket_connect(HTTPRequest(
                server.url.replace("http", "ws") + "/agent/attach-console/demo.none",
                headers={"Authorization": f"Bearer {server.tokens['alice']}"}))
        return err.value.code
    assert run(attach_unknown()) == 404
    assert call(server, "DELETE", f"/agent/process-status/{doc['slug']}")[0] == 200


@pytest.mark.parametrize(("archive", "process_type", "phase", "words"), [
    ("missing.zip", "web", "download failure", "HTTP 404"),
    ("page.html", "web", "download failure", "not a zip or tar archive"),
    ("noproc.zip", "web", "no procfile", "no Procfile"),
    ("app.zip", "worker", "unknown process type", "crash, flood, sleeper, web"),
    ("slip.zip", "web", "unpack failure", "unsafe path"),
    ("pipfail.zip", "web", "pip install failure", "Invalid requirement"),
])
def test_source_failures(server, archives, archive, process_type, phase, words):
    node = re.sub(r"\W", "", archive + process_type)
    doc = create(server, archives, node, process_type, archive)
    failed = wait_state(server, doc["slug"], {phase}, timeout=60)
    assert words in failed["state_reason"], failed
    assert not (archives.root.parent / "evil.txt").exists()
    assert not list(archives.root.parent.glob("*/evil.txt"))
    assert call(server, "POST", f"/agent/delete-process/{doc['slug']}", {})[0] == 200


def test_tar_archive_from_a_file_url_runs(server, archives):
    doc = create(server, archives, "tar.0", "sleeper", source_url=f"file://{archives.root}"
                 "/app.tar.gz")
    running = wait_state(server, doc["slug"], {"running"})
    assert call(server, "POST", f"/agent/delete-process/{doc['slug']}", {})[0] == 200
    poll_until(lambda: is_zombie_or_gone(running["pid"]), 10, what="stopped")


def test_a_process_that_exits_at_once_backs_off_more_each_time(server, archives):
    doc = create(server, archives, "crash.0", "crash")
    delays = []

    def enough():
        _status, now, _ = call(server, "GET", f"/agent/process-status/{doc['slug']}")
        m = re.search(r"restart (\d+) in ([\d.]+)s", now["state_reason"])
        if now["state"] == "backoff" and m and (not delays or int(m[1]) > delays[-1][0]):
            delays.append((int(m[1]), float(m[2])))
            assert now["exit_code"] == 3
        return len(delays) >= 4
    poll_until(enough, 30, interval=0.005, what="four backoffs")
    assert [d for _, d in delays] == sorted(d for _, d in delays)
    assert delays[-1][1] > delays[0][1]
    _status, now, _ = call(server, "GET", f"/agent/process-status/{doc['slug']}")
    assert now["restarts"] >= 4
    assert call(server, "POST", f"/agent/delete-process/{doc['slug']}", {})[0] == 200


def test_kill9_of_the_child_restarts_it_with_a_new_pid(server, archives):
    doc = create(server, archives, "victim.0", "sleeper")
    first = wait_state(server, doc["slug"], {"running"})
    os.kill(first["pid"], signal.SIGKILL)

    def restarted():
        _status, now, _ = call(server, "GET", f"/agent/process-status/{doc['slug']}")
        return now if now["state"] == "running" and now["pid"] != first["pid"] else None
    second = poll_until(restarted, 10, interval=0.01, what="restarted")
    assert second["restarts"] == 1
    assert second["exit_code"] == -9
    poll_until(lambda: processes_in_group(first["pid"]) == [], 5, what="old group gone")
    assert call(server, "POST", f"/agent/delete-process/{doc['slug']}", {})[0] == 200
    poll_until(lambda: processes_in_group(second["pid"]) == [], 10, what="stopped")


def test_a_virtualenv_is_made_when_the_archive_has_requirements(server, archives):
    doc = create(server, archives, "venv.0", archive="venv.zip")
    seen = set()

    def running():
        _status, now, _ = call(server, "GET", f"/agent/process-status/{doc['slug']}")
        seen.add(now["state"])
        return now if now["state"] == "running" else None
    running = poll_until(running, 60, interval=0.005, what="running")
    assert "processing" in seen, seen
    log = _log(server, running["id"])

    def prefix():
        found = re.search(r"^prefix (\S+)$", Path(log).read_text(), re.MULTILINE)
        return found and found[1]
    venv = poll_until(prefix, 20, what="the program's sys.prefix in its log")
    assert venv == os.path.join(os.path.dirname(log), "venv")
    assert call(server, "POST", f"/agent/delete-process/{doc['slug']}", {})[0] == 200
    poll_until(lambda: not os.path.exists(venv), 10, what="files removed")


def test_delete_during_download_returns_at_once(server, archives):
    doc = create(server, archives, "stall.0", archive="stall/app.zip")
    wait_state(server, doc["slug"], {"downloading"})
    started = time.monotonic()
    status, _, _ = call(server, "POST", f"/agent/delete-process/{doc['slug']}", {})
    assert status == 200
    assert time.monotonic() - started < 2
    assert call(server, "GET", f"/agent/process-status/{doc['slug']}")[0] == 404


def test_a_slow_console_skips_ahead_with_a_marker(server, archives):
    """A console that does not read while the process floods: the process is not held
    back (its whole output is in its log), the console that keeps reading gets every
    line, and the slow one gets a marker saying what it missed, then more lines."""
    doc = create(server, archives, "flood.0", "flood")
    flood = wait_state(server, doc["slug"], {"running"})
    log = _log(server, flood["id"])
    token = server.tokens["alice"]
    slow = RawConsole(doc["attach"], token, count=True, rcvbuf=4096, paused=True)
    try:
        # The upgrade is answered before the console is attached: its first frame (the
        # "waiting for go" line) says it is. Only then may the flood start.
        assert slow.has_data(10), "the console was not attached"
        with open(os.path.join(os.path.dirname(log), "source", "go"), "w"):
            pass
        poll_until(lambda: os.path.getsize(log) >= 400000 * 43, 30, 0.05, "the whole flood")
        slow.go.set()
        poll_until(lambda: slow.markers, 20, 0.02, "the marker")
        assert slow.skipped > 0
        assert slow.lines < 400000
    finally:
        slow.close()
    assert call(server, "POST", f"/agent/delete-process/{doc['slug']}", {})[0] == 200


def _log(server, job_id):
    return os.path.join(os.path.dirname(server.settings), "var", "agent", str(job_id),
                        "output.log")


def test_children_die_with_the_daemon(archives):
    """Graceful stop: every child stopped and waited for. Restart: resumed. kill -9 of
    the daemon: no child left running."""
    work = short_tmpdir()
    daemon = start_agent(work, archives)
    try:
        docs = [create(daemon, archives, f"life.{i}", "sleeper") for i in range(3)]
        pids = [wait_state(daemon, d["slug"], {"running"})["pid"] for d in docs]
        broken = create(daemon, archives, "broken.0", archive="noproc.zip")
        wait_state(daemon, broken["slug"], {"no procfile"})
        result = daemon.cli("zephserver-stop")
        assert result.returncode == 0, result.stderr
        daemon.wait_exit()
        assert all(processes_in_group(pid) == [] for pid in pids)
        daemon.close()
        tokens = daemon.tokens
        daemon = DaemonProcess(daemon.settings, daemon.env).start()
        daemon.tokens = tokens
        again = [wait_state(daemon, d["slug"], {"running"})["pid"] for d in docs]
        assert set(again).isdisjoint(pids)
        assert wait_state(daemon, broken["slug"], {"no procfile"})  # still listed
        daemon.kill(signal.SIGKILL)
        daemon.wait_exit()
        poll_until(lambda: all(processes_in_group(pid) == [] for pid in again), 10,
                   what="every child gone after kill -9 of the daemon")
    finally:
        daemon.close()
        shutil.rmtree(work, ignore_errors=True)


def test_a_restart_limit_makes_the_process_fatal(server, archives):
    doc = create(server, archives, "limited.0", "crash", max_restarts=2)
    fatal = wait_state(server, doc["slug"], {"fatal"})
    assert "restart limit of 2 reached" in fatal["state_reason"]
    assert "exit code 3" in fatal["state_reason"]
    assert fatal["restarts"] == 2
    assert fatal["pid"] is None
    assert call(server, "POST", f"/agent/delete-process/{doc['slug']}", {})[0] == 200


def test_every_phase_of_a_process_is_published_as_job_updated(server, archives):
    """The agent changes its records through the job core's one transition function:
    subscribers of the owner's jobs see each phase, in order."""
    from tests.support.web import Ws

    async def watch():
        ws = await Ws.connect(server.url, token=server.tokens["alice"])
        try:
            await ws.call("jobs.subscribe", {})
            doc = await asyncio.get_running_loop().run_in_executor(
                None, lambda: create(server, archives, "seen.0", "sleeper"))
            phases = []
            while "running" not in phases:
                note = await ws.until("job.updated", timeout=20)
                if note["kind"] == "service" and note["name"] == doc["slug"]:
                    phases.append(note["extra"]["phase"])
            return doc, phases
        finally:
            await ws.aclose()

    doc, phases = run(watch())
    assert phases == ["downloading", "unpacking", "starting", "running"], phases
    assert call(server, "POST", f"/agent/delete-process/{doc['slug']}", {})[0] == 200
