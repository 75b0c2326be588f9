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

from zephserver.jobs.active import Active
from zephserver.jobs.transition import now, transition
from zephserver.launch.interactive import first_host
from zephserver.launch.states import TERMINAL, JobState

J = JobState


def placed(job: Any) -> bool:
    """Whether ``job`` was handed to an executor's own queue (it has an external id)."""
    return bool(((job.extra or {}).get("external") or {}).get("id"))


class ExecutorReports:
    """Mixed into the job manager (it provides _active, post, change, publish, ...)."""

    _active: dict
    _needs_plan: bool
    _told: dict  # job id -> what a remote session's ready line told, before Slurm's report

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
            if job.kind == "session":  # running, but ready only once its line tells
                self.change(job, J.STARTING, f"{reason}: waiting for its ready line",  # type: ignore[attr-defined]
                            **fields)
                told = self._told.pop(job_id, None)
                if told is not None:
                    self.remote_ready(job_id, told)
                return
        self.change(job, state, reason, **fields)  # type: ignore[attr-defined]
        if state == J.RUNNING:
            self._arm_wall_time(job)  # type: ignore[attr-defined]

    def remote_ready(self, job_id: int, told: dict[str, str]) -> None:
        """A remote session's ready line told its port (maybe its host): with the host
        Slurm ran it on, it is ready. Told before Slurm's report that it runs, it waits
        for that report."""
        active = self._active.get(job_id)
        if active is None or active.job.stop_requested:
            return
        job = active.job
        nodes = ((job.extra or {}).get("external") or {}).get("nodes")
        if job.state != J.STARTING or not (nodes or told.get("host")):
            self._told[job_id] = told
            return
        host = told.get("host") or first_host(nodes)
        try:
            port = int(told["port"])
        except (KeyError, ValueError):
            self.stop(active, J.FAILED, f"stopping: its ready line gave no port number "  # type: ignore[attr-defined]
                      f"({told})", "")
            return
        self.change(job, J.RUNNING, f"ready on {host}:{port}",  # type: ignore[attr-defined]
                    extra=self.interactive.remote_values(job, host, port))  # type: ignore[attr-defined]
        self._arm_wall_time(job)  # type: ignore[attr-defined]
        self.interactive.ready(active)  # type: ignore[attr-defined]

    def handed(self, job: Any, reason: str, readopted: bool = False,
               extra: dict | None = None) -> None:
        """``job`` was handed to a reporting executor at launch (or is found again after
        a restart): watched from now on; a session's ready line is looked for."""
        active = Active(job, self.apps.get(job.app))  # type: ignore[attr-defined]
        self._active[job.pk] = active
        if not readopted:
            transition(job, None, reason, self.publish, extra=extra)  # type: ignore[attr-defined]
        self.executor_for(job).watch(job, self._exit_callback(job.pk))  # type: ignore[attr-defined]
        self._follow_for_parser(active)  # type: ignore[attr-defined]
        if job.kind == "session" and active.app is not None:
            if readopted:
                self.interactive.readopted(active)  # type: ignore[attr-defined]
            else:
                self.interactive.started(active)  # type: ignore[attr-defined]

    def readopt_reported(self, job: Any) -> None:
        """At start: a job of a reporting executor is watched again (its next report
        says where it is now, or how it ended); one recorded as being submitted is found
        by the executor (orphan) or queued again."""
        executor = self.executor_for(job)  # type: ignore[attr-defined]
        if not placed(job):
            found = executor.orphan(job)
            if found is None:
                job.extra = {k: v for k, v in (job.extra or {}).items() if k != "external"}
                job.persist("extra")  # (it names no Slurm job: it waits in our queue)
                self.change(job, J.QUEUED, "re-queued: the daemon stopped before the job "  # type: ignore[attr-defined]
                            "was submitted", queued_at=now())
                return
            transition(job, None, "submitted (re-adopted)", self.publish, **found)  # type: ignore[attr-defined]
        self.handed(job, job.state_reason, readopted=True)
        if job.state == J.RUNNING:
            self._arm_wall_time(job)  # type: ignore[attr-defined]
