"""The task threads: a fixed set of workers and a bounded queue, fair between users.

Under the GIL, more than about one runnable thread per core only adds contention (the
event loop thread then waits for the GIL on every I/O). So a new job wakes a worker at
once only while fewer than ``eager`` workers are busy; otherwise a busy worker takes it
when it finishes. Workers blocked in long tasks must not starve the queue: an idle
"standby" worker wakes when the oldest job has waited ``stall`` seconds while some
running task has taken at least that long, and takes it.

Fairness: each job names who asked (a user, or a connection for an anonymous client).
One asker holds at most ``per_key`` workers and ``per_key_queued`` places in the queue:
a worker takes the oldest job whose asker is under its share (almost always the head of
the queue), so a user flooding slow calls leaves the other workers to everyone else.
"""

import collections
import os
import threading
import time
from collections.abc import Callable, Hashable

Job = Callable[[], None]


class TaskPool:
    def __init__(self, size: int, queue_size: int, eager: int | None = None,
                 stall: float = 0.005, share: float = 1.0) -> None:
        """``share``: the part of the workers (and of the queue) one asker may hold."""
        self._jobs: collections.deque[tuple[Job, float, Hashable]] = collections.deque()
        self._queued: dict[Hashable, int] = {}  # jobs waiting, per asker
        self._queue_size = queue_size
        self.per_key = max(1, int(size * share))
        self.per_key_queued = max(1, int(queue_size * share))
        self._eager = max(1, min(size, eager or os.cpu_count() or 2))
        self._stall = stall
        self._cond = threading.Condition(threading.Lock())
        self._running: dict[int, tuple[float, Hashable]] = {}  # worker -> (since, asker)
        self._busy: dict[Hashable, int] = {}  # workers held, per asker
        self._standby = False
        self._stopping = False
        self._threads = [threading.Thread(target=self._work, args=(i,), name=f"zeph-task-{i}")
                         for i in range(size)]
        for t in self._threads:
            t.start()

    def submit(self, job: Job, wake: bool = True, key: Hashable = None) -> bool:
        """Queue ``job`` for asker ``key``; False when the queue (or the asker's part of
        it) is full, or the pool stopping. With ``wake=False`` no worker is woken until
        ``wake()`` (a caller queueing several jobs in a row wakes the workers once)."""
        with self._cond:
            if self._stopping or len(self._jobs) >= self._queue_size or \
                    self._queued.get(key, 0) >= self.per_key_queued:
                return False
            self._jobs.append((job, time.monotonic(), key))
            self._queued[key] = self._queued.get(key, 0) + 1
            if wake:
                self._wake()
        return True

    def wake(self) -> None:
        with self._cond:
            self._wake()

    def load(self) -> tuple[int, int]:
        """(threads running a task, tasks waiting)."""
        with self._cond:
            return len(self._running), len(self._jobs)

    def _wake(self) -> None:
        # wake a worker for each queued job, up to ``eager`` runnable, or one standby
        idle = self._eager - len(self._running)
        if idle > 0:
            self._cond.notify(min(idle, len(self._jobs)))
        elif not self._standby:
            self._cond.notify()

    def _next(self, now: float) -> tuple[Hashable, Job] | None:
        """The next job a worker may take now: the oldest whose asker is under its share."""
        if not self._jobs:
            return None
        if len(self._running) >= self._eager and (
                now - self._jobs[0][1] < self._stall
                or now - min(since for since, _ in self._running.values()) < self._stall):
            return None
        for i, (job, _, key) in enumerate(self._jobs):
            if self._busy.get(key, 0) < self.per_key:
                if i == 0:
                    self._jobs.popleft()
                else:
                    del self._jobs[i]
                self._queued[key] -= 1
                if not self._queued[key]:
                    del self._queued[key]
                return key, job
        return None  # every asker with work is at its share: they wait for their own

    def _work(self, index: int) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    taken = self._next(now)
                    if taken is not None:
                        key, job = taken
                        self._running[index] = (now, key)
                        self._busy[key] = self._busy.get(key, 0) + 1
                        break
                    if self._stopping and not self._jobs:
                        return
                    if self._jobs and not self._standby:
                        self._standby = True
                        self._cond.wait(self._stall)
                        self._standby = False
                    else:
                        self._cond.wait()
            try:
                job()
            finally:
                with self._cond:
                    del self._running[index]
                    self._busy[key] -= 1
                    if not self._busy[key]:
                        del self._busy[key]
                    if key in self._queued:  # its next job may go now
                        self._wake()

    def drain(self) -> list[Job]:
        """Jobs still queued (never started), removed from the queue."""
        with self._cond:
            jobs = [job for job, _, _ in self._jobs]
            self._jobs.clear()
            self._queued.clear()
        return jobs

    def stop(self, timeout: float) -> list[str]:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)
        return [t.name for t in self._threads if t.is_alive()]
