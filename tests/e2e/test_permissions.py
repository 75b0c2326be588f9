"""Who may launch what: an app's ``allow`` (apps.list shows only what a user may launch;
a refused launch is -32002 / 403 naming the app), the agent for staff unless AGENT_ALLOW
opens it, and AGENT_SOURCE_ALLOW for where its archives may come from; and the Django
admin, for staff only."""

import urllib.request

import pytest

from tests.support.archives import ArchiveServer, make_zip
from tests.support.daemon import child_env, short_tmpdir, write_settings
from tests.support.jobs import stop_site
from tests.support.poll import poll_until
from tests.support.sessions import free_port_range, rest
from tests.support.web import Ws, django_shell, login, run, start_with_users

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SH = "/bin/sh"
GROUPS = """
from django.contrib.auth.models import Group, User
for group, names in [("simulation", ["alice"]), ("deployers", ["alice"])]:
    g = Group.objects.create(name=group)
    for name in names:
        User.objects.get(username=name).groups.add(g)
"""


@pytest.fixture(scope="module")
def site():
    work = short_tmpdir("zq")
    (work / "files" / "ok").mkdir(parents=True)
    (work / "files" / "elsewhere").mkdir()
    for folder in ("ok", "elsewhere"):
        make_zip(work / "files" / folder / "app.zip", {"Procfile": "web: exec sleep 600\n"})
    files = ArchiveServer(work / "files")
    low, high = free_port_range(2, 22000)
    apps = {"open": {"argv": [SH, "-c", "exit 0"], "resources": {"cores": 0}},
            "solver": {"argv": [SH, "-c", "exit 0"], "resources": {"cores": 0},
                       "allow": {"groups": ["simulation"]}},
            "viz": {"kind": "session", "argv": [SH, "-c", "echo ready; exec sleep 600"],
                    "ready_line": "ready", "grace": 1, "port_range": [low, high],
                    "resources": {"cores": 0}, "allow": {"users": ["alice"]}}}
    settings = write_settings(work, APPS=apps, AGENT_FILE_ROOTS=[str(work / "files")],
                              AGENT_ALLOW={"groups": ["deployers"], "staff": True},
                              AGENT_SOURCE_ALLOW=[f"{files.url}/ok/",
                                                  f"^{files.url}/redirect/.*$"],
                              LAUNCHER_ENDPOINT="/paraview",
                              DJANGO_SETTINGS_MODULE="tests.support.django_test_settings")
    env = child_env()
    daemon = start_with_users(settings, env)
    django_shell(settings, GROUPS, env)  # before any request: logins cache their groups
    daemon.files = files
    yield daemon
    stop_site(daemon, work, files)


def calls(site, who: str, *requests: tuple[str, dict]) -> list[dict]:
    async def scenario():
        ws = await Ws.connect(site.url, token=site.tokens[who])
        try:
            return [await ws.call(method, params) for method, params in requests]
        finally:
            await ws.aclose()
    return run(scenario())


def test_apps_list_and_submit_follow_allow(site):
    listed, submitted = calls(site, "alice", ("apps.list", {}),
                              ("jobs.submit", {"app": "solver"}))
    assert {a["name"] for a in listed["result"]} == {"open", "solver", "viz"}
    assert "result" in submitted, submitted
    listed, refused, fine = calls(site, "bob", ("apps.list", {}),
                                  ("jobs.submit", {"app": "solver"}),
                                  ("jobs.submit", {"app": "open"}))
    assert {a["name"] for a in listed["result"]} == {"open"}
    assert refused["error"]["code"] == -32002, refused
    assert "solver" in refused["error"]["message"]
    assert refused["error"]["data"]["field"] == "app"
    assert "result" in fine
    listed, = calls(site, "boss", ("apps.list", {}))  # staff, but in neither rule
    assert {a["name"] for a in listed["result"]} == {"open"}


def test_a_session_app_refused_over_rest_and_websocket(site):
    status, body, _ = rest("POST", site.url + "/paraview", site.tokens["bob"],
                           {"application": "viz"})
    assert status == 403, body
    assert "viz" in body["error"]
    answer, = calls(site, "bob", ("sessions.start", {"application": "viz"}))
    assert answer["error"]["code"] == -32002, answer
    status, body, _ = rest("POST", site.url + "/paraview", site.tokens["alice"],
                           {"application": "viz"})
    assert status == 200, body
    assert rest("DELETE", f"{site.url}/paraview/{body['id']}", site.tokens["alice"])[0] == 200


def create(site, who: str, url: str, app: str) -> tuple[int, dict]:
    status, doc, _ = rest("POST", site.url + "/agent/create-process", site.tokens[who],
                          {"app": app, "node": "web", "process_type": "web",
                           "source_url": url})
    return status, doc


def test_the_agent_is_for_its_allowed_users_only(site):
    url = f"{site.files.url}/ok/app.zip"
    status, doc = create(site, "bob", url, "bobs")  # not staff, not a deployer
    assert status == 403, doc
    assert "AGENT_ALLOW" in doc["error"]
    assert create(site, "alice", url, "alices")[0] == 201  # a deployer
    assert create(site, "boss", url, "boss")[0] == 201  # staff
    for who, slug in (("alice", "alices.web"), ("boss", "boss.web")):
        assert rest("DELETE", f"{site.url}/agent/delete-process/{slug}",
                    site.tokens[who])[0] == 200


def test_sources_come_only_from_where_agent_source_allow_says(site):
    status, doc = create(site, "alice", f"{site.files.url}/elsewhere/app.zip", "far")
    assert status == 400, doc
    assert doc["field"] == "source_url"
    assert "AGENT_SOURCE_ALLOW" in doc["error"]
    # an allowed URL that redirects elsewhere: the download is refused, not followed
    status, doc = create(site, "alice", f"{site.files.url}/redirect/{site.files.url}"
                         "/elsewhere/app.zip", "bounce")
    assert status == 201, doc

    def ended():
        _, got, _ = rest("GET", f"{site.url}/agent/process-status/bounce.web",
                         site.tokens["alice"])
        return got if got["state"] == "download failure" else None

    failed = poll_until(ended, 20, what="the redirect refused")
    assert "redirected" in failed["state_reason"]
    assert "AGENT_SOURCE_ALLOW" in failed["state_reason"]
    assert not any(path.startswith("/elsewhere/") for path, _ in site.files.requests)


def test_every_act_leaves_one_audit_line(site):
    """Launch, cancel, delete, token creation and revocation: who, what, from where."""
    token = site.tokens["alice"]
    job, refused, minted = calls(site, "alice", ("jobs.submit", {"app": "open"}),
                                   ("jobs.cancel", {"id": 10**6}),  # refused: no line
                                   ("tokens.create", {"name": "ci"}))
    revoked, = calls(site, "alice", ("tokens.revoke", {"prefix": minted["result"]["prefix"]}))
    assert "result" in revoked
    assert refused["error"]["code"] == -32005
    status, session, _ = rest("POST", site.url + "/paraview", token, {"application": "viz"})
    assert status == 200
    assert rest("DELETE", f"{site.url}/paraview/{session['id']}", token)[0] == 200
    status, made = create(site, "alice", f"{site.files.url}/ok/app.zip", "audited")
    assert status == 201
    assert rest("DELETE", made["delete"], token)[0] == 200
    job_id, prefix = job["result"]["id"], minted["result"]["prefix"]
    expected = [f"audit: launch by alice: job {job_id} (app open) from 127.0.0.1 ws ",
                f"audit: token create by alice: token {prefix} ('ci') from 127.0.0.1 ws ",
                f"audit: token revoke by alice: token {prefix} and 0 made with it from "
                "127.0.0.1 ws ",
                f"audit: launch by alice: session {session['id']} (app viz) from 127.0.0.1 "
                "POST /paraview",
                f"audit: cancel by alice: job {session['id']} from 127.0.0.1 DELETE "
                f"/paraview/{session['id']}",
                f"audit: launch by alice: agent process audited.web (job {made['id']}) from "
                f"{site.files.url}/ok/app.zip from 127.0.0.1 POST /agent/create-process",
                "audit: delete by alice: agent process audited.web from 127.0.0.1 DELETE "
                "/agent/delete-process/audited.web"]

    def lines():
        found = [line.split("zephserver.audit: ", 1)[1] for line in site.output.splitlines()
                 if "zephserver.audit: " in line and "by alice" in line]
        return found if all(any(f.startswith(e) for f in found) for e in expected) else None

    found = poll_until(lines, 10, what="the audit lines")
    assert not any(f"job {10**6}" in f for f in found)  # a refused act is not audited


def test_the_admin_is_for_staff_with_every_apps_models(site):
    """The admin app does not discover the apps' admin modules at start (a node used
    only through the API never loads them): the URLs do, with the first web request."""
    django_shell(site.settings, "from django.contrib.auth.models import User\n"
                 "User.objects.create_superuser('root', password='root-pw-123')", site.env)

    def admin_page(who: str) -> tuple[str, str]:
        session = login(site.url, who, f"{who}-pw-123")
        request = urllib.request.Request(site.url + "/admin/",
                                         headers={"Cookie": f"sessionid={session}"})
        with urllib.request.urlopen(request, timeout=10) as answer:  # (redirects followed)
            return answer.url, answer.read().decode()

    where, page = admin_page("root")
    assert where == site.url + "/admin/"
    assert "/admin/auth/user/" in page
    assert "/admin/zephweb/apitoken/" in page
    where, page = admin_page("boss")  # staff without permissions: the admin, empty
    assert where == site.url + "/admin/"
    assert "/admin/auth/user/" not in page
    where, page = admin_page("alice")
    assert where.startswith(site.url + "/admin/login/"), where
    assert "/admin/auth/user/" not in page
