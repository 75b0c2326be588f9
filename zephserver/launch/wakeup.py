"""A selector with a wake-up pipe: the loop of a thread that waits on file descriptors
(pidfds, inotify) and can be woken from any other thread."""

import contextlib
import os
import selectors
from typing import Any

WAKE = object()  # what ``select`` reports for a wake-up (already drained)


class WakeableSelector:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, WAKE)
        self._owed = False  # a wake-up is in the pipe, not yet taken by ``select``

    def register(self, fd: int, data: Any) -> None:
        self._selector.register(fd, selectors.EVENT_READ, data)

    def unregister(self, fd: int) -> None:
        self._selector.unregister(fd)

    def wake(self) -> None:
        """Make the current or next ``select`` return. Any thread; never blocks. While one
        is owed already, nothing more is written (a burst of job starts: one system call,
        not one each)."""
        if self._owed:
            return
        self._owed = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def select(self, timeout: float | None) -> list[tuple[int, Any]]:
        """(fd, data) of the ready descriptors; a wake-up shows as (fd, WAKE)."""
        ready = []
        for key, _ in self._selector.select(timeout):
            if key.data is WAKE:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
                # (after the read: a wake-up skipped meanwhile is for what this thread
                # now goes on to do; one after this writes again)
                self._owed = False
            ready.append((key.fd, key.data))
        return ready

    def close(self) -> None:
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
