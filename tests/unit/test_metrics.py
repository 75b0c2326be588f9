"""Event metrics counted in the daemon's own tables (zephserver/metrics.py): exported as
prometheus_client's own Counter and Histogram would be, and prometheus_client loaded only
by a scrape."""

import subprocess
import sys
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from tests.support.daemon import REPO
from zephserver import metrics

pytestmark = pytest.mark.timeout(30)


class _Families:
    def __init__(self, *events) -> None:
        self.events = events

    def collect(self):
        return [e.family() for e in self.events]


def text(*events) -> list[str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(*events))
    return generate_latest(registry).decode().splitlines()


def reference(registry: CollectorRegistry) -> list[str]:
    """What prometheus_client's own metrics export, without the *_created series (the
    daemon turns those off)."""
    return [line for line in generate_latest(registry).decode().splitlines()
            if "_created" not in line]


def test_counters_and_histograms_export_what_prometheus_clients_own_would():
    registry = CollectorRegistry()
    theirs_spawns = Counter("t_spawns", "Spawns.", ["app"], registry=registry)
    theirs_trims = Counter("t_trims", "Trims.", registry=registry)
    theirs_wait = Histogram("t_wait_seconds", "Wait.", buckets=metrics.WAIT_BUCKETS,
                            registry=registry)
    spawns = metrics.EventCounter("t_spawns", "Spawns.", ["app"])
    trims = metrics.EventCounter("t_trims", "Trims.")
    wait = metrics.EventHistogram("t_wait_seconds", "Wait.", metrics.WAIT_BUCKETS)
    for app, n in (("solver", 3), ("viz", 1), ("solver", 2)):
        spawns.labels(app).inc(n)
        theirs_spawns.labels(app).inc(n)
    trims.inc()
    theirs_trims.inc()
    for seconds in (0.001, 0.01, 0.05, 0.7, 5, 5, 86400, 10 ** 6):  # on bounds, past all
        wait.observe(seconds)
        theirs_wait.observe(seconds)
    assert text(spawns, trims, wait) == reference(registry)
    assert spawns.value("solver") == 5
    assert trims.value() == 1


def test_a_counter_refuses_to_go_down_or_the_wrong_labels():
    exits = metrics.EventCounter("t_exits", "Exits.", ["kind", "outcome"])
    with pytest.raises(ValueError, match="only goes up"):
        exits.labels("batch", "failed").inc(-1)
    with pytest.raises(ValueError, match="has labels"):
        exits.labels("batch")
    with pytest.raises(ValueError, match="count with labels"):
        exits.inc()
    assert exits.value("batch", "failed") == 0


def test_counts_from_many_threads_are_all_kept():
    spawns = metrics.EventCounter("t_spawns", "Spawns.", ["app"])
    wait = metrics.EventHistogram("t_wait_seconds", "Wait.", metrics.WAIT_BUCKETS)

    def count():
        for _ in range(5000):
            spawns.labels("solver").inc()
            wait.observe(0.2)

    threads = [threading.Thread(target=count) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert spawns.value("solver") == 20000
    assert "t_wait_seconds_count 20000.0" in text(wait)


def test_counting_loads_no_prometheus_client_and_a_scrape_does():
    probe = ("import sys\n"
             "from zephserver import metrics\n"
             "metrics.SPAWNS.labels('solver').inc()\n"
             "metrics.QUEUE_WAIT.observe(0.2)\n"
             "before = 'prometheus_client' in sys.modules\n"
             "body, kind = metrics.exposition(metrics.StateCollector(list))\n"
             "print(before, 'prometheus_client' in sys.modules, kind.split(';')[0])\n"
             "print(body.decode())\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          cwd=REPO, timeout=20, check=True)
    first, *body = done.stdout.splitlines()
    assert first == "False True text/plain"
    assert 'zephserver_spawns_total{app="solver"} 1.0' in body
    assert "zephserver_queue_wait_seconds_count 1.0" in body
    assert any(line.startswith("process_resident_memory_bytes ") for line in body)
