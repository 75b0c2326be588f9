"""The web UI in a real browser: log in, run the demo job end to end, its log, cancel,
privacy between users, a session, an agent console, and a daemon restart under an open
page."""

import re
import signal

import pytest

from tests.support.daemon import DaemonProcess

pytestmark = pytest.mark.e2e


def submit_demo(page, steps, delay):
    page.goto(page.url.split("#")[0] + "#/jobs")
    page.wait_for_selector("#app option[value=demo]", state="attached")
    page.select_option("#app", "demo")
    page.fill("[data-field=steps] input", str(steps))
    page.fill("[data-field=delay] input", str(delay))
    page.click("#submit-form button[type=submit]")
    page.wait_for_selector("#submit-msg:has-text('submitted')")
    return int(re.search(r"Job (\d+)", page.inner_text("#submit-msg"))[1])


def test_login_and_a_demo_job_end_to_end_with_its_log(ui_server, page_for):
    page = page_for(ui_server)
    job_id = submit_demo(page, 5, 0.1)
    row = f"#jobs tr[data-id='{job_id}']"
    page.wait_for_selector(f"{row}[data-state=SUCCEEDED]")  # pushed, no reload
    assert page.get_attribute(f"{row} progress", "value") == "100"
    assert "100%" in page.inner_text(row)
    page.click(f"{row} a")
    page.wait_for_selector("#log:has-text('step 5 of 5')")
    assert "SUCCEEDED" in page.inner_text("#job-info")
    page.fill("#search", "step 3")
    page.wait_for_selector("#found:has-text('1 line')")


def test_a_bad_value_is_shown_next_to_its_field(ui_server, page_for):
    page = page_for(ui_server)
    page.wait_for_selector("#app option[value=demo]", state="attached")
    page.fill("[data-field=steps] input", "5000")
    page.eval_on_selector("#submit-form", "f => f.noValidate = true")  # the server decides
    page.click("#submit-form button[type=submit]")
    page.wait_for_selector("[data-field=steps] .error:has-text('at most 1000')")


def test_cancel_a_running_job(ui_server, page_for):
    page = page_for(ui_server)
    job_id = submit_demo(page, 100, 1)
    row = f"#jobs tr[data-id='{job_id}']"
    page.wait_for_selector(f"{row}[data-state=RUNNING]")
    page.click(f"{row} button:has-text('Cancel')")
    page.wait_for_selector(f"{row}[data-state=CANCELLED]")


def test_another_user_does_not_see_my_jobs(ui_server, page_for):
    alice = page_for(ui_server, "alice")
    job_id = submit_demo(alice, 1, 0)
    bob = page_for(ui_server, "bob")
    own = submit_demo(bob, 1, 0)
    bob.wait_for_selector(f"#jobs tr[data-id='{own}']")  # his list is on the page...
    assert bob.query_selector(f"#jobs tr[data-id='{job_id}']") is None  # ...without hers
    bob.goto(bob.url.split("#")[0] + f"#/job/{job_id}")
    bob.wait_for_selector(f"#job-info:has-text('no job {job_id}')")  # as if none
    boss = page_for(ui_server, "boss")  # staff see everyone's, with an owner column
    boss.wait_for_selector(f"#jobs tr[data-id='{job_id}']:has-text('alice')")


def test_launch_and_stop_a_session(ui_server, page_for):
    page = page_for(ui_server)
    page.click("nav a[data-page=sessions]")
    page.wait_for_selector("#session-app option[value=quick]", state="attached")
    page.click("#session-form button[type=submit]")
    page.wait_for_selector("#session-msg:has-text('RUNNING')")
    session_id = re.search(r"Session (\d+)", page.inner_text("#session-msg"))[1]
    row = f"#sessions tr[data-id='{session_id}']"
    page.wait_for_selector(f"{row}[data-state=RUNNING] a[href^='ws://']")
    page.click(f"{row} button:has-text('Stop')")
    page.wait_for_selector(f"{row}[data-state=CANCELLED]")


def test_attach_to_an_agent_process_console(ui_server, page_for):
    page = page_for(ui_server)
    page.click("nav a[data-page=processes]")
    for name, value in (("app", "ui"), ("node", "web.0"), ("process_type", "web"),
                        ("source_url", ui_server.archives.url + "/app.zip")):
        page.fill(f"#process-form input[name={name}]", value)
    page.click("#process-form button[type=submit]")
    row = "#processes tr[data-slug='ui.web.0']"
    page.wait_for_selector(f"{row}[data-state=running]")
    page.click(f"{row} button:has-text('Console')")
    page.wait_for_selector("#console:has-text('console line')")
    page.once("dialog", lambda d: d.accept())
    page.click(f"{row} button:has-text('Delete')")
    page.wait_for_selector(row, state="detached")


def test_the_page_reconnects_after_a_daemon_restart(ui_server, page_for):
    page = page_for(ui_server)
    job_id = submit_demo(page, 600, 0.5)
    row = f"#jobs tr[data-id='{job_id}']"
    page.wait_for_selector(f"{row}[data-state=RUNNING]")
    ui_server.kill(signal.SIGKILL)
    ui_server.wait_exit()
    page.wait_for_selector("#conn.reconnecting")
    ui_server.close()
    restarted = DaemonProcess(ui_server.settings, ui_server.env).start()
    ui_server.proc, ui_server.lines = restarted.proc, restarted.lines
    ui_server._ready, ui_server._reader = restarted._ready, restarted._reader
    page.wait_for_selector("#conn.connected", timeout=30000)
    page.wait_for_selector(f"{row}[data-state=RUNNING]")  # re-adopted, shown as it is
    page.click(f"{row} button:has-text('Cancel')")
    page.wait_for_selector(f"{row}[data-state=CANCELLED]")


def test_account_tokens(ui_server, page_for):
    page = page_for(ui_server)
    page.click("nav a[data-page=account]")
    page.fill("#token-name", "laptop script")
    page.click("#token-form button")
    page.wait_for_selector("#new-token code")
    token = page.inner_text("#new-token code")
    assert token.startswith("zt_") or len(token) > 20
    page.wait_for_selector("td:has-text('laptop script')")
    page.click("tr:has-text('laptop script') button:has-text('Revoke')")
    page.wait_for_selector("tr:has-text('laptop script') td:has-text('revoked')")


def test_a_100_mb_log_opens_at_its_end_and_pages_back(ui_server, page_for):
    page = page_for(ui_server)
    page.goto(page.url.split("#")[0] + "#/jobs")
    page.wait_for_selector("#app option[value=flood]", state="attached")
    page.select_option("#app", "flood")
    page.click("#submit-form button[type=submit]")
    page.wait_for_selector("#submit-msg:has-text('submitted')")
    job_id = int(re.search(r"Job (\d+)", page.inner_text("#submit-msg"))[1])
    page.wait_for_selector(f"#jobs tr[data-id='{job_id}'][data-state=SUCCEEDED]",
                           timeout=60000)
    page.click(f"#jobs tr[data-id='{job_id}'] a")
    page.wait_for_selector("#log:has-text('line 1249999')")
    shown = page.evaluate("document.querySelector('#log').textContent.length")
    assert shown <= 600 * 1024  # the last 512 KiB, not 100 MB
    assert page.evaluate("1 + 1") == 2  # the page still answers
    page.click("#earlier")
    page.wait_for_function("document.querySelector('#log').textContent.length > 1000000")
