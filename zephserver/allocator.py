"""Which allocator the daemon's Python objects come from: glibc's, not pymalloc.

pymalloc holds small objects in 1 MiB arenas and gives one back only once every object
in it has gone: after 2,000 WebSockets had come and gone, a few survivors (a log record,
a cached query) kept 22 MiB of empty pools resident, and how much changed by megabytes
from one burst to the next. From glibc's heap, ``malloc_trim`` returns free pages
wherever they are (zephserver/memory.py): 2,000 connections then leave 12 MiB rather
than 28, the same each round. The choice is made only as the interpreter starts, so the
start executes itself once more with ``PYTHONMALLOC=malloc`` (about 25 ms); the daemon
then takes it out of its environment, for its children to get the operator's own.
Imports nothing heavy: it runs before the start has loaded anything.
"""

import os
import sys

MARK = "ZEPHSERVER_PYTHONMALLOC_SET"  # set with PYTHONMALLOC by ``use_glibc``


def use_glibc() -> None:
    """Execute this start again under PYTHONMALLOC=malloc unless already (or the operator
    chose an allocator, or the C library is not glibc). Returns only where it does not."""
    if "PYTHONMALLOC" in os.environ or not _glibc():
        return
    os.environ.update({"PYTHONMALLOC": "malloc", MARK: "1"})
    try:
        os.execv(sys.executable, sys.orig_argv)
    except OSError:  # pragma: no cover - the interpreter cannot be run again: start as is
        del os.environ["PYTHONMALLOC"], os.environ[MARK]


def keep_from_children() -> None:
    """In the daemon: what ``use_glibc`` set is not its children's (jobs, sbatch)."""
    if os.environ.pop(MARK, None):
        os.environ.pop("PYTHONMALLOC", None)


def _glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False
