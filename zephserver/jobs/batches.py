"""An actor whose inbox batches are database transactions (the job manager).

Everything a batch of the inbox does is committed at once; the callers' answers and the
``job.updated`` events it made go out only after the commit, so a client never sees a
state the database might not keep. A batch that fails to commit fails every caller in
it; one that cannot even begin (the database is unavailable) refuses them with -32003.
"""

import logging
import sys
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from zephserver.actor import Actor
from zephserver.database import unavailable_reason
from zephserver.errors import RpcCode, RpcError

log = logging.getLogger("zephserver.service.job_manager")


class TransactionalActor(Actor):
    feed: Any  # where updates go once committed (jobs.feed.Feed)

    def __init__(self) -> None:
        super().__init__()
        self._batching = False
        self._deferred: list[tuple[Future | None, Any, BaseException | None]] = []
        self._unpublished: dict[int, Any] = {}  # job id -> job: one update per batch

    def _group_commit(self, group: Callable[[], None]) -> bool:
        """Run ``group`` in one transaction; replies and ``job.updated`` events go out
        only once it is committed (a client never sees a state the database might not
        keep). False if the transaction could not even begin."""
        from django.db import close_old_connections, transaction

        self._deferred: list[tuple[Future | None, Any, BaseException | None]] = []
        self._unpublished: dict[int, Any] = {}
        atomic, began = transaction.atomic(), False
        try:
            atomic.__enter__()
            began = True
            try:
                group()
            except BaseException:
                if not atomic.__exit__(*sys.exc_info()):
                    raise
            else:
                atomic.__exit__(None, None, None)
        except Exception as exc:  # the commit failed: every caller in the batch hears it
            why = unavailable_reason(exc)
            if why is None:
                log.exception("job manager: a batch failed to commit")
            else:
                log.error("job manager: a batch failed: the database is unavailable: %s",
                          why)
            close_old_connections()  # a broken connection is replaced at the next batch
            self._deferred = [(f, None, exc) for f, _, _ in self._deferred]
        finally:
            deferred, self._deferred = self._deferred, []
            unpublished, self._unpublished = self._unpublished, {}
            self._batching = False
        for job in unpublished.values():
            self.feed.send_update(job)
        for future, result, exc in deferred:
            if future is None:
                continue
            if exc is None:
                future.set_result(result)
            else:
                future.set_exception(exc)
        return began

    def refuse_unavailable(self, items: Any) -> None:
        error = RpcError(RpcCode.SERVICE_UNAVAILABLE, "the database is unavailable, retry "
                         "later", {"retry_after": 5})
        for _, _, future in items:
            if future is not None and not future.done():
                future.set_exception(error)

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

    def publish(self, job: Any) -> None:
        """Tell subscribers (after the commit when inside a batch)."""
        if self._batching:
            self._unpublished[job.pk] = job
        else:
            self.feed.send_update(job)
