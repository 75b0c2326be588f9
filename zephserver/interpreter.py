"""How the daemon's interpreter runs: its objects in glibc's heap, without glibc's
per-thread caches, and without docstrings. Each is chosen only as an interpreter starts,
so the start executes itself once more (about 25 ms) with all three; the daemon then
takes what it set out of its environment, for its children to get the operator's own.
Imports nothing heavy: it runs before the start has loaded anything.

Objects from glibc, not pymalloc: pymalloc holds small objects in 1 MiB arenas and gives
one back only once every object in it has gone: after 2,000 WebSockets had come and
gone, a few survivors (a log record, a cached query) kept 22 MiB of empty pools
resident, and how much changed by megabytes from one burst to the next. From glibc's
heap, ``malloc_trim`` returns free pages wherever they are (zephserver/memory.py): 2,000
connections then leave 12 MiB rather than 28, the same each round.

No per-thread caches (``GLIBC_TUNABLES``): each of the daemon's 35 threads kept up to 7
freed chunks of every small size, which no give-back can return, filling over the first
thousands of jobs as each thread met new work. The daemon grew 1.4 MiB from job 1,000 to
job 6,000 with them, 0.6 without, at the same CPU a job and the same ping throughput. An
operator's own ``glibc.malloc.tcache_count`` is kept.

No docstrings (``-OO``): the daemon's libraries and modules hold 1.6 MiB of them, read by
nobody while it runs (what it shows a user, such as the control commands' help, is not
written in docstrings). ``-OO`` also drops ``assert`` statements, which here only narrow
types for the checker. A flag, not PYTHONOPTIMIZE: children do not inherit it. An
operator's own PYTHONOPTIMIZE (``0`` to keep the docstrings) is kept.
"""

import os
import sys

MARK = "ZEPHSERVER_PYTHONMALLOC_SET"  # set with PYTHONMALLOC by ``start_lean``
TUNABLES_WAS = "ZEPHSERVER_GLIBC_TUNABLES_WAS"  # the operator's GLIBC_TUNABLES, if any
NO_THREAD_CACHE = "glibc.malloc.tcache_count=0"


def start_lean() -> None:
    """Execute this start again under PYTHONMALLOC=malloc, without glibc's per-thread
    caches and without docstrings, unless already (or the operator chose an allocator,
    or the C library is not glibc). Returns only where it does not."""
    if "PYTHONMALLOC" in os.environ or not _glibc():
        return
    tunables = os.environ.get("GLIBC_TUNABLES")
    os.environ.update({"PYTHONMALLOC": "malloc", MARK: "1"})
    if tunables is not None:
        os.environ[TUNABLES_WAS] = tunables
    if "glibc.malloc.tcache_count" not in (tunables or ""):
        os.environ["GLIBC_TUNABLES"] = f"{tunables}:{NO_THREAD_CACHE}" if tunables \
            else NO_THREAD_CACHE
    try:
        os.execv(sys.executable, [sys.executable, *_optimize(), *sys.orig_argv[1:]])
    except OSError:  # pragma: no cover - the interpreter cannot be run again: start as is
        keep_from_children()


def _optimize() -> list[str]:
    return [] if "PYTHONOPTIMIZE" in os.environ else ["-OO"]


def keep_from_children() -> None:
    """In the daemon: what ``start_lean`` set is not its children's (jobs, sbatch)."""
    if os.environ.pop(MARK, None):
        os.environ.pop("PYTHONMALLOC", None)
        was = os.environ.pop(TUNABLES_WAS, None)
        if was is None:
            os.environ.pop("GLIBC_TUNABLES", None)
        else:
            os.environ["GLIBC_TUNABLES"] = was


def _glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False
