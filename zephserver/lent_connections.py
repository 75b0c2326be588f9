"""Database connections lent to the task threads, one task at a time.

Django keeps a connection per thread, and keeps it: each of the router's task threads
opened its own the first time it ran a task that reads the database, and a SQLite
connection costs about 300 KiB (its schema, page cache, compiled statements). Under a
steady stream of work the workers came into use one by one over thousands of jobs, and
the daemon grew by about 2 MiB long after it had warmed up. Lent instead, the
connections are as many as tasks ever used the database at once (about one per core,
which is how many task threads run at a time), and the most recently returned one is
lent next. Past ``keep`` idle ones, a connection given back is closed: a burst that ran
more tasks at once than usual opens a few more for its length, not for good.

A lent connection is used by one thread at a time, and only between ``lent()``'s enter
and exit (Django's thread-sharing check is opened for it; SQLite's and psycopg's
connections may change threads between uses).
"""

import contextlib
import threading
from collections.abc import Iterator
from typing import Any


class LentConnections:
    def __init__(self, alias: str = "default", keep: int = 2) -> None:
        self.alias = alias
        self.keep = keep
        self._free: list[Any] = []  # Django DatabaseWrappers, the last returned at the end
        self._lock = threading.Lock()
        self.made = 0

    @contextlib.contextmanager
    def lent(self) -> Iterator[None]:
        """Within: this thread's ``connections[alias]`` is a lent one. At the end it is
        closed if it broke or outlived CONN_MAX_AGE (as Django does after a request),
        and given back."""
        from django.db import connections

        with self._lock:
            wrapper = self._free.pop() if self._free else None
            if wrapper is None:
                self.made += 1
        if wrapper is None:
            wrapper = connections.create_connection(self.alias)
            wrapper.inc_thread_sharing()
        connections[self.alias] = wrapper
        try:
            yield
        finally:
            try:
                wrapper.close_if_unusable_or_obsolete()
            finally:
                del connections[self.alias]
                with self._lock:
                    surplus = len(self._free) >= self.keep
                    if not surplus:
                        self._free.append(wrapper)
                if surplus:
                    with contextlib.suppress(Exception):
                        wrapper.close()

    def close(self) -> None:
        """Close the connections not lent (at the router's stop)."""
        with self._lock:
            free, self._free = self._free, []
        for wrapper in free:
            with contextlib.suppress(Exception):
                wrapper.close()
