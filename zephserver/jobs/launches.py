"""Starting what the queue chose: each batch given to its jobs' executor, and what each
start gave recorded (RUNNING with its pid, a session STARTING until it is ready, FAILED
with the reason, or handed to a scheduler that reports it later).

Where the keeper starts the jobs, the manager asks and goes on: the keeper's answers come
back through the inbox a chunk at a time, and meanwhile the manager records the exits
before them and plans the next batch, so the keeper spawns while the manager works rather
than each waiting on the other (short jobs, 5 interleaved passes: a median 0.53 of
sequential Popen waiting, 0.60 not). Until its start is recorded a job is held as launching
(``Active.launching``): the queue counts what it holds, and a stop asked meanwhile is
applied once it has a process.
"""

import functools
import logging
import signal
import time
from typing import Any

from zephserver.jobs.active import Active
from zephserver.jobs.executor import Handed
from zephserver.jobs.transition import now, transition
from zephserver.launch.process import Spawned, SpawnError
from zephserver.launch.states import JobState as J

log = logging.getLogger("zephserver.service.job_manager")


class Launches:
    """Mixed into the job manager (it provides executors, _active, post, change, ...)."""

    _active: dict
    _env: dict
    run: object  # this run of the service's main()

    @property
    def launching(self) -> bool:
        """Whether a start is not recorded yet (the keeper has not answered)."""
        return any(active.launching for active in self._active.values())

    def _launch(self, prepared: list[Any]) -> None:
        """Start jobs committed as STARTING: asked of the keeper, recorded as its answers
        come back through the inbox (``_launched``); elsewhere RUNNING (or FAILED) is
        committed a chunk at a time as the executor reports them."""
        # (answers that come for an earlier run of the service are not this one's)
        answered = functools.partial(self._launched, self.run)
        for name, executor in self.executors.items():
            batch = [job for job in prepared if self._executor_name(job) == name]
            if not batch:
                continue
            envs = [self._env.pop(job.pk) for job in batch]
            for job in batch:
                self._active[job.pk] = Active(job, self.apps.get(job.app), launching=True)
            launch_later = getattr(executor, "launch_later", None)
            if launch_later is None:
                chunks = executor.launch_in_chunks(batch, envs)
            elif launch_later(batch, envs, answered):
                continue
            else:  # no keeper (it was just asked for: not again, which may start one)
                chunks = iter([executor.launch_under_shim(batch, envs)])
            done = 0
            for started in chunks:
                chunk, done = batch[done:done + len(started)], done + len(started)
                self._group_commit(lambda c=chunk, r=started: self._record_starts(c, r))

    def _launched(self, run: object, jobs: list[Any], results: list[Any]) -> None:
        """The keeper's answers (its client's thread). Those asked by an earlier run of
        the service (it crashed and was started again) are dropped: that run's launches
        are re-adopted from their records by the new one (``_load``)."""
        if run is self.run:
            self.post(self._record_starts, jobs, results)

    def _record_starts(self, jobs: list[Any], results: list[Any]) -> None:
        for job, result in zip(jobs, results, strict=True):
            self.execute(self._started, (job, result), None)

    def _started(self, job: Any, result: Any) -> None:
        launching = self._active.get(job.pk)
        if launching is None:
            self._given_up_while_starting(job, result)
            return
        if not launching.launching:  # (re-adopted meanwhile: its record said what it is)
            return
        del self._active[job.pk]
        if isinstance(result, SpawnError):
            self.change(job, J.FAILED, str(result))
            self._needs_plan = True
            return
        if isinstance(result, Handed):
            self.handed(job, result.reason, extra=result.extra)
            return
        active = Active(job, launching.app, spawned_at=time.monotonic())
        self._active[job.pk] = active
        fields = dict(pid=result.pid, start_time=result.start_time, started=now())
        session = active.app.session if active.app is not None else None
        if session is not None:
            what = (f"its ready line {session.ready_line!r}" if session.ready_line
                    else f"port {job.extra['port']} to accept connections")
            self._record_spawn(job, f"waiting for {what} (up to {session.timeout:g}s)",
                               fields)
        else:
            self.change(job, J.RUNNING, "running", **fields)
        self.executor_for(job).watch(job, self._exit_callback(job.pk), result.popen)
        self._follow_for_parser(active)
        if self.disk_watch is not None:
            self.disk_watch.poke()
        if session is not None:
            self.interactive.started(active)
        else:
            self._arm_wall_time(job)
        if launching.stop_when_started is not None:  # asked while it was launching
            self.stop(active, *launching.stop_when_started)

    def _given_up_while_starting(self, job: Any, result: Any) -> None:
        """The cluster gave the job up (or moved it) while this node launched it: what
        started must not run on."""
        if isinstance(result, Spawned):
            log.warning("job %d: given up by the cluster while it started here; killing "
                        "pid %d", job.pk, result.pid, extra={"job": job.pk})
            job.pid = result.pid
            self.executor_for(job).signal(job, signal.SIGKILL)

    def _record_spawn(self, job: Any, reason: str, fields: dict) -> None:
        """A session's process runs but it is not ready: it stays STARTING, with its pid."""
        transition(job, None, reason, self.publish, **fields)
