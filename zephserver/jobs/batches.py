"""An actor whose inbox batches are database transactions (the job manager).

Everything a batch of the inbox does is committed at once; the callers' answers and the
``job.updated`` events it made go out only after the commit, so a client never sees a
state the database might not keep. A batch that fails to commit fails every caller in
it; one that cannot even begin (the database is unavailable) refuses them with -32003.
"""

import logging
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from zephserver.actor import Actor
from zephserver.database import unavailable_reason
from zephserver.errors import RpcCode, RpcError
from zephserver.infra import held_wakes

log = logging.getLogger("zephserver.service.job_manager")
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0  # seconds between tries while the database is busy
HOLD_POLL = 0.2  # seconds between looks at the inbox while writes fail


class TransactionalActor(Actor):
    feed: Any  # where updates go once committed (jobs.feed.Feed)

    def __init__(self) -> None:
        super().__init__()
        self._batching = False
        self._deferred: list[tuple[Future | None, Any, BaseException | None]] = []
        self._unpublished: dict[int, Any] = {}  # job id -> job: one update per batch
        self._announced: dict[int, Any] = {}  # new jobs other nodes' queues must know
        self._committed: list[Callable[[], None]] = []  # steps once the batch is committed
        self._retry_delay = 0.0  # backoff while a batch cannot begin
        self.write_problem = ""  # set while a failed batch's rows are being written again
        self._stop_retrying = threading.Event()
        self.unavailable_reason = ""  # why the last batch could not begin ("": it could)

    def _group_commit(self, group: Callable[[], None]) -> bool:
        """Run ``group`` in one transaction; replies and ``job.updated`` events go out
        only once it is committed (a client never sees a state the database might not
        keep). False if the transaction could not even begin."""
        from django.db import close_old_connections, transaction

        from zephserver.web.models import recording_writes

        self._deferred: list[tuple[Future | None, Any, BaseException | None]] = []
        self._unpublished: dict[int, Any] = {}
        self._announced: dict[int, Any] = {}
        self._committed = []
        atomic, began, committed = transaction.atomic(), False, False
        try:
            with recording_writes() as writes:
                atomic.__enter__()
                began = True
                try:
                    group()
                except BaseException:
                    if not atomic.__exit__(*sys.exc_info()):
                        raise
                else:
                    atomic.__exit__(None, None, None)
                    committed = True
        except Exception as exc:
            why = unavailable_reason(exc)
            close_old_connections()  # a broken connection is replaced at the next try
            if not began:  # nothing was done: the caller refuses the batch (unavailable)
                self.unavailable_reason = why or f"{type(exc).__name__}: {exc}"
                log.error("job manager: a batch could not begin: %s", self.unavailable_reason)
            else:
                # Done in memory (exits seen, jobs started), rolled back on disk: write the
                # same rows again until the database takes them, so the two never differ.
                # Callers whose own step failed hear it now; the others once it is written.
                failed = [d for d in self._deferred if d[2] is not None]
                self._deferred = [d for d in self._deferred if d[2] is None]
                for future, _, error in failed:
                    if future is not None and not future.done():
                        future.set_exception(error)  # type: ignore[arg-type]
                self._write_again(writes, why or f"{type(exc).__name__}: {exc}")
        finally:
            deferred, self._deferred = self._deferred, []
            unpublished, self._unpublished = self._unpublished, {}
            announced, self._announced = self._announced, {}
            after, self._committed = self._committed, []
            self._batching = False
        with held_wakes.held():  # (the updates and replies: one wake-up of the loop)
            for job in unpublished.values():
                self.feed.send_update(job)
            for job in announced.values():
                if job.pk not in unpublished and began:
                    self.feed.send_queue(job)
            for future, result, exc in deferred:
                if future is None:
                    continue
                if exc is None:
                    future.set_result(result)
                else:
                    future.set_exception(exc)
        for fn in after if committed else ():
            try:
                fn()
            except Exception:
                log.exception("job manager: an after-commit step failed")
        if began:
            self._retry_delay = 0.0
            self.unavailable_reason = ""
        return began

    def confirm_rewrite(self, todo: list) -> list:
        """(in the rewrite's transaction) Of a failed batch's rows, those still right to
        write again: all of them, unless a subclass knows better."""
        return todo

    def _write_again(self, writes: list, why: str) -> None:
        """Write ``writes`` (the failed batch's rows, as they are in memory now) in a new
        transaction, with a backoff, until it commits or the service stops. Meanwhile
        the inbox waits: nothing new may diverge."""
        from django.db import DatabaseError, close_old_connections, transaction

        rows: dict[int, tuple[Any, set[str] | None]] = {}
        for job, names in writes:
            if id(job) not in rows:
                rows[id(job)] = (job, None if names is None else set(names))
            elif names is not None and rows[id(job)][1] is not None:
                rows[id(job)][1].update(names)  # type: ignore[union-attr]
        todo = [(job, names) for job, names in rows.values() if job.pk is not None]
        if not todo:  # the batch failed on its first write: nothing was done in memory
            return
        delay, tries, held, closed = BACKOFF_FIRST, 0, [], False
        while True:
            self.write_problem = (f"database writes failing ({why}): {len(todo)} job "
                                  f"change(s) wait")
            tries += 1
            log.error("job manager: %s; try %d", self.write_problem, tries)
            deadline = time.monotonic() + delay
            while not self._stop_retrying.is_set() and time.monotonic() < deadline:
                closed |= self._hold_inbox(held)  # callers hear it now, not at their timeout
                self._stop_retrying.wait(min(HOLD_POLL, max(0.0, deadline - time.monotonic())))
            if self._stop_retrying.is_set():
                log.error("job manager: stopping with %d job change(s) not written; the "
                          "next start re-adopts those jobs from their processes and exit "
                          "files", len(todo))
                break
            delay = min(BACKOFF_MAX, delay * 2)
            try:
                with transaction.atomic():
                    todo = self.confirm_rewrite(todo)
                    for job, names in todo:
                        if names is None:
                            job.save(force_insert=True)
                        else:
                            job.persist(*sorted(names))
            except DatabaseError as exc:
                why = unavailable_reason(exc) or f"{type(exc).__name__}: {exc}"
                close_old_connections()
                continue
            log.warning("job manager: the database takes writes again: %d job change(s) "
                        "written after %d tries", len(todo), tries)
            self.write_problem = ""
            break
        for fn, args, _ in held:  # exits and timers that came meanwhile, in order
            self.post(fn, *args)
        if closed:
            self._inbox.put(None)

    def _hold_inbox(self, held: list) -> bool:
        """While writes fail: refuse the callers waiting in the inbox (-32003), keep the
        rest in ``held``; True if the inbox was closed meanwhile."""
        items = self._take_inbox()
        held += _refuse_callers([i for i in items if i is not None],
                                f"the database does not take writes now "
                                f"({self.write_problem})")
        # (inside the batch's held wake-ups: the refusals would wait for the database)
        held_wakes.flush()
        return None in items

    def close_inbox(self) -> None:
        super().close_inbox()
        self._stop_retrying.set()

    def run_inbox(self) -> None:
        self._stop_retrying.clear()  # (a service restarted after a crash runs it again)
        super().run_inbox()

    def health_problems(self) -> list[str]:
        """What /readyz and zephserver-status should say is wrong here."""
        return [p for p in (self.write_problem, self.unavailable_reason and
                            f"the job manager cannot write: {self.unavailable_reason}") if p]

    def unavailable(self, items: Any, why: str) -> None:
        """A batch could not begin (the database is busy or down): its callers hear it
        now (-32003, with a retry hint); the rest (exits, timers: what happened) is kept
        and tried again after a backoff, so no exit status is dropped."""
        busy = "locked" in why or "busy" in why
        kept = _refuse_callers(items, f"the database is {'busy' if busy else 'unavailable'} "
                                      f"({why})")
        self._retry_delay = min(BACKOFF_MAX, max(BACKOFF_FIRST, self._retry_delay * 2))
        self.postpone_due_timers(self._retry_delay)  # (else: tried again at once, forever)
        if kept:
            log.warning("job manager: %d event(s) kept until the database answers; next "
                        "try in %.1fs", len(kept), self._retry_delay)
            self.after(self._retry_delay, lambda: [self.post(fn, *args)
                                                   for fn, args, _ in kept])

    def execute(self, fn: Callable, args: tuple, future: Future | None) -> None:
        from django.db import DatabaseError

        self._batching = True
        try:
            result = fn(*args)
        except DatabaseError as exc:
            # The batch's transaction is broken: _group_commit fails it as a whole.
            self._deferred.append((future, None, exc))
            raise
        except Exception as exc:  # refused requests raise before they write anything
            if future is None:
                log.exception("job manager: %s failed", getattr(fn, "__name__", fn))
            self._deferred.append((future, None, exc))
        else:
            self._deferred.append((future, result, None))

    def answer(self, future: Future, result: Any = None, error: BaseException | None = None
               ) -> None:
        """Settle a client's future once the current batch is committed."""
        if self._batching:
            self._deferred.append((future, result, error))
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once the current batch is committed. Never if its commit fails:
        the batch's rows are written again later, without it (a step that only tidies,
        such as removing a job's files, is then skipped)."""
        if self._batching:
            self._committed.append(fn)
        else:
            fn()

    def announce(self, job: Any) -> None:
        """Tell the other nodes' queues of a new job, once it is committed."""
        self._announced[job.pk] = job

    def publish(self, job: Any) -> None:
        """Tell subscribers (after the commit when inside a batch)."""
        if self._batching:
            self._unpublished[job.pk] = job
        else:
            self.feed.send_update(job)


def _refuse_callers(items: Any, why: str) -> list:
    """Callers among ``items`` hear -32003 ``why`` (with a retry hint) now; the rest
    (exits, timers: what happened) is returned, to be tried again."""
    error = RpcError(RpcCode.SERVICE_UNAVAILABLE, f"{why}, retry later", {"retry_after": 5})
    kept = []
    for item in items:
        future = item[2]
        if future is None:
            kept.append(item)
        elif not future.done():
            future.set_exception(error)
    return kept
