"""Giving freed memory back to the system when a burst of work ends.

glibc keeps what the daemon frees in its arenas (one per thread that allocates, up to
eight per core), so a daemon whose threads serve bursts of jobs or connections grows in
RSS while its Python heap stays flat (tracemalloc showed no growth over 10,000 jobs).
``malloc_trim(0)`` returns the free pages. ``quiet()`` is called when a burst ends (the
last running job ended, the last connection closed); it gives back at most once per
MIN_INTERVAL, and a call that comes sooner is kept for the end of that interval, so the
last quiet moment of a stream of bursts is always given back. What remains is bounded:
the allocators settle over the first few thousand jobs or connections, then stay flat.
"""

import ctypes
import gc
import threading
import time

from zephserver import metrics

MIN_INTERVAL = 5.0  # seconds between trims (one costs about a millisecond)

try:
    _trim = ctypes.CDLL(None).malloc_trim  # glibc only
except AttributeError:  # pragma: no cover - another C library: nothing to give back
    _trim = None

_lock = threading.Lock()
_last = float("-inf")
_pending: threading.Timer | None = None
_running = False
_again = False


def quiet() -> None:
    """Work has just ended (any thread; returns at once): give freed memory back, on a
    thread of its own, now or at the end of the interval since the last give-back."""
    global _again
    if _trim is None:
        return
    with _lock:
        if _pending is None:
            _schedule()
        elif _running:  # it may have missed what this burst freed: once more after it
            _again = True


def _schedule() -> None:  # under _lock
    global _pending
    wait = max(0.0, _last + MIN_INTERVAL - time.monotonic())
    _pending = threading.Timer(wait, _give_back)
    _pending.daemon = True
    _pending.start()


def pending() -> bool:
    """Whether a give-back waits or runs (zephserver_memory_trim_pending)."""
    return _pending is not None


def _give_back() -> None:
    global _last, _pending, _running, _again
    with _lock:
        _last, _running = time.monotonic(), True
    gc.collect()  # the burst's reference cycles first (long-lived objects are frozen)
    _trim(0)
    metrics.MEMORY_TRIMS.inc()
    with _lock:  # pending until done: a reader that sees 0 sees the memory given back
        _pending, _running = None, False
        if _again:
            _again = False
            _schedule()
