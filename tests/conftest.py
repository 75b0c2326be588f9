import threading

import pytest

from tests.support.jobs import remove_groups, zephserver_groups


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Fail a test that leaves non-daemon threads running (services, task pools)."""
    before = set(threading.enumerate())
    yield
    # Playwright's own executor threads ("asyncio_N") live as long as a browser module's
    # Playwright and are joined when it stops.
    leaked = [t for t in threading.enumerate()
              if t not in before and t.is_alive() and not t.daemon
              and not t.name.startswith("asyncio_")]
    for t in leaked:
        t.join(2.0)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"test leaked threads: {still}"


@pytest.fixture(autouse=True, scope="session")
def no_leftover_cgroups():
    """The cgroup folders the suite's daemons made and left (a killed daemon's, a job
    still running when its module stopped the daemon) go at the end, with what runs in
    them."""
    before = zephserver_groups()
    yield
    for top in zephserver_groups() - before:
        remove_groups(top)
