"""Giving freed memory back to the system when a burst of work ends.

glibc keeps what the daemon frees in its arenas (one per thread that allocates, up to
eight per core), so a daemon whose threads serve bursts of jobs or connections grows in
RSS while its Python heap stays flat (tracemalloc showed no growth over 10,000 jobs).
``malloc_trim(0)`` returns the free pages, wherever they are in the heap (the daemon's
Python objects are there too: zephserver/interpreter.py). ``quiet()`` is called when a
burst ends (the last running job ended, the last connection closed); it gives back at
most once per MIN_INTERVAL, and a call that comes sooner is kept for the end of that
interval, so the last quiet moment of a stream of bursts is always given back. What
remains is bounded: the allocators settle over the first few thousand jobs or
connections, then stay flat.
"""

import ctypes
import gc
import logging
import threading
import time

from zephserver import interpreter, metrics

log = logging.getLogger(__name__)

MIN_INTERVAL = 5.0  # seconds between trims (one costs about a millisecond)
# seconds after a burst's end before its give-back: the loop is still tearing down what
# the burst left (2,000 closed connections' streams and futures) for a few turns; trimmed
# at once, the first burst of connections kept 8 MiB more than the next ones
AFTERMATH = 0.5

M_ARENA_MAX = -8  # mallopt's parameters (glibc malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 * 1024  # bytes: blocks this large are mapped, and unmapped when freed
# Bytes a connection reads at a time (the daemon's tornado servers): tornado allocates a
# zeroed buffer this large for every read. Its 64 KiB default is past MMAP_THRESHOLD, so
# each read mapped, faulted in and unmapped 16 pages: in the runs where the loop read
# sockets one at a time as they became readable, 100 clients' pings cost 2.5 times the
# CPU (7,000 round trips/s, not 19,000). 8 KiB holds any request but big uploads whole.
READ_CHUNK = 8 * 1024

try:
    _libc = ctypes.CDLL(None)
    _trim, _mallopt = _libc.malloc_trim, _libc.mallopt  # glibc only
except AttributeError:  # pragma: no cover - another C library: nothing to give back
    _trim = _mallopt = None

_lock = threading.Lock()
_last = float("-inf")
_pending: threading.Timer | None = None
_running = False
_again = False


def one_arena() -> None:
    """At start, before any thread: every thread allocates from one arena. glibc would
    give each of the daemon's threads one of its own, partly touched and never shared
    (1.2 MiB of a fresh daemon). Python's objects are allocated with the GIL held, so
    they hardly contend for it; SQLite's page caches are not, but the short-job
    benchmark lost nothing to the one lock (653 jobs/s, 619 before).

    Large blocks (a batch's JSON, a query's rows) are mapped apiece, whatever their
    size was before: glibc raises that threshold each time such a block is freed, and
    then puts the next ones in the arena among small long-lived ones, which it can
    never give back whole. Over 20,000 jobs the daemon grew 2.3 MiB from job 1,000;
    1.6 with the threshold held."""
    if _mallopt is not None:
        _mallopt(M_ARENA_MAX, 1)
        _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    interpreter.keep_from_children()  # (the start chose it for the daemon alone)


SETTLED_HEAP_ABI = 2  # settled_heap.c's zs_abi()


def settle() -> bool:
    """Once the start is done (its objects built, collected and frozen): every object
    made from now on comes from glibc's heap, the start's stay packed where pymalloc put
    them (zephserver/settled_heap.c). Only where the start chose pymalloc for it
    (zephserver/interpreter.py) and tracemalloc is not tracing (its hooks wrap the
    allocator). Returns whether it did."""
    import _tracemalloc  # (built in: the tracemalloc module would load pickle)

    if not interpreter.to_settle() or _tracemalloc.is_tracing():
        return False
    try:
        heap = ctypes.PyDLL(interpreter.SETTLED_HEAP)  # (PyDLL: called with the GIL held)
        abi = heap.zs_abi()
    except (OSError, AttributeError) as exc:
        abi = exc
    if abi != SETTLED_HEAP_ABI:
        log.warning("%s cannot be used (%s; make builds it again): Python's objects stay "
                    "in pymalloc's arenas, and memory freed after a burst of work may stay "
                    "resident", interpreter.SETTLED_HEAP,
                    abi if isinstance(abi, Exception) else f"version {abi}")
        return False
    heap.zs_settle.argtypes = [ctypes.c_void_p]
    heap.zs_settle(_main_heap())
    return True


def _main_heap() -> int | None:
    """Where glibc's main heap starts (settled_heap.c frees its blocks without asking
    pymalloc), or None where /proc does not say."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                if line.rstrip().endswith("[heap]"):
                    return int(line.split("-", 1)[0], 16)
    except OSError:
        pass
    return None


def give_back_now() -> None:
    """Return free pages at once (the start's garbage, once it is collected)."""
    if _trim is not None:
        _trim(0)


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
    wait = max(AFTERMATH, _last + MIN_INTERVAL - time.monotonic())
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
