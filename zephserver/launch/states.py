"""Job states (one model for batch jobs, sessions and supervised processes) and the one
table of allowed transitions."""

from enum import StrEnum

from zephserver.errors import IllegalTransition


class JobState(StrEnum):
    QUEUED = "QUEUED"
    HELD = "HELD"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    LOST = "LOST"


J = JobState
TERMINAL = frozenset({J.SUCCEEDED, J.FAILED, J.CANCELLED, J.TIMED_OUT, J.LOST})
ACTIVE = frozenset({J.STARTING, J.RUNNING})  # a process exists (or is being made)
WAITING = frozenset({J.QUEUED, J.HELD})

JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # QUEUED -> STARTING: the queue picked it; -> HELD: held; -> CANCELLED: cancelled.
    # A job QUEUED in another scheduler's queue (Slurm, jobs.reports) starts there
    # (-> RUNNING), or ends without running (-> FAILED, LOST, TIMED_OUT: its deadline).
    J.QUEUED: frozenset({J.STARTING, J.HELD, J.CANCELLED, J.RUNNING, J.FAILED, J.LOST,
                         J.TIMED_OUT}),
    J.HELD: frozenset({J.QUEUED, J.CANCELLED}),
    # STARTING -> RUNNING: spawned; -> FAILED: could not spawn; -> QUEUED: the daemon
    # died before spawning (re-queued at restart); -> CANCELLED: cancelled meanwhile.
    J.STARTING: frozenset({J.RUNNING, J.FAILED, J.QUEUED, J.CANCELLED, J.LOST}),
    # RUNNING -> QUEUED: a requeue job of a lost node, queued again as a new attempt.
    J.RUNNING: frozenset({J.SUCCEEDED, J.FAILED, J.CANCELLED, J.TIMED_OUT, J.LOST,
                          J.BACKOFF, J.QUEUED}),
    # BACKOFF: a supervised process waits to be restarted.
    J.BACKOFF: frozenset({J.STARTING, J.CANCELLED}),
    **{t: frozenset() for t in TERMINAL},
}


def check_job_transition(old: JobState, new: JobState) -> None:
    """Raise IllegalTransition unless ``old -> new`` is in JOB_TRANSITIONS."""
    if new not in JOB_TRANSITIONS[old]:
        raise IllegalTransition(f"job state {old} -> {new} is not allowed")
