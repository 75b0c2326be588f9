import threading
import time

import pytest

from tests.support import services
from zephserver.config import settings_from_values
from zephserver.errors import HaltServer, ServiceUnavailable
from zephserver.infra.service import Service
from zephserver.infra.service_manager import ServiceManager, get_service

pytestmark = pytest.mark.integration
SUPPORT = "tests.support.services"


def make_manager(tmp_path, names, **values):
    values.setdefault("SERVICE_BACKOFF_INITIAL", 0.02)
    values.setdefault("SERVICE_MAX_RETRIES", 3)
    settings = settings_from_values(DATA_DIR=str(tmp_path),
                                    SERVICE_LIST=[f"{SUPPORT}/{n}" for n in names], **values)
    return ServiceManager(settings)


def wait_state(manager, name, state, timeout=5.0):
    runner = manager.runner(name)
    deadline = time.monotonic() + timeout
    with manager.cond:
        while runner.state != state:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{name} is {runner.state}, not {state}")
            manager.cond.wait(remaining)


def test_start_get_and_stop(tmp_path):
    """Services start, are reachable by name or path, and stop in reverse order."""
    manager = make_manager(tmp_path, ["Trivial0", "Plain"])
    manager.start()
    try:
        assert manager.wait_started(5) == []
        assert isinstance(get_service("trivial0"), Service)
        assert isinstance(get_service(f"{SUPPORT}/Plain"), services.Plain)
        assert manager.states() == {"trivial0": "RUNNING", f"{SUPPORT}/Plain": "RUNNING"}
    finally:
        assert manager.stop() == []
    assert set(manager.states().values()) == {"STOPPED"}
    with pytest.raises(ServiceUnavailable):
        get_service("trivial0")


def test_requirements_start_first(tmp_path):
    """A service listed before what it requires still starts after it."""
    manager = make_manager(tmp_path, ["Dependent", "Trivial0"])
    assert [r.name for r in manager.runners] == ["trivial0", "dependent"]
    manager.start()
    try:
        assert manager.wait_started(5) == []
        assert manager.runner("dependent").tracker.restarts == 0
    finally:
        manager.stop()


def test_crash_restarts_with_backoff_then_fatal(tmp_path):
    """A crashing service is retried with growing delays and ends FATAL; others keep running."""
    manager = make_manager(tmp_path, ["Crasher", "Trivial1"])
    manager.start()
    try:
        wait_state(manager, "crasher", "FATAL")
        crasher = manager.runner("crasher")
        assert crasher.tracker.restarts == 3
        assert "crasher always crashes" in crasher.last_error
        assert manager.runner("trivial1").state == "RUNNING"
        with pytest.raises(ServiceUnavailable, match="FATAL"):
            manager.get("crasher")
        # restart-service works from FATAL with the count reset
        status = manager.restart_service("crasher")
        assert status["state"] in ("STARTING", "RUNNING", "BACKOFF")
        wait_state(manager, "crasher", "FATAL")
    finally:
        manager.stop()


def test_crash_restart_is_event_driven(tmp_path):
    """With a zero first backoff step, a crashed service runs again within milliseconds."""

    class OnceCrasher(Service):
        name = "once"
        runs: list[float] = []

        def main(self):
            self.runs.append(time.monotonic())
            if len(self.runs) == 1:
                raise RuntimeError("first run crashes")
            super().main()

    services.OnceCrasher = OnceCrasher
    try:
        manager = make_manager(tmp_path, ["OnceCrasher"], SERVICE_BACKOFF_INITIAL=0)
        manager.start()
        try:
            deadline = time.monotonic() + 5
            while len(OnceCrasher.runs) < 2 and time.monotonic() < deadline:
                time.sleep(0.001)
            assert len(OnceCrasher.runs) == 2
            assert OnceCrasher.runs[1] - OnceCrasher.runs[0] < 0.5
        finally:
            manager.stop()
    finally:
        del services.OnceCrasher


def test_stubborn_service_is_reported_and_stop_continues(tmp_path):
    """A service ignoring disable() is named as a straggler; the rest still stop."""
    manager = make_manager(tmp_path, ["Trivial2", "Stubborn"])
    manager.start()
    try:
        manager.wait_started(5)
        started = time.monotonic()
        assert manager.stop() == ["stubborn"]
        assert time.monotonic() - started < 3
        assert manager.runner("trivial2").state == "STOPPED"
        assert manager.runner("stubborn").state == "STOPPING"
    finally:
        services.STUBBORN_RELEASE.set()
        manager.runner("stubborn").thread.join(5)
        services.STUBBORN_RELEASE.clear()


def test_ready_announcing_service_is_starting_until_ready(tmp_path, monkeypatch):
    """A service with announces_ready stays STARTING until it calls ctx.ready()."""
    monkeypatch.setenv("ZEPH_TEST_READY_DELAY", "0.3")
    manager = make_manager(tmp_path, ["SlowReady"])
    manager.start()
    try:
        assert manager.runner("slowready").state == "STARTING"
        assert manager.wait_started(5) == []
        assert manager.runner("slowready").state == "RUNNING"
    finally:
        manager.stop()


def test_critical_fatal_halts_boot(tmp_path):
    """A critical service going FATAL during boot raises HaltServer."""

    class CriticalCrasher(services.Crasher):
        name = "critical"
        critical = True
        # It never says it is ready, so it cannot count as started in the instant between
        # entering main() and raising (that race made this test fail once in CI).
        announces_ready = True

    services.CriticalCrasher = CriticalCrasher
    try:
        manager = make_manager(tmp_path, ["CriticalCrasher"], SERVICE_MAX_RETRIES=0)
        manager.start()
        try:
            with pytest.raises(HaltServer, match="critical service critical failed"):
                manager.wait_started(5)
        finally:
            manager.stop()
    finally:
        del services.CriticalCrasher


def test_get_service_is_safe_from_many_threads(tmp_path):
    """get_service answers from any thread while services run."""
    manager = make_manager(tmp_path, ["Trivial3"])
    manager.start()
    try:
        manager.wait_started(5)
        found = []
        threads = [threading.Thread(target=lambda: found.append(get_service("trivial3")))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(found) == 8
    finally:
        manager.stop()
