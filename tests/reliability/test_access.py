"""Every endpoint and every method, attacked three ways: with no credentials, with a
revoked token, and by another user. The lists come from the daemon's own tables
(TASKS_PATH and the HTTP faces' routes), so a new method or route is covered or this
test fails."""

import asyncio
import base64
import importlib
import json
import re
import urllib.error
import urllib.request

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from tests.support.archives import ArchiveServer, make_zip
from tests.support.daemon import child_env, short_tmpdir, write_settings
from tests.support.jobs import stop_site
from tests.support.poll import poll_until
from tests.support.sessions import free_port_range, rest
from tests.support.web import Ws, admin, close_ws, run, start_with_users
from zephserver import defaults
from zephserver.http import agent, launcher, legacy_ws, ws

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SH = "/bin/sh"
OPEN_METHODS = {"ping"}  # what an anonymous connection may call, on purpose
# WebSockets whose upgrade needs no credentials: /ws gives an anonymous connection (ping
# only), and the 2015 client's frames each carry their login (refused frame by frame).
OPEN_UPGRADES = {"/ws", "/zephws"}
# Methods that name an object (the id of a job, a session or a token) and what names it.
BY_ID = {"jobs.get": "job", "jobs.cancel": "job", "jobs.output": "job",
         "jobs.subscribe": "job", "jobs.control": "job", "jobs.update": "job",
         "queue.move": "job", "queue.hold": "job", "queue.release": "job",
         "sessions.get": "session", "sessions.stop": "session", "tokens.revoke": "token"}
SAMPLE = {int: 1, str: "x", dict: {}, list: [], bool: True}


def required_params(method: str) -> dict:
    """Sample values of what ``method`` requires besides the id (from its PARAMS)."""
    module, name = defaults.TASKS_PATH[method].split("/")
    declared = getattr(importlib.import_module(module), name).PARAMS
    return {key: SAMPLE[kind] for key, kind in declared.items()
            if isinstance(kind, type) and key not in ("id", "prefix")}


@pytest.fixture(scope="module")
def site():
    work = short_tmpdir("zx")
    (work / "files").mkdir()
    make_zip(work / "files" / "app.zip", {"Procfile": "web: exec sleep 600\n"})
    files = ArchiveServer(work / "files")
    low, high = free_port_range(3, 24000)
    apps = {"hog": {"argv": [SH, "-c", "exec sleep 600"], "resources": {"cores": 4},
                    "grace": 1},
            "viz": {"kind": "session", "argv": [SH, "-c", "echo ready; exec sleep 600"],
                    "ready_line": "ready", "grace": 1, "port_range": [low, high],
                    "resources": {"cores": 0}}}
    path = write_settings(work, APPS=apps, AGENT_FILE_ROOTS=[str(work / "files")],
                          DJANGO_SETTINGS_MODULE="tests.support.django_test_settings",
                          LAUNCHER_ENDPOINT="/paraview", LEGACY_WS_PATH="/zephws",
                          OPS_REQUIRE_TOKEN=True, AGENT_ALLOW=None,
                          RESOURCES={"cores": 4, "memory": 4096, "licenses": {}})
    daemon = start_with_users(path, child_env())
    daemon.files = files
    yield daemon
    stop_site(daemon, work, files)


def result(answer: dict):
    assert "result" in answer, answer
    return answer["result"]


@pytest.fixture(scope="module")
def alices(site):
    """One object of each kind, alice's: a running job, a queued one, a session, an agent
    process and a token."""
    token = site.tokens["alice"]

    async def make():
        ws = await Ws.connect(site.url, token=token)
        try:
            session = result(await ws.call("sessions.start", {"application": "viz"}, timeout=30))
            running = result(await ws.call("jobs.submit", {"app": "hog"}))
            queued = result(await ws.call("jobs.submit", {"app": "hog"}))  # no room left
            minted = result(await ws.call("tokens.create", {"name": "alice's"}))
        finally:
            await ws.aclose()
        return running, queued, session, minted

    running, queued, session, minted = run(make())
    status, process, _ = rest("POST", site.url + "/agent/create-process", token,
                              {"app": "demo", "node": "web.0", "process_type": "web",
                               "source_url": f"{site.files.url}/app.zip"})
    assert status == 201, process
    return {"job": running["id"], "queued": queued["id"], "session": session["id"],
            "token": minted["prefix"], "process": process["slug"]}


def test_every_method_refuses_an_anonymous_caller(site, figure):
    async def scenario():
        ws = await Ws.connect(site.url)
        answers = {m: await ws.call(m, {"id": 1}) for m in defaults.TASKS_PATH}
        await ws.aclose()
        return answers

    answers = run(scenario())
    for method, answer in answers.items():
        if method in OPEN_METHODS:
            assert "result" in answer, (method, answer)
        else:
            assert answer["error"]["code"] == -32001, (method, answer)
    figure(f"{len(answers) - len(OPEN_METHODS)} methods refused to an anonymous caller "
           f"(-32001), open on purpose: {sorted(OPEN_METHODS)}")


def test_the_2015_wire_format_refuses_frames_without_a_valid_login(site):
    async def scenario():
        url = site.url.replace("http://", "ws://") + "/zephws"
        conn = await websocket_connect(url)
        answers = []
        for frame in ({"task": "jobs.list", "data": {}},
                      {"task": "jobs.list", "data": {}, "session_id": "notasession"}):
            await conn.write_message(json.dumps(frame))
            answers.append(json.loads(await asyncio.wait_for(conn.read_message(), 10)))
        await close_ws(conn)
        return answers

    for answer in run(scenario()):
        assert answer["error"]["code"] == -32001, answer


def served_routes() -> set[str]:
    """Every route pattern the daemon serves over HTTP, from the faces themselves."""
    return {pattern for face in (agent.routes(), launcher.routes("/paraview"),
                                 legacy_ws.routes("/zephws"), ws.routes())
            for pattern, _ in face}


# One request per route, by pattern (a route without one here fails the test).
REQUESTS = {
    r"/agent/?": [("GET", "/agent/")],
    r"/agent/create-process": [("POST", "/agent/create-process")],
    r"/agent/list-processes": [("GET", "/agent/list-processes")],
    r"/agent/process-status/([^/]+)": [("GET", "/agent/process-status/{process}")],
    r"/agent/delete-process/([^/]+)": [("DELETE", "/agent/delete-process/{process}")],
    r"/agent/attach-console/([^/]+)": [("WS", "/agent/attach-console/{process}")],
    r"/paraview/?": [("GET", "/paraview"), ("POST", "/paraview")],
    r"/paraview/([^/]+)": [("GET", "/paraview/{session}"), ("DELETE", "/paraview/{session}"),
                           ("POST", "/paraview/{session}")],
    r"/zephws": [("WS", "/zephws")],
    r"/ws": [("WS", "/ws")],
}
OPERATIONS = [("GET", "/metrics")]  # /healthz and /readyz are open on purpose
BODY = b'{"application": "viz", "app": "demo", "node": "x", "process_type": "web"}'


def http_status(site, method: str, path: str, headers: dict) -> int:
    """The status of one request; "WS" is a WebSocket upgrade (101 when accepted)."""
    if method == "WS":
        async def upgrade():
            url = site.url.replace("http://", "ws://") + path
            conn = await websocket_connect(HTTPRequest(url, headers=headers))
            await close_ws(conn)
        try:
            run(upgrade())
        except HTTPClientError as exc:
            return exc.code
        return 101
    request = urllib.request.Request(site.url + path, method=method, headers=headers,
                                     data=BODY if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def every_request(alices):
    for pattern, requests in REQUESTS.items():
        for method, path in requests:
            yield pattern, method, path.format(**alices)
    for method, path in OPERATIONS:
        yield None, method, path


def test_every_route_has_a_request_here(site):
    assert served_routes() == set(REQUESTS)


@pytest.mark.parametrize("credentials", ["none", "wrong token", "wrong basic"])
def test_every_route_refuses_a_caller_without_valid_credentials(site, alices, credentials,
                                                                figure):
    headers = {"none": {},
               "wrong token": {"Authorization": "Bearer zt_notatoken"},
               "wrong basic": {"Authorization": "Basic " + base64.b64encode(
                   b"alice:zt_notatoken").decode()}}[credentials]
    seen = {}
    for _, method, path in every_request(alices):
        status = http_status(site, method, path, headers)
        if path in OPEN_UPGRADES and credentials == "none":
            assert status == 101, path  # see OPEN_UPGRADES
            continue
        seen[f"{method} {path}"] = status
    assert set(seen.values()) == {401}, seen
    figure(f"{len(seen)} requests with {credentials}: all 401")


def test_a_revoked_token_is_refused_everywhere(site, alices, figure):
    token = site.tokens["revokable"]  # bob's second token
    assert http_status(site, "GET", "/agent/list-processes",
                       {"Authorization": f"Bearer {token}"}) == 200
    admin(site.settings, "revoke_token", token[:11], env=site.env)
    bearer = {"Authorization": f"Bearer {token}"}
    poll_until(lambda: http_status(site, "WS", "/ws", bearer) == 401, 10,
               what="the revoked token refused at the upgrade")
    seen = {}
    for headers in (bearer, {"Authorization": "Basic " + base64.b64encode(
            f"bob:{token}".encode()).decode()}):
        for _, method, path in every_request(alices):
            seen[f"{headers['Authorization'][:6]} {method} {path}"] = http_status(
                site, method, path, headers)
    assert set(seen.values()) == {401}, seen
    figure(f"a revoked token: {len(seen)} requests (Bearer and Basic), all 401")


def test_another_users_objects_answer_as_unknown_ones(site, alices, figure):
    """bob asks about alice's objects: each answer is the one an unknown id gets."""
    ids = {"job": alices["job"], "session": alices["session"], "token": alices["token"]}
    unknown = {"job": 10**6, "session": 10**6, "token": "zt_nothere0"}

    def same(answer_theirs, answer_unknown, theirs, missing):
        assert answer_theirs["error"]["code"] == answer_unknown["error"]["code"] == -32005
        assert answer_theirs["error"]["message"].replace(str(theirs), "ID") == \
            answer_unknown["error"]["message"].replace(str(missing), "ID")

    async def scenario():
        ws = await Ws.connect(site.url, token=site.tokens["bob"])
        pairs = []
        for method, kind in BY_ID.items():
            theirs = ids[kind] if method not in {"queue.move", "queue.hold"} \
                else alices["queued"]
            params = required_params(method)
            key = "prefix" if kind == "token" else "id"
            pairs.append((method, theirs, unknown[kind],
                          await ws.call(method, {key: theirs, **params}),
                          await ws.call(method, {key: unknown[kind], **params})))
        listed = [(await ws.call(m, {}))["result"] for m in
                  ("jobs.list", "sessions.list", "tokens.list", "queue.list")]
        await ws.aclose()
        return pairs, listed

    pairs, listed = run(scenario())
    for method, theirs, missing, answer_theirs, answer_unknown in pairs:
        try:
            same(answer_theirs, answer_unknown, theirs, missing)
        except (AssertionError, KeyError) as exc:
            raise AssertionError((method, answer_theirs, answer_unknown)) from exc
    text = repr(listed)
    for value in (alices["job"], alices["queued"], alices["session"]):
        assert not re.search(rf"'id': '?{value}'?[,}}]", text), (value, listed)

    bob = site.tokens["bob"]
    rest_pairs = [
        (f"GET /paraview/{alices['session']}", "GET /paraview/1000000"),
        (f"DELETE /paraview/{alices['session']}", "DELETE /paraview/1000000"),
        (f"GET /agent/process-status/{alices['process']}", "GET /agent/process-status/nope"),
        (f"DELETE /agent/delete-process/{alices['process']}",
         "DELETE /agent/delete-process/nope"),
    ]
    for theirs, missing in rest_pairs:
        got = [rest(r.split()[0], site.url + r.split()[1], bob)[0] for r in (theirs, missing)]
        assert got == [404, 404], (theirs, got)
    console = http_status(site, "WS", f"/agent/attach-console/{alices['process']}",
                          {"Authorization": f"Bearer {bob}"})
    assert console == 404
    status, listing, _ = rest("GET", site.url + "/agent/list-processes", bob)
    assert listing == {"processes": []}
    # and alice's objects are untouched by all this
    status, process, _ = rest("GET", site.url + f"/agent/process-status/{alices['process']}",
                              site.tokens["alice"])
    assert status == 200
    assert process["state"] != "deleted"
    figure(f"another user's objects: {len(pairs)} methods and {len(rest_pairs) + 1} REST "
           "requests answered exactly as for an unknown id; lists show none of them")
