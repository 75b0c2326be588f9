"""A real Chromium (Debian's, /usr/bin/chromium) driven by Playwright for Python, against
a real daemon. A failed test leaves a screenshot in test-artifacts/."""

import os
import shutil

import pytest

from tests.support.archives import ArchiveServer, make_zip
from tests.support.daemon import REPO, child_env, short_tmpdir, write_settings
from tests.support.sessions import free_port_range
from tests.support.web import start_with_users

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
FLOOD = ("import sys\nw = sys.stdout.write\n"
         "for i in range(1250000): w(f'line {i:7d} ' + 'x' * 63 + (' end' if i == 1249999 "
         "else '') + '\\n')\n")
PROCFILE = 'web: while true; do echo "console line $$"; sleep 0.1; done\n'


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.failed_call = report.failed


def ui_apps(low):
    return {
        "demo": {"description": "Prints a progress line per step.",
                 "argv": ["$python", "-u", "-m", "zephserver.examples.demo_job", "--steps",
                          "$steps", "--delay", "$delay"],
                 "params": {"steps": {"type": "int", "default": 5, "min": 1, "max": 1000},
                            "delay": {"type": "float", "default": 0.1, "min": 0, "max": 60}},
                 "resources": {"cores": 1}, "grace": 2,
                 "parser": {"progress": r"step (?P<value>\d+) of (?P<total>\d+)"}},
        "flood": {"description": "writes 100 MB of log",
                  "argv": ["$python", "-c", FLOOD], "resources": {"cores": 1}},
        "quick": {"kind": "session", "description": "a session that is ready at once",
                  "argv": ["/bin/sh", "-c", "echo ready; exec sleep 600"],
                  "ready_line": "ready", "port_range": [low, low + 4],
                  "resources": {"cores": 0}, "grace": 1},
    }


@pytest.fixture(scope="module")
def ui_server():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install -y "
                    "chromium)")
    work = short_tmpdir("zu")
    archives_dir = work / "archives"
    archives_dir.mkdir()
    make_zip(archives_dir / "app.zip", {"Procfile": PROCFILE})
    archives = ArchiveServer(archives_dir)
    low, _ = free_port_range(6, 22000)
    env = child_env()
    # a fixed HTTP port: a restarted daemon must come back where the open page looks
    path = write_settings(work, APPS=ui_apps(low), PORT_ZEPH=low + 5,
                          DJANGO_SETTINGS_MODULE="tests.support.django_test_settings",
                          RESOURCES={"cores": 4, "memory": 4096, "licenses": {}},
                          AGENT_ALLOW=None)  # the agent for alice too, not staff only
    daemon = start_with_users(path, env)
    daemon.work, daemon.archives = work, archives
    yield daemon
    daemon.cli("zephserver-stop")
    daemon.close()
    archives.close()
    from tests.support.jobs import kill_jobs_under

    kill_jobs_under(work)
    print(daemon.output[-3000:])
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    # Module scope: while Playwright's sync API is up, an event loop counts as running in
    # this thread and asyncio.run() (used by the other tests) refuses to start.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync"])
        yield b
        b.close()


@pytest.fixture
def page_for(browser, request):
    """``page_for(server, "alice")``: a logged-in page (through the real form)."""
    contexts = []

    def make(server, user="alice"):
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15000)
        page.goto(server.url + "/")
        page.fill("#id_username", user)
        page.fill("#id_password", f"{user}-pw-123")
        page.click("button[type=submit]")
        page.wait_for_selector("#conn.connected")
        return page

    yield make
    if getattr(request.node, "failed_call", False):
        ARTIFACTS.mkdir(exist_ok=True)
        for i, context in enumerate(contexts):
            for j, page in enumerate(context.pages):
                page.goto(page.url.split("#")[0] + "#/jobs") if i == j == 0 else None
                page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-{i}-{j}.png"),
                                full_page=True)
    for context in contexts:
        context.close()
