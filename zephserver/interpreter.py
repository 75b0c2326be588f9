"""How the daemon's interpreter runs: its objects packed by pymalloc while it starts and
from glibc's heap once it has, without glibc's per-thread caches, without docstrings and
without column positions. Each is chosen only as an interpreter starts, so the start
executes itself once more (about 25 ms) with all of them; the daemon then takes what it
set out of its environment, for its children to get the operator's own.
Imports nothing heavy: it runs before the start has loaded anything.

Objects from glibc once started, not pymalloc: pymalloc holds small objects in 1 MiB
arenas and gives one back only once every object in it has gone: after 2,000 WebSockets
had come and gone, a few survivors (a log record, a cached query) kept 22 MiB of empty
pools resident, and how much changed by megabytes from one burst to the next. From
glibc's heap, ``malloc_trim`` returns free pages wherever they are (zephserver/memory.py):
2,000 connections then leave 12 MiB rather than 28, the same each round. What the start
builds lives as long as the daemon, and pymalloc packs it with no per-block header: the
start runs under pymalloc (``PYTHONMALLOC=pymalloc``), and when it is done
``memory.settle`` has every later object taken from glibc (settled_heap.c, built by
make). Where that library is not built, the start runs under ``PYTHONMALLOC=malloc``.

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

No column positions (``-X no_debug_ranges``): each instruction's columns, kept in every
code object for the carets under a traceback's lines, are 0.4 MiB; the daemon's
tracebacks (in its log) still name each file, line and function.
"""

import os
import sys

MARK = "ZEPHSERVER_PYTHONMALLOC_SET"  # set with PYTHONMALLOC by ``start_lean``
TUNABLES_WAS = "ZEPHSERVER_GLIBC_TUNABLES_WAS"  # the operator's GLIBC_TUNABLES, if any
NO_THREAD_CACHE = "glibc.malloc.tcache_count=0"
# settled_heap.c, built by make: where it is, the start runs under pymalloc, to settle
SETTLED_HEAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "settled_heap.so")
FLAGS = ["-X", "no_debug_ranges"]  # (-OO too, unless the operator set PYTHONOPTIMIZE)

_chosen: str | None = None  # the allocator ``start_lean`` chose for this daemon, if it did


def start_lean() -> None:
    """Execute this start again under pymalloc to settle (or glibc's malloc where
    settled_heap.so is not built), without glibc's per-thread caches, docstrings or
    column positions, unless already (or the operator chose an allocator, or the C
    library is not glibc). Returns only where it does not."""
    if "PYTHONMALLOC" in os.environ or not _glibc():
        return
    tunables = os.environ.get("GLIBC_TUNABLES")
    os.environ.update({"PYTHONMALLOC": allocator(), MARK: "1"})
    if tunables is not None:
        os.environ[TUNABLES_WAS] = tunables
    if "glibc.malloc.tcache_count" not in (tunables or ""):
        os.environ["GLIBC_TUNABLES"] = f"{tunables}:{NO_THREAD_CACHE}" if tunables \
            else NO_THREAD_CACHE
    try:
        os.execv(sys.executable, [sys.executable, *_flags(), *sys.orig_argv[1:]])
    except OSError:  # pragma: no cover - the interpreter cannot be run again: start as is
        keep_from_children()


def allocator() -> str:
    """The PYTHONMALLOC the daemon starts under: pymalloc where settled_heap.so is built
    (to settle once started), glibc's malloc otherwise."""
    return "pymalloc" if os.path.exists(SETTLED_HEAP) else "malloc"


def _flags() -> list[str]:
    return FLAGS if "PYTHONOPTIMIZE" in os.environ else [*FLAGS, "-OO"]


def keep_from_children() -> None:
    """In the daemon: what ``start_lean`` set is not its children's (jobs, sbatch)."""
    global _chosen
    if os.environ.pop(MARK, None):
        _chosen = os.environ.pop("PYTHONMALLOC", None)
        was = os.environ.pop(TUNABLES_WAS, None)
        if was is None:
            os.environ.pop("GLIBC_TUNABLES", None)
        else:
            os.environ["GLIBC_TUNABLES"] = was


def to_settle() -> bool:
    """Whether this daemon started under pymalloc for ``memory.settle`` (its start chose
    it: settled_heap.so is built, the operator set no allocator)."""
    return _chosen == "pymalloc"


def _glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False
