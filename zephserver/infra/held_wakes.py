"""Wake-ups held back while a thread posts a burst to another thread's loop.

A thread that hands work to a loop (the WebSocket service's) wakes it when the hand-off
queue was empty. When the loop drains that queue as fast as it fills, a burst of
messages (a committed batch's job updates and replies) costs one wake-up each: a write
to the loop's waker pipe, and the loop thread taking the GIL back from the poster every
time. Inside ``held()`` the poster asks for its wake-up once, at the end.
"""

import contextlib
import threading
from collections.abc import Callable, Iterator

_local = threading.local()


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Wake-ups this thread asks for meanwhile (``defer``) happen once each, at the end."""
    if getattr(_local, "wakes", None) is not None:  # (nested: the outer block wakes)
        yield
        return
    _local.wakes = {}
    try:
        yield
    finally:
        wakes, _local.wakes = _local.wakes, None
        for wake in wakes:
            wake()


def flush() -> None:
    """The wake-ups deferred so far happen now (later ones are still held): before this
    thread waits inside ``held()``, what it already posted must not wait with it."""
    wakes = getattr(_local, "wakes", None)
    if wakes:
        pending = list(wakes)
        wakes.clear()
        for wake in pending:
            wake()


def defer(wake: Callable[[], None]) -> bool:
    """True if this thread is inside ``held()``: ``wake`` is called at its end (once, however
    often it is deferred). False: the caller wakes now."""
    wakes = getattr(_local, "wakes", None)
    if wakes is None:
        return False
    wakes[wake] = None
    return True
