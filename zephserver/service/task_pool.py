"""The task threads: a fixed set of workers and a bounded queue, fair between users.

Under the GIL, more than about one runnable thread per core only adds contention (the
event loop thread then waits for the GIL on every I/O). So a new job wakes a worker at
once only while fewer than ``eager`` workers are busy; otherwise a busy worker takes it
when it finishes. Workers blocked in long tasks must not starve the queue: an idle
"standby" worker wakes when the oldest job has waited ``stall`` seconds while some
running task has taken at least that long, and takes it.

Fairness: each job names who asked (a user, or a connection for an anonymous client).
One asker holds at most ``per_key`` workers and ``per_key_queued`` places in the queue,
and workers take the askers' jobs in turn, so a user flooding slow calls leaves the
other workers, and their turn, to everyone else.
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
        # asker -> its waiting jobs (with when each was queued); iteration order is the
        # askers' turn, and an asker served goes to the back
        self._queues: collections.OrderedDict[Hashable, collections.deque[tuple[Job, float]]] \
            = collections.OrderedDict()
        self._queued = 0
        self._queue_size = queue_size
        self.per_key = max(1, int(size * share))
        self.per_key_queued = max(1, int(queue_size * share))
        self._eager = max(1, min(size, eager or os.cpu_count() or 2))
        self._stall = stall
        self._cond = threading.Condition(threading.Lock())
        self._running: dict[int, tuple[float, Hashable]] = {}  # worker -> (since, asker)
        self._busy: collections.Counter[Hashable] = collections.Counter()
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
            queue = self._queues.get(key)
            if self._stopping or self._queued >= self._queue_size or (
                    queue is not None and len(queue) >= self.per_key_queued):
                return False
            if queue is None:
                queue = self._queues[key] = collections.deque()
            queue.append((job, time.monotonic()))
            self._queued += 1
            if wake:
                self._wake()
        return True

    def wake(self) -> None:
        with self._cond:
            self._wake()

    def load(self) -> tuple[int, int]:
        """(threads running a task, tasks waiting)."""
        with self._cond:
            return len(self._running), self._queued

    def _wake(self) -> None:
        # wake a worker for each queued job, up to ``eager`` runnable, or one standby
        idle = self._eager - len(self._running)
        if idle > 0:
            self._cond.notify(min(idle, self._queued))
        elif not self._standby:
            self._cond.notify()

    def _next(self, now: float) -> tuple[Hashable, Job] | None:
        """The next job a worker may take now: the first asker in turn under its share."""
        if not self._queued:
            return None
        if len(self._running) >= self._eager:
            oldest = min(q[0][1] for q in self._queues.values())
            if now - oldest < self._stall or \
                    now - min(since for since, _ in self._running.values()) < self._stall:
                return None
        for key, queue in self._queues.items():
            if self._busy[key] < self.per_key:
                job, _ = queue.popleft()
                self._queued -= 1
                if queue:
                    self._queues.move_to_end(key)
                else:
                    del self._queues[key]
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
                        self._busy[key] += 1
                        break
                    if self._stopping and not self._queued:
                        return
                    if self._queued and not self._standby:
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
                    if key in self._queues:  # its next job may go now
                        self._wake()

    def drain(self) -> list[Job]:
        """Jobs still queued (never started), removed from the queue."""
        with self._cond:
            jobs = [job for queue in self._queues.values() for job, _ in queue]
            self._queues.clear()
            self._queued = 0
        return jobs

    def stop(self, timeout: float) -> list[str]:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)
        return [t.name for t in self._threads if t.is_alive()]
