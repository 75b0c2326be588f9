"""The job manager's side of executors that report states themselves (Slurm).

Such an executor hands a job back at launch (``executor.Handed``: it stays STARTING,
"submitting"), then reports from its own threads: submitted and pending in its queue
(QUEUED, with its reason), running (RUNNING, the wall time starts), refused (FAILED).
Its exits come through the usual exit callback. Every report is posted to the manager's
inbox, so it goes through the one transition function like any other change.

A job pending in another scheduler is QUEUED but not in our waiting queue: it holds a
place in the manager's active jobs (it can be cancelled, it is watched) and takes none of
this node's capacity.
"""

from typing import Any

from zephserver.jobs.transition import now, transition
from zephserver.launch.states import TERMINAL, JobState

J = JobState


def placed(job: Any) -> bool:
    """Whether ``job`` was handed to an executor's own queue (it has an external id)."""
    return bool((job.extra or {}).get("external"))


class ExecutorReports:
    """Mixed into the job manager (it provides _active, post, change, publish, ...)."""

    _active: dict
    _needs_plan: bool

    def reported(self, job_id: int, state: JobState | None, reason: str,
                 fields: dict) -> None:
        """The executor's threads: what it saw happen to a job."""
        self.post(self._on_report, job_id, state, reason, fields)  # type: ignore[attr-defined]

    def _on_report(self, job_id: int, state: JobState | None, reason: str,
                   fields: dict) -> None:
        active = self._active.get(job_id)
        if active is None:
            return  # it has ended meanwhile
        job = active.job
        if job.stop_requested:  # "stopping: cancelled by ..." stays what the user reads
            reason = job.state_reason
        if state is None or state == job.state:
            if reason != job.state_reason or fields:
                transition(job, None, reason, self.publish, **fields)  # type: ignore[attr-defined]
            return
        if state in TERMINAL:  # the executor refused it: no process was ever made
            del self._active[job_id]
            self.change(job, state, reason, **fields)  # type: ignore[attr-defined]
            self._needs_plan = True
            return
        if state == J.RUNNING:
            fields = {"started": now(), **fields}
        self.change(job, state, reason, **fields)  # type: ignore[attr-defined]
        if state == J.RUNNING:
            self._arm_wall_time(job)  # type: ignore[attr-defined]

    def handed(self, job: Any, reason: str) -> None:
        """``job`` was handed to a reporting executor at launch: watched from now on."""
        from zephserver.jobs.active import Active

        active = Active(job, self.apps.get(job.app))  # type: ignore[attr-defined]
        self._active[job.pk] = active
        transition(job, None, reason, self.publish)  # type: ignore[attr-defined]
        self.executor_for(job).watch(job, self._exit_callback(job.pk))  # type: ignore[attr-defined]
        self._follow_for_parser(active)  # type: ignore[attr-defined]

    def readopt_reported(self, job: Any) -> None:
        """At start: a job of a reporting executor is watched again (its next report
        says where it is now, or how it ended); one recorded as being submitted is found
        by the executor (orphan) or queued again."""
        executor = self.executor_for(job)  # type: ignore[attr-defined]
        if not placed(job):
            found = executor.orphan(job)
            if found is None:
                self.change(job, J.QUEUED, "re-queued: the daemon stopped before the job "  # type: ignore[attr-defined]
                            "was submitted", queued_at=now())
                return
            transition(job, None, "submitted (re-adopted)", self.publish, **found)  # type: ignore[attr-defined]
        self.handed(job, job.state_reason)
        if job.state == J.RUNNING:
            self._arm_wall_time(job)  # type: ignore[attr-defined]
