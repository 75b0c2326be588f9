"""The seeds' own clients, with the real shape of their requests: smartmob-agent's
(archives made with ``ZipFile.writestr``, ``X-Request-Id``, Basic credentials), a wslink
launcher file with relative paths and ``fields``, a conduit app module written for a
terminal, and the 2015 Zephserver browser client's wire format."""

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import sys
import zipfile
from pathlib import Path

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.support.archives import ArchiveServer
from tests.support.daemon import REPO, DaemonProcess, child_env, short_tmpdir, write_settings
from tests.support.jobs import kill_jobs_under, processes_in_group
from tests.support.poll import poll_until
from tests.support.sessions import free_port_range, rest
from tests.support.web import close_ws, login, run, start_with_users

pytestmark = pytest.mark.e2e

SH = "/bin/sh"
CONDUIT_MODULE = '''"""A conduit app module as conduit's broker ran it: from a terminal."""
import getpass
import os

from zephserver.launch.broker_helpers import gen_cert


def get_password():
    return getpass.getpass("Password for the session: ")  # a prompt: no terminal here


def gen_config(job):
    assert isinstance(job["job_id"], str) and job["job_id"].startswith("job_")
    assert job["job_root"].endswith("/")
    path = job["job_root"] + job["job_id"] + "_config.txt"
    with open(path, "w") as f:
        f.write("port=" + job["port"] + "\\n")
    os.makedirs("jobs", exist_ok=True)  # relative: lands in the session directory
    with open("jobs/" + job["job_id"] + "_htpasswd", "w") as f:
        f.write("x\\n")
    return path


def get_launch_cmd(job):
    return "/bin/sh -c 'echo ready on \\"$0\\"; exec sleep 600' " + job["port"]
'''
ESCAPING_MODULE = '''from zephserver.launch.broker_helpers import (
    gen_cert, get_launch_cmd, get_password)


def gen_config(job):
    with open(%r, "w") as f:
        f.write("escaped")
    return None
'''
SIMPLE_SERVER = '''import socket, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen()
print("Starting factory", flush=True)
while True:
    conn, _ = s.accept()
    conn.close()
'''
LAUNCHER_FILE = """{
    "configuration": {
        "host": "localhost", "endpoint": "paraview", "timeout": 20,
        "sessionURL": "ws://${host}:${port}/ws",
        "fields": ["file", "updir"],
        "sanitize": {"file": {"type": "inList", "list": ["a.vtk"], "default": "a.vtk"}}
    },
    "sessionData": {"updir": "/Home"},
    "resources": [{"host": "localhost", "port_range": [%(low)d, %(high)d]}],
    "properties": {"python_exec": "%(python)s"},
    "apps": {
        "simple": {
            "cmd": ["${python_exec}", "server/simple.py", "--port", "${port}",
                    "--authKey", "${secret}"],
            "ready_line": "Starting factory"
        }
    }
}
"""


@pytest.fixture(scope="module")
def site():
    """A daemon with the agent, a conduit-style module app, and a file server."""
    work = short_tmpdir("zs")
    (work / "files").mkdir()
    (work / "mods").mkdir()
    (work / "mods" / "terminal_module.py").write_text(CONDUIT_MODULE)
    escape_target = work / "escaped.txt"
    (work / "mods" / "escaping_module.py").write_text(ESCAPING_MODULE % str(escape_target))
    files = ArchiveServer(work / "files")
    files.root = work / "files"
    low, high = free_port_range(4, 23000)
    env = child_env()
    env["PYTHONPATH"] = str(work / "mods") + os.pathsep + env["PYTHONPATH"]
    apps = {
        "conduit": {"kind": "session", "module": "terminal_module", "argv": [SH],
                    "ready_line": "ready on", "protocol": "wss", "grace": 1,
                    "port_range": [low, low + 1], "resources": {"cores": 0}},
        "escaping": {"kind": "session", "module": "escaping_module",
                     "argv": [SH, "-c", "echo ready; exec sleep 600"], "ready_line": "ready",
                     "grace": 1, "port_range": [low + 2, high], "resources": {"cores": 0}},
    }
    path = write_settings(work, APPS=apps, AGENT_FILE_ROOTS=[str(work / "files")],
                          DJANGO_SETTINGS_MODULE="tests.support.django_test_settings",
                          AGENT_BACKOFF_INITIAL=0.05, AGENT_GRACE=2.0,
                          LEGACY_WS_PATH="/zephws", AGENT_ALLOW=None)
    daemon = start_with_users(path, env)
    daemon.work, daemon.files, daemon.escape_target = work, files, escape_target
    yield daemon
    daemon.cli("zephserver-stop")
    daemon.close()
    files.close()
    kill_jobs_under(work)
    print(daemon.output[-4000:])
    shutil.rmtree(work, ignore_errors=True)


def smartmob_archive(site, name, entries):
    """An archive as smartmob-agent's own tests make one: ZipFile.writestr(name, text)."""
    with zipfile.ZipFile(site.files.root / name, "w") as archive:
        for entry, text in entries.items():
            archive.writestr(entry, text)
    return f"{site.files.url}/{name}"


def agent(site, method, path, body=None, who="alice", headers=None):
    return rest(method, site.url + "/agent" + path, site.tokens.get(who), body,
                headers=headers)


def create(site, node, url, process_type="web", headers=None):
    status, doc, response_headers = agent(site, "POST", "/create-process", {
        "app": "foo", "node": node, "source_url": url, "process_type": process_type},
        headers=headers)
    assert status == 201, doc
    return doc, response_headers


def wait_state(site, slug, done, who="alice"):
    def probe():
        status, doc, _ = agent(site, "GET", f"/process-status/{slug}", who=who)
        return doc if status == 200 and doc["state"] in done else None
    return poll_until(probe, 60, interval=0.02, what=f"{slug} in {done}")


@pytest.mark.parametrize(("entries", "process_type", "final"), [
    ({"Procfile": "web: exec sleep 600"}, "web", "running"),
    ({"requirements.txt": "# nothing\n"}, "web", "no procfile"),
    ({"Procfile": "web: exec sleep 600"}, "invalid", "unknown process type"),
    ({"Procfile": "web: exec sleep 600", "requirements.txt": "not!! a requirement\n"},
     "web", "pip install failure"),
])
def test_smartmob_archives_made_with_writestr(site, entries, process_type, final):
    name = final.replace(" ", "-")
    url = smartmob_archive(site, f"{name}.zip", entries)
    doc, _ = create(site, f"{name}.0", url, process_type)
    assert doc["state"] == "pending"
    done = wait_state(site, doc["slug"], {final, "running", "no procfile",
                                          "unknown process type", "pip install failure",
                                          "unpack failure"})
    assert done["state"] == final, done
    status, deleted, _ = rest("POST", doc["delete"], site.tokens["alice"], {})
    assert (status, deleted) == (200, {})


def test_x_request_id_is_echoed_generated_and_sent_with_the_download(site):
    url = smartmob_archive(site, "rid.zip", {"Procfile": "web: exec sleep 600"})
    doc, headers = create(site, "rid.0", url, headers={"X-Request-Id": "deploy-42"})
    assert headers["X-Request-Id"] == "deploy-42"
    poll_until(lambda: any(p == "/rid.zip" for p, _ in site.files.requests), 10,
               what="the download")
    sent = [h for p, h in site.files.requests if p == "/rid.zip"]
    assert sent[-1].get("X-Request-Id") == "deploy-42"
    # without one (and on errors, and on every endpoint): a new id each time
    ids = set()
    for method, path in [("GET", "/"), ("GET", "/list-processes"),
                         ("GET", "/process-status/nope"), ("POST", "/delete-process/nope")]:
        status, _, headers = agent(site, method, path, {} if method == "POST" else None)
        assert headers.get("X-Request-Id"), (path, status, headers)
        ids.add(headers["X-Request-Id"])
    assert len(ids) == 4
    status, _, headers = rest("GET", site.url + "/agent/list-processes")  # no credentials
    assert status == 401
    assert headers.get("X-Request-Id")
    # an id that is not a plain token (or too long) is replaced, never echoed
    for hostile in ("<script>alert(1)</script>", "x" * 200):
        _, _, headers = agent(site, "GET", "/", headers={"X-Request-Id": hostile})
        assert headers["X-Request-Id"] not in (hostile, "")

    async def upgrade():
        conn = await websocket_connect(HTTPRequest(
            site.url.replace("http", "ws", 1) + f"/agent/attach-console/{doc['slug']}",
            headers={"Authorization": f"Bearer {site.tokens['alice']}",
                     "X-Request-Id": "console-7"}))
        await close_ws(conn)
        return conn.headers.get("X-Request-Id")
    wait_state(site, doc["slug"], {"running"})
    assert run(upgrade()) == "console-7"
    rest("POST", doc["delete"], site.tokens["alice"], {})


def basic(user, token):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


def test_basic_credentials_carry_a_token_as_the_password(site):
    token = site.tokens["alice"]
    status, listing, _ = rest("GET", site.url + "/agent/list-processes",
                              headers=basic("alice", token))
    assert status == 200, listing
    status, answer, _ = rest("GET", site.url + "/agent/list-processes",
                             headers=basic("bob", token))
    assert status == 401
    assert "owner" in answer["error"]
    status, answer, _ = rest("GET", site.url + "/agent/list-processes",
                             headers=basic("alice", "zt_not-a-token"))
    assert status == 401
    status, answer, _ = rest("GET", site.url + "/paraview/12345", headers=basic("alice", token))
    assert status == 404, answer  # authenticated: the session is unknown
    status, answer, _ = rest("GET", site.url + "/paraview/12345")
    assert status == 401
    # a browser could send Basic on its own, as a cookie: a foreign page is refused
    status, answer, _ = rest("GET", site.url + "/agent/list-processes",
                             headers={**basic("alice", token), "Origin": "http://evil.test"})
    assert status == 403


class Restartable:
    """A daemon of a test's own (restarting the module's would disturb the others)."""

    def __init__(self, site):
        self.work = short_tmpdir("zk")
        path = write_settings(self.work, AGENT_FILE_ROOTS=[str(site.files.root)],
                              DJANGO_SETTINGS_MODULE="tests.support.django_test_settings",
                              AGENT_BACKOFF_INITIAL=0.05, AGENT_ALLOW=None)
        self.daemon = start_with_users(path, child_env())

    def restart(self, kill: bool) -> None:
        old = self.daemon
        if kill:
            old.kill(signal.SIGKILL)
        else:
            assert old.cli("zephserver-stop").returncode == 0
        old.wait_exit()
        old.close()
        self.daemon = DaemonProcess(old.settings, old.env).start()
        self.daemon.tokens = old.tokens

    def close(self) -> None:
        self.daemon.cli("zephserver-stop")
        self.daemon.close()
        kill_jobs_under(self.work)
        shutil.rmtree(self.work, ignore_errors=True)


@contextlib.contextmanager
def own_daemon(site):
    own = Restartable(site)
    try:
        yield own
    finally:
        own.close()


def test_a_process_deleted_in_a_failure_state_stays_deleted(site):
    url = smartmob_archive(site, "noproc.zip", {"README": "no Procfile"})
    with own_daemon(site) as own:
        doc, _ = create(own.daemon, "gone.0", url)
        wait_state(own.daemon, doc["slug"], {"no procfile"})
        assert rest("POST", doc["delete"], own.daemon.tokens["alice"], {})[0] == 200
        for kill in (False, True):
            own.restart(kill)
            status, listing, _ = agent(own.daemon, "GET", "/list-processes")
            assert (status, listing) == (200, {"processes": []})
            assert agent(own.daemon, "GET", f"/process-status/{doc['slug']}")[0] == 404


@pytest.mark.timeout(300)
def test_a_running_process_comes_back_after_every_kill9(site):
    """The job manager once marked the agent's records LOST at start (a race with the
    agent's own resume): 20 kill -9 and restarts, the process is back each time."""
    url = smartmob_archive(site, "sleeper.zip", {"Procfile": "web: exec sleep 600"})
    with own_daemon(site) as own:
        doc, _ = create(own.daemon, "back.0", url)
        pid = wait_state(own.daemon, doc["slug"], {"running"})["pid"]
        for i in range(20):
            own.restart(kill=True)
            poll_until(lambda p=pid: processes_in_group(p) == [], 10,
                       what="the child killed with the daemon")
            listed = agent(own.daemon, "GET", "/list-processes")[1]["processes"]
            assert [p["slug"] for p in listed] == [doc["slug"]], (i, listed)
            now = wait_state(own.daemon, doc["slug"], {"running"})
            assert now["pid"] != pid, i
            pid = now["pid"]


def session_post(site, body):
    return rest("POST", site.url + "/paraview", site.tokens["alice"], body)


def test_a_conduit_module_written_for_a_terminal(site):
    status, body, _ = session_post(site, {"application": "conduit"})
    assert status == 200, body
    job = body["job"]
    assert job["job_id"] == f"job_{body['id']}"
    assert job["job_root"].endswith("/")
    assert job["port"] == str(body["port"])
    root = job["job_root"]
    assert job["config"] == f"{root}job_{body['id']}_config.txt"
    assert Path(job["config"]).read_text() == f"port={body['port']}\n"
    assert os.path.exists(f"{root}jobs/job_{body['id']}_htpasswd")  # relative: inside
    assert not (REPO / "jobs").exists()  # (where the daemon runs)
    assert body["secret"]  # the prompt failed: the generated secret stands in
    from zephserver.launch.broker import verify_password
    assert verify_password(body["secret"], job["password_hash"])
    log = Path(root, "output.log").read_text()
    assert f"ready on {body['port']}" in log  # the string command, split into argv
    assert "get_password failed" in site.output
    assert rest("DELETE", f"{site.url}/paraview/{body['id']}", site.tokens["alice"])[0] == 200


def test_a_module_writing_outside_its_session_directory_is_refused(site):
    status, body, _ = session_post(site, {"application": "escaping"})
    assert status == 503, body
    assert "outside the session directory" in body["error"]
    assert not site.escape_target.exists()


def test_a_wslink_launcher_file_with_relative_paths_and_fields():
    work = short_tmpdir("zw")
    launcher_dir = work / "examples" / "simple"
    (launcher_dir / "server").mkdir(parents=True)
    (launcher_dir / "server" / "simple.py").write_text(SIMPLE_SERVER)
    low, high = free_port_range(2, 24000)
    (launcher_dir / "launcher.config").write_text(LAUNCHER_FILE % {
        "low": low, "high": high, "python": sys.executable})
    path = write_settings(work, APPS={}, LAUNCHER_CONFIG=str(launcher_dir / "launcher.config"),
                          DJANGO_SETTINGS_MODULE="tests.support.django_test_settings")
    daemon = start_with_users(path, child_env())
    try:
        assert f"they run in the launcher file's directory {launcher_dir}" in daemon.output
        status, body, _ = rest("POST", daemon.url + "/paraview", daemon.tokens["alice"],
                               {"application": "simple", "file": "a.vtk"})
        assert status == 200, body
        assert set(body) == {"id", "sessionURL", "secret", "file", "updir"}
        assert body["sessionURL"].startswith(f"ws://localhost:{low}")
        status, again, _ = rest("GET", f"{daemon.url}/paraview/{body['id']}",
                                daemon.tokens["alice"])
        assert (status, again) == (200, body)
        assert rest("DELETE", f"{daemon.url}/paraview/{body['id']}",
                    daemon.tokens["alice"])[0] == 200
    finally:
        daemon.cli("zephserver-stop")
        daemon.close()
        kill_jobs_under(work)
        shutil.rmtree(work, ignore_errors=True)


# --- the 2015 Zephserver client ------------------------------------------------------------


async def legacy_client(site, session_id, frames, expect, cookie=None):
    """Speak zephclient.js's wire format: a join frame, then ``frames`` (task frames, or
    raw text); read back until a frame of each task in ``expect`` has come."""
    headers = {"Cookie": f"sessionid={cookie}"} if cookie else {}
    conn = await websocket_connect(HTTPRequest(
        site.url.replace("http", "ws", 1) + "/zephws", headers=headers))
    got: dict = {}
    try:
        await conn.write_message(json.dumps({"session_id": session_id, "room": "/page/1"}))
        for frame in frames:
            await conn.write_message(frame if isinstance(frame, str) else json.dumps(
                {**frame, "room": "/page/1", "session_id": session_id,
                 "date": 1430000000000}))
        while not set(expect) <= set(got):
            text = await asyncio.wait_for(conn.read_message(), 10)
            assert text is not None, got
            frame = json.loads(text)
            got.setdefault(frame["task"], []).append(frame)
    finally:
        await close_ws(conn)
    return got


def test_the_2015_client_wire_format(site):
    session = login(site.url, "alice", "alice-pw-123")
    got = run(legacy_client(site, session, [
        {"task": "ping", "data": {}},
        {"task": "whoami", "data": {}},
        {"task": "room.say", "data": {"room": "/page/1", "message": "hello"}},
        {"task": "no.such.task", "data": {}},
        {"task": "jobs.get", "data": {"id": "x"}},
    ], {"room.join", "ping", "whoami", "room.message", "room.say", "no.such.task",
        "jobs.get"}))
    assert got["room.join"][0]["data"]["room"] == "/page/1"
    assert "alice" in got["room.join"][0]["data"]["users"]
    assert "data" in got["ping"][0]
    assert got["whoami"][0]["data"]["username"] == "alice"
    assert got["room.message"][0]["data"]["message"] == "hello"  # a push, as a frame
    assert got["room.say"][0]["data"]["delivered"] == 1
    assert got["no.such.task"][0]["error"]["code"] == -32601
    assert got["jobs.get"][0]["error"]["code"] == -32602
    assert all(f["room"] == "/page/1" for task in ("ping", "whoami", "jobs.get")
               for f in got[task])


def test_the_2015_client_authenticates_by_its_session_id(site):
    got = run(legacy_client(site, "not-a-session", [{"task": "whoami", "data": {}}],
                            {"room.join", "whoami"}))
    assert got["room.join"][0]["error"]["code"] == -32001
    assert got["whoami"][0]["error"]["code"] == -32001
    # no session_id in the frames: the login cookie stands in, as on /ws
    session = login(site.url, "bob", "bob-pw-123")
    got = run(legacy_client(site, "", [{"task": "whoami", "data": {}}, "not json"],
                            {"room.join", "whoami", None}, cookie=session))
    assert got["whoami"][0]["data"]["username"] == "bob"
    assert got[None][0]["error"]["code"] == -32700
