import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.support.daemon import REPO, child_env, run_cli, write_settings
from tests.support.poll import poll_until

pytestmark = pytest.mark.e2e
SUPPORT = "tests.support.services"


def status_json(daemon) -> dict:
    """The status; its exit code agrees with its "degraded" (0 whole, 5 degraded)."""
    result = daemon.cli("zephserver-status", "--json")
    assert result.returncode in (0, 5), result.stderr + result.stdout
    status = json.loads(result.stdout)
    assert result.returncode == (5 if status["degraded"] else 0), status
    return status


def service_states(daemon) -> dict:
    return {s["name"]: s["state"] for s in status_json(daemon)["services"]}


def test_start_status_second_start_stop(workdir, daemons):
    """start -> every service RUNNING -> second start says already running -> stop cleans up."""
    settings = write_settings(workdir, SERVICE_LIST=[f"{SUPPORT}/Trivial0",
                                                     f"{SUPPORT}/Trivial1"])
    daemon = daemons(settings).start()
    status = status_json(daemon)
    assert status["pid"] == daemon.pid
    assert {s["name"]: s["state"] for s in status["services"]} == {
        "trivial0": "RUNNING", "trivial1": "RUNNING"}
    text = daemon.cli("zephserver-status")
    assert text.returncode == 0
    assert "trivial0" in text.stdout
    assert "RUNNING" in text.stdout

    second = daemon.cli("zephserver-start")
    assert second.returncode == 0
    assert f"already running (pid {daemon.pid})" in second.stdout
    lock = workdir / "var" / "zephserver.pid"
    assert lock.read_text().strip() == str(daemon.pid)

    stop = daemon.cli("zephserver-stop")
    assert stop.returncode == 0, stop.stderr
    assert f"stopped (pid {daemon.pid})" in stop.stdout
    assert daemon.wait_exit(10) == 0
    assert not lock.exists()
    assert not (workdir / "var" / "zephserver.sock").exists()


def test_kill_9_leaves_a_stale_lock_that_the_next_start_breaks(workdir, daemons):
    """After kill -9 the lock and socket remain; the next start breaks them with a warning."""
    settings = write_settings(workdir, SERVICE_LIST=[f"{SUPPORT}/Trivial0"])
    first = daemons(settings).start()
    first.kill(signal.SIGKILL)
    first.wait_exit(10)
    assert (workdir / "var" / "zephserver.pid").exists()
    second = daemons(settings).start()
    assert "breaking stale lock" in second.output
    assert "removing stale control socket" in second.output
    assert service_states(second) == {"trivial0": "RUNNING"}
    assert second.cli("zephserver-stop").returncode == 0
    assert second.wait_exit(10) == 0


def test_lock_held_by_unrelated_live_process_is_broken(workdir, daemons):
    """A lock naming a live process that is not a zephserver is stale."""
    settings = write_settings(workdir)
    (workdir / "var").mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (workdir / "var" / "zephserver.pid").write_text(f"{sleeper.pid}\n")
        daemon = daemons(settings).start()
        assert f"pid {sleeper.pid} is not a zephserver" in daemon.output
        assert daemon.cli("zephserver-stop").returncode == 0
    finally:
        sleeper.kill()
        sleeper.wait()


def test_three_mistakes_three_errors_exit_6(workdir):
    """A settings file with three mistakes prints three error lines and exits 6."""
    settings = write_settings(workdir, LOG_LEVEL="LOUD", PORT_ZEPH=99999,
                              SERVICE_LIST=["no.such.module/Nothing"])
    result = run_cli("zephserver-start", "--settings", str(settings))
    assert result.returncode == 6
    errors = [line for line in result.stderr.splitlines() if line.startswith("zephserver: error:")]
    assert len(errors) == 3, result.stderr
    assert "LOG_LEVEL" in errors[0]
    assert not (workdir / "var" / "zephserver.pid").exists()


def test_crashing_service_backs_off_then_fatal(workdir, daemons):
    """A service raising in main() is restarted with growing delays, then FATAL; others run."""
    crash_log = workdir / "crashes"
    settings = write_settings(workdir, SERVICE_LIST=[f"{SUPPORT}/Crasher", f"{SUPPORT}/Trivial0"],
                              SERVICE_BACKOFF_INITIAL=0.1, SERVICE_MAX_RETRIES=3)
    daemon = daemons(settings, child_env(ZEPH_TEST_CRASH_LOG=str(crash_log))).start()
    poll_until(lambda: service_states(daemon)["crasher"] == "FATAL", 15, what="crasher FATAL")
    states = status_json(daemon)["services"]
    crasher = next(s for s in states if s["name"] == "crasher")
    assert crasher["restarts"] == 3
    assert "RuntimeError" in crasher["last_error"]
    assert service_states(daemon)["trivial0"] == "RUNNING"
    starts = [float(x) for x in crash_log.read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # the delays chosen grow by SERVICE_BACKOFF_FACTOR; each run came no sooner than its
    # delay (how much later depends on the machine's load: no upper bound here)
    def waits() -> list[float]:
        return [float(w) for w in re.findall(r"crasher crashed .*; retry \d/3 in ([\d.]+)s",
                                             daemon.output)]
    poll_until(lambda: len(waits()) == 3, 10, what="three retries logged")
    for wait, base in zip(waits(), (0.1, 0.2, 0.4), strict=True):  # and up to 10 % jitter
        assert base <= wait <= base * 1.1 + 0.005, daemon.output  # (logged to 0.01 s)
    assert len(gaps) == 3
    assert all(gap >= wait - 0.005 for gap, wait in zip(gaps, waits(), strict=True)), gaps
    text = daemon.cli("zephserver-status").stdout
    assert "FATAL" in text
    # an operator can restart it from FATAL
    restarted = daemon.cli("zephserver-command", "restart-service", "crasher")
    assert restarted.returncode == 0, restarted.stderr
    poll_until(lambda: len(crash_log.read_text().split()) > 4, 10, what="a new run")
    assert daemon.cli("zephserver-stop").returncode == 0


def test_stubborn_service_does_not_block_exit(workdir, daemons):
    """A service that ignores disable() is reported, and the daemon exits anyway."""
    settings = write_settings(workdir, SERVICE_LIST=[f"{SUPPORT}/Stubborn", f"{SUPPORT}/Trivial0"])
    daemon = daemons(settings).start()
    started = time.monotonic()
    stop = daemon.cli("zephserver-stop")
    assert stop.returncode == 0, stop.stderr
    daemon.wait_exit(10)
    assert time.monotonic() - started < 8
    assert "service stubborn did not stop" in daemon.output


def test_daemon_mode_returns_only_when_ready(workdir):
    """start --daemon returns after every service is RUNNING (even a slow one)."""
    settings = write_settings(workdir, SERVICE_LIST=[f"{SUPPORT}/SlowReady"])
    env = child_env(ZEPH_TEST_READY_DELAY="1.0")
    started = time.monotonic()
    result = run_cli("zephserver-start", "--settings", str(settings), "--daemon", env=env)
    try:
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - started >= 1.0
        assert result.stdout.startswith("zephserver ready on http://127.0.0.1:")
        status = run_cli("zephserver-status", "--settings", str(settings), "--json", env=env)
        body = json.loads(status.stdout)
        assert body["services"][0]["state"] == "RUNNING"
        assert int((workdir / "var" / "zephserver.pid").read_text()) == body["pid"]
        assert os.getsid(body["pid"]) != os.getsid(0)
    finally:
        stop = run_cli("zephserver-stop", "--settings", str(settings), env=env)
    assert stop.returncode == 0, stop.stderr + stop.stdout
    assert not (workdir / "var" / "zephserver.pid").exists()


def test_daemon_mode_reports_boot_failure(workdir):
    """start --daemon exits non-zero when the daemon cannot boot (socket path is a file)."""
    (workdir / "var").mkdir()
    (workdir / "var" / "zephserver.sock").write_text("not a socket")
    settings = write_settings(workdir)
    result = run_cli("zephserver-start", "--settings", str(settings), "--daemon")
    assert result.returncode == 1
    assert "failed to start" in result.stderr
    assert not (workdir / "var" / "zephserver.pid").exists()


def test_commands_when_not_running(workdir):
    """stop and command exit 7, status exits 3, when no daemon runs."""
    settings = write_settings(workdir)
    assert run_cli("zephserver-stop", "--settings", str(settings)).returncode == 7
    assert run_cli("zephserver-status", "--settings", str(settings)).returncode == 3
    assert run_cli("zephserver-command", "--settings", str(settings), "ping").returncode == 7


def test_signals_stop_gracefully_and_second_sigint_forces(workdir, daemons):
    """SIGTERM stops with exit 0; SIGINT twice forces an exit while a service hangs."""
    settings = write_settings(workdir, SERVICE_LIST=[f"{SUPPORT}/Trivial0"])
    daemon = daemons(settings).start()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0
    assert "stopping: SIGTERM" in daemon.output

    settings = write_settings(workdir, SERVICE_LIST=[f"{SUPPORT}/Stubborn"],
                              SERVICE_STOP_TIMEOUT=30)
    daemon = daemons(settings).start()
    daemon.proc.send_signal(signal.SIGINT)
    poll_until(lambda: "stopping: SIGINT" in daemon.output, 10, what="first SIGINT seen")
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.wait_exit(10) == 1
    assert "forced exit" in daemon.output
    assert not (workdir / "var" / "zephserver.pid").exists()


def test_command_verbs_and_usage_errors(workdir, daemons):
    """zephserver-command runs verbs; an unknown verb or missing argument exits 2."""
    settings = write_settings(workdir, SERVICE_LIST=[f"{SUPPORT}/Trivial0"])
    daemon = daemons(settings).start()
    assert daemon.cli("zephserver-command", "ping").stdout.strip() == "pong"
    services = json.loads(daemon.cli("zephserver-command", "services").stdout)
    assert services[0]["name"] == "trivial0"
    unknown = daemon.cli("zephserver-command", "frobnicate")
    assert unknown.returncode == 2
    assert "unknown command 'frobnicate'" in unknown.stderr
    missing = daemon.cli("zephserver-command", "restart-service")
    assert missing.returncode == 2
    assert "missing name" in missing.stderr
    not_found = daemon.cli("zephserver-command", "restart-service", "nope")
    assert not_found.returncode == 1
    main_py = subprocess.run([sys.executable, "main.py", "status", "--settings", str(settings)],
                             capture_output=True, text=True, cwd=REPO, env=child_env(), timeout=30)
    assert main_py.returncode == 0
    assert "trivial0" in main_py.stdout
    assert daemon.cli("zephserver-stop").returncode == 0


def test_admin_migrate_on_fresh_data_dir(workdir):
    """zephserver-admin migrate creates the SQLite database under DATA_DIR."""
    settings = write_settings(workdir)
    result = run_cli("zephserver-admin", "--settings", str(settings), "migrate", "--noinput")
    assert result.returncode == 0, result.stderr
    assert (workdir / "var" / "zephserver.sqlite3").exists()


def test_status_answers_while_a_long_stop_is_in_progress(workdir, daemons):
    """During a slow stop, status still answers (showing 'stopping') and restart is refused."""
    settings = write_settings(workdir, SERVICE_LIST=[f"{SUPPORT}/Stubborn"],
                              SERVICE_STOP_TIMEOUT=3)
    daemon = daemons(settings).start()
    assert daemon.cli("zephserver-command", "stop").returncode == 0
    status = poll_until(lambda: (s := status_json(daemon)) and s["stopping"] and s, 5,
                        what="status showing stopping")
    assert status["services"][0]["state"] == "STOPPING"
    refused = daemon.cli("zephserver-command", "restart-service", "stubborn")
    assert refused.returncode == 1
    assert "shutting down" in refused.stderr
    assert daemon.wait_exit(15) == 0


def test_a_second_daemon_on_the_same_data_dir_is_refused(workdir, daemons):
    """Another LOCK_FILE and control socket, the same DATA_DIR (its jobs, its database):
    the second start is a clear error naming the first daemon, and changes nothing."""
    services = [f"{SUPPORT}/Trivial0"]
    first = daemons(write_settings(workdir, SERVICE_LIST=services)).start()
    second = write_settings(workdir, "second.py", SERVICE_LIST=services,
                            DATA_DIR=str(workdir / "var"),
                            LOCK_FILE=str(workdir / "second.pid"),
                            CONFIGURATION_NETWORK_INTERFACE_SERVER=str(workdir / "2.sock"))
    result = run_cli("zephserver-start", "--settings", str(second))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"used by another daemon (pid {first.pid})" in result.stderr
    assert not (workdir / "second.pid").exists()
    assert status_json(first)["pid"] == first.pid  # the first is untouched


def test_a_stop_during_boot_is_acted_on_at_once(workdir, daemons):
    """A service that needs 60 s to be ready: status says "booting", a write verb is
    refused with a reason, and zephserver-stop ends the daemon within 2 s."""
    settings = write_settings(workdir, SERVICE_LIST=[f"{SUPPORT}/SlowReady"],
                              SERVICE_START_TIMEOUT=120)
    daemon = daemons(settings, child_env(ZEPH_TEST_READY_DELAY="60")).start(wait=False)
    booting = poll_until(lambda: (r := daemon.cli("zephserver-status", "--json")).returncode
                         == 0 and json.loads(r.stdout), 20, what="the control socket")
    assert booting["booting"] is True
    assert booting["degraded"] is False
    refused = daemon.cli("zephserver-command", "restart-service", "slowready")
    assert refused.returncode == 1
    assert "still booting" in refused.stderr
    started = time.monotonic()
    stop = daemon.cli("zephserver-stop", "--timeout", "10")
    assert stop.returncode == 0, stop.stderr
    assert daemon.wait_exit(10) == 0
    assert time.monotonic() - started < 2.0
    assert "zephserver ready" not in daemon.output
    assert "stopping during boot" in daemon.output


def test_a_fatal_service_makes_the_daemon_degraded(workdir, daemons):
    """The ready line names it, status exits 5 with "degraded": true, and start --daemon
    returns 5."""
    settings = write_settings(workdir, SERVICE_LIST=[f"{SUPPORT}/Crasher", f"{SUPPORT}/Trivial0"],
                              SERVICE_MAX_RETRIES=0)
    daemon = daemons(settings).start()
    ready = next(x for x in daemon.lines if x.startswith("zephserver ready on "))
    assert ready.endswith("(degraded: crasher FATAL)"), ready
    assert daemon.url.startswith("http://127.0.0.1:")
    status = status_json(daemon)
    assert status["degraded"] is True
    assert status["problems"] == ["crasher FATAL"]
    text = daemon.cli("zephserver-status")
    assert text.returncode == 5
    assert "degraded: crasher FATAL" in text.stdout
    assert daemon.cli("zephserver-stop").returncode == 0
    daemon.wait_exit(10)

    detached = run_cli("zephserver-start", "--settings", str(settings), "--daemon")
    try:
        assert detached.returncode == 5, detached.stderr
        assert "(degraded: crasher FATAL)" in detached.stdout
    finally:
        assert run_cli("zephserver-stop", "--settings", str(settings)).returncode == 0
