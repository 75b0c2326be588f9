"""Every metric the daemon exports, declared once (the reference page and the dashboard
test read this catalogue).

Events are counted where they happen (``SPAWNS.labels(app).inc()``). States (jobs by
state, services, peers, pool use) are read when Prometheus scrapes: a service that has
some offers ``metric_families()``, which returns ``StateGauge.family(...)`` values. All
of it is put in the text format by ``prometheus_client``; nothing is hand-written.

The daemon counts events in its own small tables and imports ``prometheus_client``
only when it is first scraped: its exposition loads ``http.server``, ``urllib`` and
``wsgiref`` with it, 1.3 MiB of a fresh daemon that nobody may ever scrape.
"""

import bisect
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

# Seconds, from a fast ping to a long queue wait.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                   2.5, 5, 10, 30)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)


class _Count:
    """One series of an EventCounter (the counter's label values fixed)."""

    __slots__ = ("_lock", "value")

    def __init__(self, lock: threading.Lock) -> None:
        self._lock, self.value = lock, 0.0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError(f"a counter only goes up (asked to add {amount})")
        with self._lock:
            self.value += amount


class EventCounter:
    """Events counted as they happen: ``inc()``, or ``labels(*values).inc()`` for a
    counter with labels. Exported as ``NAME_total``."""

    kind = "counter"

    def __init__(self, name: str, doc: str, labelnames: Iterable[str] = ()) -> None:
        self.name, self.doc, self.labelnames = name, doc, tuple(labelnames)
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], _Count] = {}  # by label values
        self._unlabelled = None if self.labelnames else self.labels()

    def labels(self, *values: Any) -> _Count:
        key = tuple(str(v) for v in values)
        series = self._series.get(key)
        if series is None:
            if len(key) != len(self.labelnames):
                raise ValueError(f"{self.name} has labels {self.labelnames}, given {key}")
            with self._lock:
                series = self._series.setdefault(key, _Count(self._lock))
        return series

    def inc(self, amount: float = 1) -> None:
        if self._unlabelled is None:
            raise ValueError(f"{self.name} has labels {self.labelnames}: count with labels()")
        self._unlabelled.inc(amount)

    def value(self, *values: Any) -> float:
        series = self._series.get(tuple(str(v) for v in values))
        return 0.0 if series is None else series.value

    def family(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(self.name, self.doc, labels=list(self.labelnames))
        with self._lock:
            counts = sorted((key, series.value) for key, series in self._series.items())
        for key, n in counts:
            family.add_metric(list(key), n)
        return family


def _cumulative(bounds: list[str], counts: list[float]) -> list[tuple[str, float]]:
    """A histogram's buckets as the text format has them: each bound (``le``) with the
    count of observations up to it, from the count of each bucket alone."""
    total, buckets = 0.0, []
    for bound, n in zip(bounds, counts, strict=True):
        total += n
        buckets.append((bound, total))
    return buckets


class EventHistogram:
    """Durations observed as they happen (``observe(seconds)``), in cumulative buckets.
    Exported as ``NAME_bucket``, ``NAME_sum`` and ``NAME_count``."""

    kind = "histogram"
    labelnames: tuple[str, ...] = ()

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...]) -> None:
        self.name, self.doc, self.buckets = name, doc, buckets
        self._lock = threading.Lock()
        self._counts = [0] * (len(buckets) + 1)  # the last: past every bound (+Inf)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value

    def family(self) -> Any:
        from prometheus_client.core import HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        with self._lock:
            counts, total = list(self._counts), self._sum
        family = HistogramMetricFamily(self.name, self.doc, labels=[])
        family.add_metric([], _cumulative([*map(floatToGoString, self.buckets), "+Inf"],
                                          counts), total)
        return family


SPAWNS = EventCounter("zephserver_spawns", "Processes started (batch jobs, sessions, agent "
                      "processes), by app.", ["app"])
JOB_EXITS = EventCounter("zephserver_job_exits", "Jobs that ended, by kind and outcome "
                         "(their final state).", ["kind", "outcome"])
QUEUE_WAIT = EventHistogram("zephserver_queue_wait_seconds", "Time a job waited in the "
                            "queue before it was started.", WAIT_BUCKETS)
SUBMIT_TO_RUNNING = EventHistogram("zephserver_submit_to_running_seconds", "Time from a "
                                   "job's submission to RUNNING.", WAIT_BUCKETS)
AGENT_RESTARTS = EventCounter("zephserver_agent_restarts", "Agent processes restarted "
                              "after they ended.")
LOG_BYTES = EventCounter("zephserver_log_bytes_written", "Bytes written to logs: the "
                         "daemon's own (daemon) and the jobs' output, counted when a job "
                         "ends (jobs).", ["log"])
SLURM_COMMANDS = EventCounter("zephserver_slurm_commands", "Slurm commands run (sbatch, "
                              "squeue, scontrol, sacct, scancel), by command: squeue once "
                              "per tick whatever the number of jobs.", ["command"])
MEMORY_TRIMS = EventCounter("zephserver_memory_trims", "Times freed memory was given back "
                            "to the system after a burst of work ended (malloc_trim).")


@dataclass(frozen=True)
class StateGauge:
    """A gauge read at scrape time: ``family(samples)`` with ``(label values, value)``."""

    name: str
    doc: str
    labels: tuple[str, ...] = ()

    def family(self, samples: Iterable[tuple[tuple[str, ...], float]]) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(self.name, self.doc, labels=list(self.labels))
        for values, value in samples:
            family.add_metric(list(values), value)
        return family


class RequestCounts:
    """JSON-RPC requests counted on the hot path for the price of a lock and a bisect
    (a labelled prometheus_client Counter and Histogram cost several times that per
    request), turned into families when Prometheus scrapes."""

    # (name, type, help, labels) of the two families it makes
    REQUESTS = ("zephserver_rpc_requests", "counter", "JSON-RPC requests, by method and "
                "outcome (ok, or the error code).", ("method", "outcome"))
    DURATION = ("zephserver_rpc_duration_seconds", "histogram", "Time from a JSON-RPC "
                "request to its answer, by method.", ("method",))

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        # Each thread counts in tables of its own (no lock on the hot path); a scrape
        # adds them up.
        self._mine = threading.local()
        self._tables: list[tuple[dict, dict]] = []
        self._tables_lock = threading.Lock()

    def _own(self) -> tuple[dict, dict]:
        tables = getattr(self._mine, "tables", None)
        if tables is None:
            tables = self._mine.tables = ({}, {})
            with self._tables_lock:
                self._tables.append(tables)
        return tables

    def add(self, method: str, outcome: str, seconds: float) -> None:
        counts, durations = self._own()
        key = (method, outcome)
        counts[key] = counts.get(key, 0) + 1
        row = durations.get(method)
        if row is None:
            row = durations[method] = [0.0] * (len(self.buckets) + 2)
        row[bisect.bisect_left(self.buckets, seconds)] += 1
        row[-1] += seconds

    def families(self) -> list:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        counts: dict[tuple[str, str], int] = {}
        durations: dict[str, list[float]] = {}
        with self._tables_lock:
            tables = list(self._tables)
        for own_counts, own_durations in tables:
            for key, n in list(own_counts.items()):
                counts[key] = counts.get(key, 0) + n
            for method, row in list(own_durations.items()):
                total = durations.setdefault(method, [0.0] * len(row))
                for i, n in enumerate(list(row)):
                    total[i] += n
        name, _, doc, labels = self.REQUESTS
        requests = CounterMetricFamily(name, doc, labels=list(labels))
        for (method, outcome), n in sorted(counts.items()):
            requests.add_metric([method, outcome], n)
        name, _, doc, labels = self.DURATION
        duration = HistogramMetricFamily(name, doc, labels=list(labels))
        bounds = [*map(str, self.buckets), "+Inf"]
        for method, row in sorted(durations.items()):
            duration.add_metric([method], _cumulative(bounds, row[:-1]), row[-1])
        return [requests, duration]


JOBS = StateGauge("zephserver_jobs", "Jobs of this node by kind, app and state.",
                  ("kind", "app", "state"))
SESSIONS = StateGauge("zephserver_sessions", "Interactive sessions of this node by state.",
                      ("state",))
AGENT_PROCESSES = StateGauge("zephserver_agent_processes", "Agent processes of this node "
                             "by state.", ("state",))
QUEUE_LENGTH = StateGauge("zephserver_queue_length", "Jobs waiting in this node's queue "
                          "(QUEUED and HELD).")
WEBSOCKETS = StateGauge("zephserver_websocket_connections", "Open WebSocket connections.")
TASK_POOL_BUSY = StateGauge("zephserver_task_pool_busy", "Task threads running a task.")
TASK_POOL_QUEUED = StateGauge("zephserver_task_pool_queued", "Tasks waiting for a thread.")
SERVICE_STATE = StateGauge("zephserver_service_state", "1 for each service's current "
                           "state (RUNNING, STARTING, BACKOFF, FATAL, ...).",
                           ("service", "state"))
SERVICE_RESTARTS = StateGauge("zephserver_service_restarts", "Times each service was "
                              "restarted after a crash.", ("service",))
PEERS_UP = StateGauge("zephserver_cluster_peers_up", "Cluster peers heard from recently.")
PEER_UP = StateGauge("zephserver_cluster_peer_up", "1 if the peer is up, 0 if down.",
                     ("peer",))
MESSAGES_BUFFERED = StateGauge("zephserver_cluster_messages_buffered", "Messages to a peer "
                               "not yet acknowledged.", ("peer",))
MEMORY_TRIM_PENDING = StateGauge("zephserver_memory_trim_pending", "1 while a give-back of "
                                 "freed memory waits for its interval.")
MESSAGES_LOST = StateGauge("zephserver_cluster_messages_lost", "Messages to a peer given up "
                           "on (buffer full or too old), since the start.", ("peer",))
EVENTS = (SPAWNS, JOB_EXITS, QUEUE_WAIT, SUBMIT_TO_RUNNING, AGENT_RESTARTS, LOG_BYTES,
          SLURM_COMMANDS, MEMORY_TRIMS)
STATE_GAUGES = (JOBS, SESSIONS, AGENT_PROCESSES, QUEUE_LENGTH, WEBSOCKETS, TASK_POOL_BUSY,
                TASK_POOL_QUEUED, SERVICE_STATE, SERVICE_RESTARTS, PEERS_UP, PEER_UP,
                MESSAGES_BUFFERED, MESSAGES_LOST, MEMORY_TRIM_PENDING)


def catalogue() -> list[tuple[str, str, str]]:
    """(family name, type, help) of every zephserver family; a counter's samples end in
    ``_total``, a histogram's in ``_bucket``, ``_sum`` and ``_count``."""
    found = [(metric.name, metric.kind, metric.doc) for metric in EVENTS]
    found += [(g.name, "gauge", g.doc) for g in STATE_GAUGES]
    found += [family[:3] for family in (RequestCounts.REQUESTS, RequestCounts.DURATION)]
    return sorted(found)


def labels() -> dict[str, tuple[str, ...]]:
    """The labels of every zephserver family, by family name."""
    found = {g.name: g.labels for g in STATE_GAUGES}
    found.update({m.name: m.labelnames for m in EVENTS})
    found.update({f[0]: f[3] for f in (RequestCounts.REQUESTS, RequestCounts.DURATION)})
    return found


def sample_names(name: str, kind: str) -> list[str]:
    """The series names a family exports."""
    if kind == "counter":
        return [f"{name}_total"]
    if kind == "histogram":
        return [f"{name}_bucket", f"{name}_sum", f"{name}_count"]
    return [name]


class StateCollector:
    """Asks ``sources()`` (the services' ``metric_families``) at each scrape."""

    def __init__(self, sources: Callable[[], Iterable[Callable[[], Iterable]]]) -> None:
        self.sources = sources

    def collect(self) -> Iterable:
        for source in self.sources():
            yield from source()


class _Scrape:
    """What one scrape exports: this process (its memory, fds, CPU, Python), the events
    counted since the start, and the states read now."""

    def __init__(self, states: StateCollector) -> None:
        self.states = states

    def collect(self) -> Iterable:
        from prometheus_client import PlatformCollector, ProcessCollector

        yield from ProcessCollector(registry=None).collect()
        yield from PlatformCollector(registry=None).collect()
        for metric in EVENTS:
            yield metric.family()
        yield from self.states.collect()


def exposition(collector: StateCollector) -> tuple[bytes, str]:
    """The text format (and its content type): this process's event metrics and the
    states read now."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scrape(collector))
    return generate_latest(registry), CONTENT_TYPE_LATEST
