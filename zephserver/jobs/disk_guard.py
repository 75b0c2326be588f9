"""What keeps jobs from filling the disk: a low-space watermark on DATA_DIR (new work
waits, with the reason in the queue, while free space is under DATA_DIR_MIN_FREE) and a
cap on each job's log (its app's ``max_output``, else JOB_MAX_OUTPUT): a job whose log
passes it is stopped, and told so in its log and its record.

A thread of its own (``DiskWatch``) looks at a log when it is written, at most every
``LOOK``, and freezes (SIGSTOP) a job the moment its log passes its cap, so a job printing flat out
passes it by at most what it writes in that time; the job manager then stops it
politely (TERM, grace, KILL, the job continued so that it can handle TERM).
"""

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from zephserver.launch.inotify import IN_MODIFY, PathWatch
from zephserver.launch.states import JobState
from zephserver.launch.wakeup import WakeableSelector

LOOK = 0.02  # seconds between looks at the running jobs' logs
IDLE_LOOK = 0.5  # seconds between looks at free space while no log is written
MIB = 1024 * 1024
log = logging.getLogger(__name__)


class DiskGuard:
    def __init__(self, data_dir: str, min_free: int, max_output: int) -> None:
        self.data_dir = data_dir
        self.min_free = min_free  # bytes; 0: no watermark
        self.max_output = max_output  # bytes; 0: no default cap
        self.low = ""  # why new work waits ("": it need not)

    def check_space(self) -> bool:
        """Look at DATA_DIR's free space; True if ``low`` changed."""
        before = self.low
        self.low = ""
        if self.min_free:
            try:
                st = os.statvfs(self.data_dir)
            except OSError:
                return before != self.low
            free = st.f_bavail * st.f_frsize
            if free < self.min_free:
                self.low = (f"waiting: DATA_DIR {self.data_dir} has {free / MIB:.0f} MiB free, "
                            f"under DATA_DIR_MIN_FREE ({self.min_free / MIB:.0f} MiB)")
        return before != self.low

    def cap(self, app: Any) -> int:
        """The output cap of a job of ``app`` (0: none)."""
        own = getattr(app, "max_output", None) if app is not None else None
        return own or self.max_output

    def over(self, jobs: Iterable[tuple[Any, Any]]) -> list[tuple[Any, int]]:
        """Those of ``(job, app)`` whose log has passed its cap: (job, cap)."""
        found = []
        for job, app in jobs:
            limit = self.cap(app)
            if not limit or job.stop_requested or not job.log_path:
                continue
            with contextlib.suppress(OSError):
                if os.stat(job.log_path).st_size > limit:
                    found.append((job, limit))
        return found

    @staticmethod
    def tell(job: Any, limit: int) -> None:
        """Say in the job's own log why it stops (its reader sees it last)."""
        with contextlib.suppress(OSError), open(job.log_path, "ab") as log:
            log.write(f"\n[zephserver: this job's output passed its limit of {limit} bytes "
                      "(max_output); the job is stopped]\n".encode())


class DiskWatch(threading.Thread):
    """Looks at free space and at the running jobs' log sizes, off the job manager's
    thread: ``over(job, cap)`` once per job that passes its cap, ``space_changed()``
    when DATA_DIR goes under or back over its watermark.

    It sleeps while no log is written (inotify wakes it), so quiet jobs cost nothing,
    and looks at most every LOOK while some job prints or starts."""

    def __init__(self, guard: DiskGuard, jobs: Callable[[], list[tuple[Any, Any]]],
                 over: Callable[[Any, int], None], space_changed: Callable[[], None]) -> None:
        super().__init__(name="zeph-disk-watch", daemon=True)
        self.guard, self.jobs, self.over, self.space_changed = guard, jobs, over, space_changed
        self._watch = PathWatch(IN_MODIFY)
        self._selector = WakeableSelector()
        self._selector.register(self._watch.fd, "written")
        self._stopping = False
        self._told: set[int] = set()

    def poke(self) -> None:
        """A job started: watch its log now (any thread)."""
        self._selector.wake()

    def stop(self) -> None:
        self._stopping = True
        self._selector.wake()

    def run(self) -> None:
        try:
            while not self._stopping:
                self._selector.select(IDLE_LOOK)
                if self._stopping:
                    return
                try:
                    self._look()
                except Exception:  # a look that fails must not end the watch
                    log.exception("disk watch: a look failed")
                # the next look in LOOK at the soonest, whatever is written or started
                # meanwhile (a burst of 1,000 short jobs: 50 looks a second, not 1,000)
                time.sleep(LOOK)
        finally:
            self._selector.close()
            self._watch.close()

    def _look(self) -> None:
        if self.guard.check_space():
            self.space_changed()
        jobs = {job.log_path: (job, app) for job, app in self.jobs() if job.log_path}
        for path in self._watch.paths() - jobs.keys():
            self._watch.remove(path)
        new = {path for path in jobs if path not in self._watch}
        for path in new:
            self._watch.add(path)
        changed = self._watch.changed()
        if changed is None:  # the kernel's queue overflowed: look at every log
            changed = set(jobs)
        for job, limit in self.guard.over(jobs[p] for p in (changed | new) & jobs.keys()):
            if job.pk not in self._told:
                self._told.add(job.pk)
                self.over(job, limit)
        self._told &= {job.pk for job, _ in jobs.values()}


class DiskReactions:
    """Mixed into the job manager: what it does when the disk fills or frees, and when a
    job's output passes its cap (it provides guard, _active, post, stop, ...)."""

    guard: DiskGuard
    _active: dict
    _needs_plan: bool

    def _space_changed(self) -> None:
        if self.guard.low:
            log.warning("new work waits: %s", self.guard.low.removeprefix("waiting: "))
        else:
            log.info("DATA_DIR has room again: the queue goes on")
            self._needs_plan = True

    def _watched(self) -> list[tuple[Any, Any]]:  # the disk watch's thread
        return [(a.job, a.app) for a in list(self._active.values()) if a.job.pid]

    def _output_over(self, job: Any, limit: int) -> None:  # the disk watch's thread
        """Freeze it now (its output stops here), then stop it on the manager's thread."""
        with contextlib.suppress(OSError):
            self.executor_for(job).signal(job, signal.SIGSTOP)  # type: ignore[attr-defined]
        self.post(self._stop_for_output, job.pk, limit)  # type: ignore[attr-defined]

    def _stop_for_output(self, job_id: int, limit: int) -> None:
        active = self._active.get(job_id)
        if active is None or active.job.stop_requested:
            return
        DiskGuard.tell(active.job, limit)
        self.stop(active, JobState.FAILED, f"stopping: its output passed its limit of "  # type: ignore[attr-defined]
                  f"{limit} bytes (max_output)", "")
        with contextlib.suppress(OSError):  # (frozen: it must run to handle its TERM)
            self.executor_for(active.job).signal(active.job, signal.SIGCONT)  # type: ignore[attr-defined]
