"""The one function that changes a job's state, for every kind of job.

Batch jobs, sessions and the agent's processes all go through ``transition``: check the
move against the table (``launch.states``), stamp, persist the changed columns, log one
line, publish ``job.updated``. A call that keeps the state (an agent process moving from
``downloading`` to ``unpacking`` while STARTING) changes the reason and the rest, and is
published all the same.
"""

import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any

from zephserver import metrics
from zephserver.launch.process import describe_exit
from zephserver.launch.states import TERMINAL, JobState, check_job_transition

log = logging.getLogger("zephserver.jobs")

Publish = Callable[[Any], None]


def now() -> Any:
    from django.utils import timezone

    return timezone.now()


def transition(job: Any, new: JobState | None, reason: str, publish: Publish, *,
               extra: dict | None = None, clock: Callable[[], Any] = now,
               **fields: Any) -> None:
    """Move ``job`` to ``new`` (None: keep its state) with ``reason``; set ``fields``
    and merge ``extra`` into ``job.extra``; persist; log; ``publish(job)``.

    Raises:
        IllegalTransition: the table does not allow ``job.state -> new`` (nothing changed).
    """
    old = JobState(job.state)
    changed = ["state_reason", *fields]
    if new is not None and new != old:
        check_job_transition(old, new)
        job.state = new
        changed.append("state")
        if new in TERMINAL:
            job.finished = clock()
            changed.append("finished")
    job.state_reason = reason
    if extra:
        job.extra = {**job.extra, **extra}
        changed.append("extra")
    for name, value in fields.items():
        setattr(job, name, value)
    job.persist(*changed)
    _count(job, old, fields)
    log.info("job %d (%s %s, %s) %s -> %s: %s", job.pk, job.kind, job.app,
             job.owner.username, old, job.state, reason, extra={"job": job.pk})
    publish(job)


def _count(job: Any, old: JobState, fields: dict[str, Any]) -> None:
    """The metrics a state change makes: spawns, waits, exits (and the log they left)."""
    new = JobState(job.state)
    if fields.get("pid") is not None:
        metrics.SPAWNS.labels(job.app).inc()
    if new == old:
        return
    if old == JobState.QUEUED and new == JobState.STARTING and job.queued_at:
        metrics.QUEUE_WAIT.observe((now() - job.queued_at).total_seconds())
    if new == JobState.RUNNING and job.kind != "service" and job.created:
        metrics.SUBMIT_TO_RUNNING.observe((now() - job.created).total_seconds())
    if new in TERMINAL:
        metrics.JOB_EXITS.labels(job.kind, new.lower()).inc()
        if job.log_path:  # OSError: never written, or removed with its job directory
            with contextlib.suppress(OSError):
                metrics.LOG_BYTES.labels("jobs").inc(os.path.getsize(job.log_path))


def ended(job: Any, code: int | None, when: str = "", stop_by: str = "") -> tuple[JobState, str]:
    """The final state and reason of a job whose process ended with ``code`` (None: no
    status was seen); ``when`` ("while the daemon was down") and ``stop_by`` (who
    cancelled it) go in the reason. A stop that was asked for decides the state."""
    what = describe_exit(code)
    suffix = f" {when}" if when else ""
    why = job.state_reason.removeprefix("stopping: ")  # as given when it was stopped
    if job.stop_requested == JobState.CANCELLED and not why.startswith("cancelled"):
        return JobState.CANCELLED, f"cancelled: {why} ({what}){suffix}"
    if job.stop_requested == JobState.CANCELLED:
        by = f" by {stop_by}" if stop_by else ""
        return JobState.CANCELLED, f"cancelled{by} ({what}){suffix}"
    if job.stop_requested in (JobState.TIMED_OUT, JobState.FAILED):
        return JobState(job.stop_requested), f"{why} ({what})"
    if job.state == JobState.STARTING:  # a session that ended before it was ready
        return JobState.FAILED, f"exited before it was ready ({what}){suffix}"
    if code is None:
        return JobState.LOST, what + suffix
    if code == 0:
        return JobState.SUCCEEDED, what + suffix
    return JobState.FAILED, what + suffix + _disk_note(job)


def _disk_note(job: Any) -> str:
    try:
        st = os.statvfs(job.job_dir)
    except OSError:
        return ""
    return "; the disk holding its log is full" if st.f_bavail == 0 else ""
