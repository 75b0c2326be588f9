"""Queue manager: what this node offers (cores, memory, licences) and the scheduling
policy over it.

The job manager asks ``plan`` after every event that frees or needs resources (submit,
exit, cancel, hold/release, update). This service's own thread is the slow safety tick:
it re-reads licence counts that come from a command (e.g. a licence server query) and
asks the job manager to plan again when they changed, and at every tick regardless.
"""

import contextlib
import logging
import os
import re
import subprocess
import threading
from collections.abc import Iterable
from typing import Any

from zephserver.infra.service import Service
from zephserver.launch.scheduler import Limits, Plan, Pool, Running, Waiting, plan

log = logging.getLogger(__name__)


def machine_memory_mib() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)


def licence_count(command: list[str], timeout: float = 10.0) -> int | None:
    """The first integer a licence command prints, or None if it failed."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("licence command %s failed: %s", command[0], exc)
        return None
    m = re.search(r"-?\d+", out.stdout)
    if out.returncode != 0 or m is None:
        log.warning("licence command %s: exit %d, no count in its output", command[0],
                    out.returncode)
        return None
    return max(0, int(m.group()))


class QueueManagerService(Service):
    name = "queue"
    announces_ready = True
    reloadable = ("RESOURCES", "QUEUE_USER_LIMITS", "QUEUE_RESERVE_AFTER",
                  "QUEUE_BACKFILL_DEPTH", "QUEUE_TICK")

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._capacity = Pool()
        self._commands: dict[str, list[str]] = {}

    def main(self) -> None:
        assert self.ctx is not None
        self._configure(self.ctx.settings)
        self._refresh_licences()
        self.ctx.ready()
        while not self._disabled.wait(self.tick):
            self._refresh_licences()
            with contextlib.suppress(Exception):
                self.ctx.get("jobs").tick()

    def _configure(self, s: Any) -> None:
        res = s.RESOURCES
        self.limits = Limits(s.QUEUE_USER_LIMITS.get("running", 0),
                             s.QUEUE_USER_LIMITS.get("cores", 0))
        self.reserve_after = s.QUEUE_RESERVE_AFTER
        self.depth = s.QUEUE_BACKFILL_DEPTH
        self.tick = s.QUEUE_TICK
        fixed = {k: v for k, v in res.get("licenses", {}).items() if isinstance(v, int)}
        commands = {k: v["command"] for k, v in res.get("licenses", {}).items()
                    if isinstance(v, dict)}
        with self._lock:
            # a licence still counted by its command keeps its last count until re-read
            known = {k: self._capacity.licenses.get(k, 0) for k in commands}
            self._commands = commands
            self._capacity = Pool(int(res.get("cores") or os.cpu_count() or 1),
                                  int(res.get("memory") or machine_memory_mib()),
                                  {**fixed, **known})

    def reload(self, settings: Any) -> None:
        """New capacity, limits and policy; the job manager plans again with them."""
        self._configure(settings)
        self._kick()

    def _refresh_licences(self) -> bool:
        changed = False
        for name, command in self._commands.items():
            count = licence_count(command)
            if count is None:
                continue
            with self._lock:
                if self._capacity.licenses.get(name) != count:
                    log.info("licences %s: %d available", name, count)
                    self._capacity.licenses[name] = count
                    changed = True
        if changed:
            self._kick()
        return changed

    def _kick(self) -> None:
        assert self.ctx is not None
        # The job manager may not be running (yet): it plans when it starts anyway.
        with contextlib.suppress(Exception):
            self.ctx.get("jobs").kick()

    # -- API (any thread) -----------------------------------------------------------------

    def capacity(self) -> Pool:
        with self._lock:
            return self._capacity.copy()

    def never_fits(self, needs: dict) -> tuple[str, str] | None:
        """(resource, why) if a job needing ``needs`` could never run on this node; a
        licence counted by a command may grow, so it is never refused for its count."""
        with self._lock:
            capacity = self._capacity.copy()
            dynamic = set(self._commands)
        for key in ("cores", "memory"):
            if needs[key] > getattr(capacity, key):
                return key, f"needs {needs[key]} {key}; this node has {getattr(capacity, key)}"
        for name, count in needs["licenses"].items():
            if name not in capacity.licenses:
                return name, f"needs {name} licences; none are configured"
            if name not in dynamic and count > capacity.licenses[name]:
                return name, (f"needs {count} {name} licence(s); "
                              f"{capacity.licenses[name]} configured")
        return None

    def plan(self, ordered: Iterable[Waiting], running: Iterable[Running], now: float) -> Plan:
        """Which queued jobs start now (``ordered``: QUEUED jobs in queue order)."""
        window = []
        for i, job in enumerate(ordered):
            if i >= self.depth:
                break
            window.append(job)
        return plan(window, running, self.capacity(), self.limits, now, self.reserve_after)
