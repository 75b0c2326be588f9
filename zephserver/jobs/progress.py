"""A running job's progress: its app's parser, fed on the output thread with what the
job prints; a snapshot goes to the job manager when it changed, at most once per
JOB_PROGRESS_INTERVAL, and once more when the log is read to its end."""

import time
from collections.abc import Callable
from typing import Any

from zephserver.launch.output import Follower
from zephserver.launch.parsers import make_parser

Report = Callable[[int, dict], None]  # (job id, snapshot), from the output thread


def progress_follower(job: Any, parser_spec: Any, interval: Callable[[], float],
                      report: Report) -> Follower:
    """A follower of ``job``'s log feeding a parser made from ``parser_spec``."""
    parser = make_parser(parser_spec)
    # the ETA uses the real elapsed time, also for a job re-adopted after a restart
    started = job.started.timestamp() if job.started else time.time()
    last = 0.0

    def deliver(offset: int, data: bytes) -> None:  # output thread
        nonlocal last
        parser.feed(data, time.time(), started)
        at = time.monotonic()
        if parser.changed and at - last >= interval():
            parser.changed = False
            last = at
            report(job.pk, parser.snapshot())

    def done(end: int) -> None:
        parser.finish(time.time(), started)
        report(job.pk, parser.snapshot())

    # unfollowed by the tail itself once the job has ended and the last bytes are read
    return Follower(job.log_path, 0, deliver, done=done)
