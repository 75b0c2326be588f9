"""The one function that changes a job's state, for every kind of job.

Batch jobs, sessions and the agent's processes all go through ``transition``: check the
move against the table (``launch.states``), stamp, persist the changed columns, log one
line, publish ``job.updated``. A call that keeps the state (an agent process moving from
``downloading`` to ``unpacking`` while STARTING) changes the reason and the rest, and is
published all the same.
"""

import logging
from collections.abc import Callable
from typing import Any

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
    log.info("job %d (%s %s, %s) %s -> %s: %s", job.pk, job.kind, job.app,
             job.owner.username, old, job.state, reason)
    publish(job)
