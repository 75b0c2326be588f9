"""Interactive sessions end to end: the launcher REST API (ParaViewWeb/wslink compatible),
sessions.* over /ws, ports, readiness, the proxy map and the broker's job object."""

import asyncio
import json
import os
import shutil
import stat
import sys
import threading
import time
from pathlib import Path

import pytest
from tornado.websocket import websocket_connect

from tests.support.daemon import child_env, short_tmpdir, write_settings
from tests.support.jobs import is_zombie_or_gone, kill_jobs_under
from tests.support.poll import poll_until
from tests.support.sessions import free_port_range, listening, rest
from tests.support.web import Ws, close_ws, login, run, start_with_users
from zephserver.launch.broker import verify_password
from zephserver.launch.ports import bind_free

pytestmark = pytest.mark.e2e

SH = "/bin/sh"


def session_apps(work, ranges):
    """Session apps of the tests; ``ranges`` maps app name -> (low, high)."""
    def ports(name):
        low, high = ranges[name]
        return {"port_range": [low, high]}

    return {
        "echo": {"kind": "session", "argv": ["$python", "-u", "-m",
                                             "zephserver.examples.echo_session", "--port",
                                             "$port"],
                 "env": {"ZEPH_SESSION_SECRET": "$secret"}, "ready_line": "Starting factory",
                 "timeout": 20, "resources": {"cores": 0}, "grace": 2, **ports("echo")},
        "quick": {"kind": "session", "argv": [SH, "-c", "echo ready $port; exec sleep 600"],
                  "ready_line": "ready", "resources": {"cores": 0}, "grace": 1,
                  **ports("quick")},
        "tight": {"kind": "session", "argv": [SH, "-c", "echo ready; exec sleep 600"],
                  "ready_line": "ready", "resources": {"cores": 0}, "grace": 1,
                  **ports("tight")},
        "pair": {"kind": "session", "argv": [SH, "-c", "echo ready; exec sleep 600"],
                 "ready_line": "ready", "resources": {"cores": 0}, "grace": 1,
                 **ports("pair")},
        "dies": {"kind": "session", "argv": [SH, "-c", "echo boom: no licence >&2; exit 3"],
                 "ready_line": "ready", "timeout": 20, "resources": {"cores": 0},
                 **ports("dies")},
        "slow": {"kind": "session", "argv": [SH, "-c", "echo warming up; exec sleep 600"],
                 "ready_line": "never printed", "timeout": 3, "grace": 1,
                 "resources": {"cores": 0}, **ports("slow")},
        "silent": {"kind": "session", "argv": [SH, "-c", "echo warming up; exec sleep 600"],
                   "ready_line": "never printed", "timeout": 1.5, "grace": 1,
                   "resources": {"cores": 0}, **ports("silent")},
        "web": {"kind": "session", "argv": ["$python", "-m", "http.server", "--bind",
                                            "127.0.0.1", "$port"],
                "session_url": "http://$host:$port/", "timeout": 20, "grace": 1,
                "resources": {"cores": 0}, **ports("web")},
        "viewer": {"kind": "session",
                   "argv": [SH, "-c", 'echo "ready $$1 $$2"; exec sleep 600', "viewer", "$file",
                            "$tag"],
                   "params": {"file": {"type": "str", "inList": ["a.vtk", "b.vtk"],
                                       "default": "a.vtk"},
                              "tag": {"type": "str", "regexp": "[a-z]{1,8}", "default": "x"}},
                   "vars": {"data": "/srv/data"}, "ready_line": "ready",
                   "session_data": {"file": "$file"}, "fields": ["file", "tag"],
                   "resources": {"cores": 0}, "grace": 1, **ports("viewer")},
        "conduit": {"kind": "session", "module": "zephserver.examples.conduit_module",
                    "argv": [SH, "-c", "echo ready; exec sleep 600"], "ready_line": "ready",
                    "protocol": "wss", "session_url": "wss://$host:$port/", "grace": 1,
                    "resources": {"cores": 0}, **ports("conduit")},
        "idle": {"kind": "session", "argv": [SH, "-c", "echo ready; exec sleep 600"],
                 "ready_line": "ready", "idle_timeout": 1, "grace": 1,
                 "resources": {"cores": 0}, **ports("idle")},
        "old": {"kind": "session", "argv": [SH, "-c", "echo ready; exec sleep 600"],
                "ready_line": "ready", "max_age": 1, "grace": 1,
                "resources": {"cores": 0}, **ports("old")},
        "batch": {"argv": [SH, "-c", "true"]},
    }


SIZES = {"echo": 3, "quick": 60, "tight": 1, "pair": 2, "dies": 1, "silent": 1, "slow": 16,
         "web": 2,
         "viewer": 2, "conduit": 2, "idle": 1,
         "old": 1}


def allocate_ranges():
    ranges, start = {}, 21000
    for name, size in SIZES.items():
        low, high = free_port_range(size, start)
        ranges[name] = (low, high)
        start = high + 1
    return ranges


def start_server(work, apps=None, **settings):
    env = child_env()
    ranges = allocate_ranges()
    values = {"APPS": apps if apps is not None else session_apps(work, ranges),
              "DJANGO_SETTINGS_MODULE": "tests.support.django_test_settings",
              "LAUNCHER_PROXY_FILE": str(work / "proxy.map"), **settings}
    path = write_settings(work, **values)
    daemon = start_with_users(path, env)
    daemon.work, daemon.ranges = work, ranges
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


def post(server, body, who="alice", **kw):
    return rest("POST", server.url + "/paraview", server.tokens.get(who), body, **kw)


def delete(server, session_id, who="alice"):
    return rest("DELETE", f"{server.url}/paraview/{session_id}", server.tokens.get(who))


def get(server, session_id, who="alice"):
    return rest("GET", f"{server.url}/paraview/{session_id}", server.tokens.get(who))


def proxy_lines(server):
    try:
        return (server.work / "proxy.map").read_text().splitlines()
    except FileNotFoundError:
        return []


def stop_and_wait_free(server, body, who="alice"):
    status, _, _ = delete(server, body["id"], who)
    assert status == 200
    poll_until(lambda: bind_free(body["port"]) and is_zombie_or_gone(body["job"]["pid"]),
               10, what=f"session {body['id']} gone and port {body['port']} free")


def stop_filtered(server, session_id):
    """Stop a session of an app with ``fields`` (its REST answers show no port or job:
    JSON-RPC's sessions.get does)."""
    ok, full, _ = _rpc(server, "sessions.get", {"id": int(session_id)})
    assert ok
    assert full["state"] == "RUNNING"
    stop_and_wait_free(server, {**full, "port": int(full["job"]["port"])})


def test_wslink_client_flow(server):
    """POST the config object, read sessionURL and secret, connect to the launched app
    through that URL, GET it again, DELETE it: process gone, port and proxy entry freed."""
    config = {"sessionManagerURL": server.url + "/paraview", "application": "echo"}
    status, body, _ = post(server, config)
    assert status == 200, body
    assert body["sessionManagerURL"] == config["sessionManagerURL"]
    assert body["application"] == "echo"
    assert body["state"] == "RUNNING"
    assert body["id"].isdigit()
    assert len(body["secret"]) >= 20
    low, high = server.ranges["echo"]
    assert low <= body["port"] <= high
    assert body["sessionURL"] == f"ws://localhost:{body['port']}/ws"
    assert f"{body['id']} localhost:{body['port']}" in proxy_lines(server)
    mode = stat.S_IMODE(os.stat(server.work / "proxy.map").st_mode)
    assert mode == 0o644

    async def talk():
        conn = await websocket_connect(body["sessionURL"].replace("localhost", "127.0.0.1"))
        await conn.write_message(body["secret"])
        welcome = await asyncio.wait_for(conn.read_message(), 10)
        await conn.write_message("hi")
        echoed = await asyncio.wait_for(conn.read_message(), 10)
        await close_ws(conn)
        return welcome, echoed

    assert run(talk()) == ("welcome", "echo: hi")
    status, again, _ = get(server, body["id"])
    assert status == 200
    assert {k: again[k] for k in ("id", "sessionURL", "secret", "port")} == \
        {k: body[k] for k in ("id", "sessionURL", "secret", "port")}
    status, gone, _ = delete(server, body["id"])
    assert status == 200
    assert "secret" not in gone
    assert gone["job"]["password_hash"] is None
    poll_until(lambda: is_zombie_or_gone(body["job"]["pid"]), 10, what="process gone")
    poll_until(lambda: bind_free(body["port"]), 10, what="port free")
    poll_until(lambda: not any(line.startswith(f"{body['id']} ")
                               for line in proxy_lines(server)), 10, what="proxy entry gone")
    assert delete(server, body["id"])[0] == 404
    assert get(server, body["id"])[0] == 404


def test_bad_requests_are_refused_with_the_reason(server):
    cases = [
        ({}, 400, "application"),
        ({"application": "nope"}, 400, "unknown app"),
        ({"application": "batch"}, 400, "not a session app"),
        ({"application": "viewer", "port": 80}, 400, "set by the server"),
        ({"application": "viewer", "secret": "mine"}, 400, "set by the server"),
        ({"application": "viewer", "data": "/etc"}, 400, "set by the server"),
        ({"application": "viewer", "cmd": ["/bin/rm", "-rf", "/"]}, 400, "not a parameter"),
        ({"application": "viewer", "file": "../../etc/passwd"}, 400, "must be one of"),
        ({"application": "viewer", "tag": "x; rm -rf /"}, 400, "does not match"),
        ({"application": "viewer", "queue": "yes"}, 400, "queue"),
    ]
    for body, code, words in cases:
        status, answer, _ = post(server, body)
        assert status == code, (body, answer)
        assert words in answer["error"], (body, answer)
    status, answer, _ = post(server, b"{not json")
    assert (status, answer["error"]) == (400, "request body must be JSON")
    status, answer, _ = rest("POST", server.url + "/paraview", None, {"application": "quick"})
    assert status == 401
    assert "authentication required" in answer["error"]
    status, answer, _ = rest("POST", server.url + "/paraview", "forged-token",
                             {"application": "quick"})
    assert status == 401
    # a browser's cookie from another site's page: refused, nothing started
    cookie = login(server.url, "alice", "alice-pw-123")
    status, answer, _ = rest("POST", server.url + "/paraview", None, {"application": "quick"},
                             headers={"Cookie": f"sessionid={cookie}",
                                      "Origin": "http://evil.example"})
    assert status == 403
    assert "origin" in answer["error"]
    status, body, _ = rest("POST", server.url + "/paraview", None, {"application": "viewer"},
                           headers={"Cookie": f"sessionid={cookie}"})
    assert status == 200, body
    # a sanitized value reaches argv, one element, and is echoed; as in wslink, the app's
    # fields and what wslink always returns are all the answer shows ("tag" is a
    # default: substituted, not echoed as if posted)
    assert set(body) == {"id", "sessionURL", "file"}
    assert set(get(server, body["id"])[1]) == {"id", "sessionURL", "file"}
    stop_filtered(server, body["id"])


def test_sanitized_values_reach_argv_and_session_data(server):
    status, body, _ = post(server, {"application": "viewer", "file": "b.vtk", "tag": "abc"})
    assert status == 200, body
    assert body["file"] == "b.vtk"
    assert body["tag"] == "abc"
    out = run(_output(server, int(body["id"])))
    assert "ready b.vtk abc" in out
    stop_filtered(server, body["id"])


async def _output(server, job_id, who="alice"):
    ws = await Ws.connect(server.url, token=server.tokens[who])
    try:
        return (await ws.call("jobs.output", {"id": job_id}))["result"]["data"]
    finally:
        await ws.aclose()


def test_a_process_that_exits_at_once_is_reported_at_once(server):
    started = time.monotonic()
    status, body, headers = post(server, {"application": "dies"})
    elapsed = time.monotonic() - started
    assert status == 503, body
    assert elapsed < 5, elapsed  # the app's timeout is 20 s
    assert "exited before it was ready" in body["error"]
    assert "exit code 3" in body["error"]
    assert "boom: no licence" in body["log_tail"]
    assert headers["Retry-After"] == "5"
    low, _ = server.ranges["dies"]
    poll_until(lambda: bind_free(low), 5, what="port free")
    # and the port is handed out again
    status, body, _ = post(server, {"application": "dies"})
    assert status == 503
    assert "exit code 3" in body["error"]


def test_a_ready_line_never_printed_is_503_after_the_timeout(server):
    started = time.monotonic()
    status, body, _ = post(server, {"application": "silent"})
    elapsed = time.monotonic() - started
    assert status == 503, body
    assert 1.4 <= elapsed < 8, elapsed
    assert "not ready within 1.5s" in body["error"]
    assert "warming up" in body["log_tail"]
    low, _ = server.ranges["silent"]
    assert bind_free(low)
    status, listing, _ = _rpc(server, "jobs.list", {"app": "silent", "limit": 1})
    job = listing["jobs"][0]
    assert job["state"] == "FAILED"
    assert is_zombie_or_gone(job["pid"])


def _rpc(server, method, params, who="alice"):
    async def call():
        ws = await Ws.connect(server.url, token=server.tokens[who])
        try:
            return await ws.call(method, params)
        finally:
            await ws.aclose()
    answer = run(call())
    return ("error" not in answer), answer.get("result"), answer.get("error")


def test_all_ports_taken_is_503_or_queued(server):
    status, first, _ = post(server, {"application": "tight"})
    assert status == 200, first
    status, refused, headers = post(server, {"application": "tight"})
    assert status == 503, refused
    assert "no free port" in refused["error"]
    assert headers["Retry-After"] == "5"
    status, queued, _ = post(server, {"application": "tight", "queue": True})
    assert status == 200, queued
    assert (queued["state"], queued["position"]) == ("QUEUED", 0)
    assert "no free port" in queued["state_reason"]
    stop_and_wait_free(server, first)

    def running():
        _status, body, _ = get(server, queued["id"])
        return body if body.get("state") == "RUNNING" else None
    started = poll_until(running, 10, what="queued session running")
    assert started["port"] == first["port"]
    assert "secret" not in started  # the app does not use one
    stop_and_wait_free(server, started)


def test_a_port_bound_by_another_program_is_never_handed_out(server):
    low, high = server.ranges["pair"]
    other = listening(low)
    try:
        status, body, _ = post(server, {"application": "pair"})
        assert status == 200, body
        assert body["port"] == high
        status, refused, _ = post(server, {"application": "pair"})
        assert status == 503, refused
        assert "no free port" in refused["error"]
    finally:
        other.close()
    stop_and_wait_free(server, body)


def test_two_concurrent_posts_for_the_last_port(server):
    results = []
    barrier = threading.Barrier(2)

    def one():
        barrier.wait()
        results.append(post(server, {"application": "tight"}))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    codes = sorted(status for status, _, _ in results)
    assert codes == [200, 503], results
    winner = next(body for status, body, _ in results if status == 200)
    stop_and_wait_free(server, winner)


def test_other_users_cannot_see_or_stop_a_session(server):
    status, body, _ = post(server, {"application": "quick"})
    assert status == 200
    # another user's session is answered as one that does not exist
    assert get(server, body["id"], "bob")[:2] == (404, {"error": f"no session {body['id']}",
                                                       "field": "id"})
    assert delete(server, body["id"], "bob")[0] == 404
    status, seen, _ = get(server, body["id"], "boss")  # staff: sees it, not its secret
    assert status == 200
    assert "secret" not in seen
    assert seen["job"]["password_hash"] is None
    assert get(server, "999999")[0] == 404
    assert get(server, "not-an-id")[0] == 404
    stop_and_wait_free(server, body)


def test_an_app_without_ready_line_is_ready_when_its_port_accepts(server):
    status, body, _ = post(server, {"application": "web"})
    assert status == 200, body
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{body['port']}/", timeout=10) as resp:
        page = resp.read()
    assert b"Directory listing" in page
    stop_and_wait_free(server, body)


def test_broker_module_config_certificate_and_job_object(server):
    status, body, _ = post(server, {"application": "conduit"})
    assert status == 200, body
    job = body["job"]
    assert set(job) >= {"job_root", "app", "job_id", "port", "creation_timestamp", "config",
                        "app_path", "status", "password_hash", "hash_algorithm", "pid",
                        "owner", "protocol", "host"}
    assert (job["app"], job["status"], job["owner"], job["protocol"], job["app_path"]) == \
        ("conduit", "running", "alice", "wss", SH)
    assert verify_password(body["secret"], job["password_hash"])
    assert job["hash_algorithm"] == "scrypt"
    assert job["password_hash"].startswith("scrypt$")
    config = json.loads(Path(job["config"]).read_text())
    assert config["port"] == job["port"]
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    for path in (job["cert"]["cert"], job["cert"]["key"], job["config"]):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        assert os.path.join(os.path.dirname(path), "") == job["job_root"]
    cert = x509.load_pem_x509_certificate(Path(job["cert"]["cert"]).read_bytes())
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    ok, rpc_view, _ = _rpc(server, "sessions.get", {"id": int(body["id"])})
    assert ok
    assert rpc_view["job"] == job
    stop_and_wait_free(server, body)


def test_sessions_slow_to_be_ready_hold_no_task_thread(server):
    """Sixteen sessions.start calls for sessions slow to be ready (3 s each; twice as
    many as there are task threads) all wait at once, holding no task thread: they are
    all answered about 3 s later (threads held, they would take turns: 25 s here), and
    another user's ping is as fast as ever meanwhile."""
    async def scenario():
        alice = await Ws.connect(server.url, token=server.tokens["alice"])
        bob = await Ws.connect(server.url, token=server.tokens["bob"])
        try:
            sent = time.perf_counter()
            for i in range(16):
                await alice.send({"jsonrpc": "2.0", "id": f"s{i}", "method": "sessions.start",
                                  "params": {"application": "slow"}})
            started = time.perf_counter()
            pong = await bob.call("ping")
            took = time.perf_counter() - started
            replies = [await alice.recv(timeout=30) for _ in range(16)]
            return pong, took, replies, time.perf_counter() - sent
        finally:
            await alice.aclose()
            await bob.aclose()

    pong, took, replies, all_answered = run(scenario())
    assert pong["result"] == "pong"
    assert took < 1.0, took
    assert sorted(r["id"] for r in replies) == sorted(f"s{i}" for i in range(16))
    assert all(r["error"]["code"] == -32003 for r in replies), replies
    assert all_answered < 10.0, all_answered


def test_sessions_over_jsonrpc_with_updates(server):
    async def scenario():
        ws = await Ws.connect(server.url, token=server.tokens["alice"])
        await ws.call("jobs.subscribe", {})
        started = await ws.call("sessions.start", {"application": "quick"}, timeout=30)
        session = started["result"]
        listed = (await ws.call("sessions.list", {}))["result"]
        stopped = (await ws.call("sessions.stop", {"id": session["id"]}))["result"]
        states = []
        while not states or states[-1] not in ("CANCELLED",):
            note = await ws.until("session.updated")
            if note["id"] == session["id"]:
                states.append(note["state"])
        bad = await ws.call("sessions.start", {"application": "quick", "port": 1})
        refused = await ws.call("sessions.list", {"all": True})
        await ws.aclose()
        return session, listed, stopped, states, bad, refused

    session, listed, stopped, states, bad, refused = run(scenario())
    assert session["state"] == "RUNNING"
    assert session["id"] in [s["id"] for s in listed]
    assert stopped["id"] == session["id"]
    assert "secret" not in stopped
    assert states[-1] == "CANCELLED"
    assert bad["error"]["code"] == -32602
    assert bad["error"]["data"]["field"] == "port"
    assert refused["error"]["code"] == -32002
    poll_until(lambda: bind_free(session["port"]), 10, what="port free")


@pytest.mark.parametrize(("app", "reason"), [
    ("idle", "no connection for 1s"),
    ("old", "older than its max age of 1s"),
])
def test_an_idle_or_old_session_is_stopped(server, app, reason):
    status, body, _ = post(server, {"application": app})
    assert status == 200

    def ended():
        _, job, _ = _rpc(server, "jobs.get", {"id": int(body["id"])})
        return job if job["state"] == "TIMED_OUT" else None
    job = poll_until(ended, 15, interval=0.2, what=f"{app} session stopped")
    assert reason in job["state_reason"]
    poll_until(lambda: bind_free(body["port"]), 10, what="port free")


def test_zephserver_client_query(server):
    status, body, _ = post(server, {"application": "quick"})
    assert status == 200
    env = child_env(ZEPHSERVER_TOKEN=server.tokens["alice"])
    import subprocess
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "zephserver-client"),
                          "--url", server.url, "query", "--json"], capture_output=True,
                         text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    mine = next(s for s in listed if s["id"] == body["id"])
    assert (mine["url"], mine["port"], mine["protocol"]) == (body["sessionURL"], body["port"],
                                                             "ws")
    text = subprocess.run([os.path.join(os.path.dirname(sys.executable), "zephserver-client"),
                           "--url", server.url, "query"], capture_output=True, text=True,
                          env=env, timeout=30)
    assert text.returncode == 0
    assert body["sessionURL"] in text.stdout
    none = subprocess.run([os.path.join(os.path.dirname(sys.executable), "zephserver-client"),
                           "--url", server.url, "query"], capture_output=True, text=True,
                          env=child_env(ZEPHSERVER_TOKEN="forged"), timeout=30)
    assert none.returncode != 0
    assert "token" in none.stderr
    stop_and_wait_free(server, body)


def test_zephserver_client_tries_each_node_until_one_answers(server):
    """Several --url (a cluster's nodes): a node that is down is passed over; when none
    answers, the error names every one tried."""
    import subprocess

    down = f"http://127.0.0.1:{free_port_range(1, 28000)[0]}"
    client = os.path.join(os.path.dirname(sys.executable), "zephserver-client")
    env = child_env(ZEPHSERVER_TOKEN=server.tokens["alice"])
    found = subprocess.run([client, "--url", down, "--url", server.url, "query", "--json"],
                           capture_output=True, text=True, env=env, timeout=30)
    assert found.returncode == 0, found.stderr
    assert isinstance(json.loads(found.stdout), list)
    listed = subprocess.run([client, "query"], capture_output=True, text=True, timeout=30,
                            env={**env, "ZEPHSERVER_URL": f"{down},{server.url}"})
    assert listed.returncode == 0, listed.stderr
    nobody = subprocess.run([client, "--url", down, "--url", down + "/", "query"],
                            capture_output=True, text=True, env=env, timeout=30)
    assert nobody.returncode == 1
    assert nobody.stderr.startswith("zephserver-client: error: no node answered: cannot "
                                    f"reach {down}"), nobody.stderr


def test_a_client_that_leaves_before_ready_does_not_leave_a_session_behind(server):
    """The POST's connection closes while the session starts: it is stopped, not
    left running with an id nobody knows."""
    import http.client
    from urllib.parse import urlparse

    u = urlparse(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("POST", "/paraview", json.dumps({"application": "echo"}),
                 {"Authorization": f"Bearer {server.tokens['bob']}"})
    poll_until(lambda: _rpc(server, "sessions.list", {}, "bob")[1], 10, interval=0.02,
               what="bob's session created")
    conn.close()

    def cancelled():
        _, page, _ = _rpc(server, "jobs.list", {"app": "echo", "limit": 1}, "bob")
        job = page["jobs"][0]
        return job if job["state"] == "CANCELLED" else None
    job = poll_until(cancelled, 20, interval=0.1, what="abandoned session stopped")
    assert "left before it was ready" in job["state_reason"]
