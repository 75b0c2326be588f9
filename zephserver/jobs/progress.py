"""A running job's progress: its app's parser, fed on the output thread with what the
job prints; a snapshot goes to the job manager when it changed, at most once per
JOB_PROGRESS_INTERVAL, and once more when the log is read to its end. A parser that can
reads only when a report is due, and skims what it missed from the end (only its last
lines count): a job printing flat out costs a block per interval, and the parser is never
behind."""

import os
import time
from collections.abc import Callable
from typing import Any

from zephserver.launch.output import Follower

Report = Callable[[int, dict], None]  # (job id, snapshot), from the output thread


def progress_follower(job: Any, parser_spec: Any, interval: Callable[[], float],
                      report: Report) -> Follower:
    """A follower of ``job``'s log feeding a parser made from ``parser_spec``."""
    from zephserver.launch.parsers import make_parser  # (loaded once a job has a parser)

    parser = make_parser(parser_spec)
    # the ETA uses the real elapsed time, also for a job re-adopted after a restart
    started = job.started.timestamp() if job.started else time.time()
    last = read = 0.0

    def reported() -> None:
        nonlocal last, read
        at = read = time.monotonic()
        if parser.changed and at - last >= interval():
            parser.changed = False
            last = at
            report(job.pk, parser.snapshot())

    def ready() -> bool:
        # Only a report needs the parser's state: one that can skim reads when a report
        # is due, and skims what came meanwhile from its end (a job printing flat out
        # costs a block per JOB_PROGRESS_INTERVAL, not all it printed).
        return (follower.final or not parser.can_skim() or
                time.monotonic() - read >= interval())

    def deliver(offset: int, data: bytes) -> None:  # output thread
        parser.feed(data, time.time(), started)
        reported()

    def skim(fd: int, offset: int, end: int) -> bool:  # output thread, far behind
        if not parser.skim(lambda at, size: os.pread(fd, size, at), offset, end,
                           time.time(), started):
            return False
        reported()
        return True

    def done(end: int) -> None:
        parser.finish(time.time(), started)
        report(job.pk, parser.snapshot())

    # unfollowed by the tail itself once the job has ended and the last bytes are read
    follower = Follower(job.log_path, 0, deliver, ready=ready, done=done, skim=skim)
    return follower


class ProgressUpdates:
    """Mixed into the job manager: parsers run on the output thread, their snapshots
    land on the manager's thread, are persisted and published."""

    _active: dict
    progress_interval: float

    def _follow_for_parser(self, active: Any) -> None:
        if active.app is not None and active.app.parser is not None:
            ran = active.job
            self.tail.follow(progress_follower(  # type: ignore[attr-defined]
                ran, active.app.parser, lambda: self.progress_interval,
                lambda job_id, snapshot: self.post(  # type: ignore[attr-defined]
                    self._set_progress, job_id, snapshot, ran)))

    def _set_progress(self, job_id: int, snapshot: dict, ran: Any) -> None:
        """``ran``: the job as this node ran it, for a report that comes after its end
        (the parser still reading its log): its row is not read again for each one."""
        active = self._active.get(job_id)
        job = active.job if active is not None else ran
        if job.progress == snapshot:
            return
        job.progress = snapshot
        if job.persist("progress"):  # (0 rows: the job was deleted meanwhile)
            self.publish(job)  # type: ignore[attr-defined]
