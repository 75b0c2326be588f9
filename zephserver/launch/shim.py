"""The small wrapper that lets a job outlive the daemon and still report its exit status.

Jobs run under ``/bin/sh`` with a fixed script (never text from a client; the program
and its arguments arrive as positional parameters and run as ``"$@"``). The shell
records its pid, survives the stop signal sent to the group (a trap handler, which the
program does not inherit), waits for the program, then writes the exit status to a
file. The daemon reads that file when it was not the parent at the exit (re-adopted
after a restart). A shell starts in about a millisecond, where a Python wrapper
would cost tens.
"""

import os
import sys
from typing import NamedTuple

SHELL = "/bin/sh"
META_DIR = ".zeph-meta"
# (names in the directory per job that older daemons made)
PID_FILE = ".zeph-shim.pid"
STATUS_FILE = ".zeph-exit.status"

# $1: the pid file, $2: the status file, $3: the working directory, $4: the cgroup.procs
# files to enter first, space-separated (launch.cgroups; "" for none), then the program's
# argv. A program killed by signal N reports 128+N, as shells do. Without cgroups, what
# the program left among the shim's children (as a subreaper: its escaped descendants) is
# killed, with builtins only (a job's end costs no extra process).
SCRIPT = ('cd "$3" || exit 126; for g in $4; do echo 0 > "$g" || { echo "[zephserver] cannot '
          'enter the cgroup $g" >&2; exit 125; }; done; c="$4"; echo $$ > "$1"; s="$2"; '
          'shift 4; trap : TERM INT HUP QUIT; "$@"; rc=$?; if [ -z "$c" ]; then '
          'for t in /proc/$$/task/*/children; do read -r k < "$t"; '
          '[ -z "$k" ] || kill -KILL $k 2>/dev/null; done; fi; echo $rc > "$s"; exit $rc')


# Without cgroups: the shim becomes a child subreaper (kept across the exec into the
# shell), so a descendant that leaves the process group stays under it to be found.
SUBREAPER = ("import ctypes, os, sys; ctypes.CDLL(None).prctl(36, 1, 0, 0, 0); "
             "os.execv(sys.argv[1], sys.argv[1:])")  # 36: PR_SET_CHILD_SUBREAPER


def subreaper() -> list[str]:
    """What an argv is prefixed with to run it as a child subreaper."""
    return [sys.executable, "-S", "-c", SUBREAPER]


class Meta(NamedTuple):
    """Where a job's shim writes its pid and its exit status."""
    pid: str
    status: str


def wrap(argv: list[str], meta: Meta, cwd: str, cgroups: list[str] | None = None,
         as_subreaper: bool = False) -> list[str]:
    """The argv that runs ``argv`` in ``cwd`` under the shim, its files at ``meta``
    (in the cgroups whose ``cgroup.procs`` files are given; else, ``as_subreaper``, as a
    child subreaper: about 10 ms more, for the interpreter that sets it)."""
    return [*(subreaper() if as_subreaper else []), SHELL, "-c", SCRIPT, "zephserver-shim",
            meta.pid, meta.status, cwd, " ".join(cgroups or []), *argv]


def meta_files(job_dir: str) -> Meta:
    """Where the shim of the job in ``job_dir`` keeps its pid and exit status: beside the
    job's own directory, in one only the daemon writes (a job that runs as another
    account owns its directory, and could forge them there). Files, not a directory per
    job: a mkdir is a twentieth of a short job's launch."""
    base = os.path.join(os.path.dirname(job_dir), META_DIR, os.path.basename(job_dir))
    return Meta(base + ".pid", base + ".exit")


def own_meta(job_dir: str) -> Meta:
    """The pid and status files in the job's own directory: where older daemons kept
    them, and where a job started from a spare directory has them (launch.spares: made
    ahead with the directory; only for a job that runs as the daemon's own account,
    which could write beside it anyway)."""
    return Meta(os.path.join(job_dir, PID_FILE), os.path.join(job_dir, STATUS_FILE))


def found_meta(job_dir: str) -> Meta:
    """The shim files of a job started earlier, by this daemon or an older one (which
    kept them in a directory per job, or in the job's own directory)."""
    meta = meta_files(job_dir)
    if os.path.exists(meta.pid) or os.path.exists(meta.status):
        return meta
    old = os.path.join(os.path.dirname(job_dir), META_DIR, os.path.basename(job_dir))
    return own_meta(old if os.path.isdir(old) else job_dir)


def recorded_numbers(path: str) -> list[int]:
    """The numbers in ``path`` (a pid file: the shim's pid; an older keeper's also held
    its program's start time); [] if none."""
    try:
        with open(path) as f:
            return [int(word) for word in f.read().split()]
    except (OSError, ValueError):
        return []


def read_int(path: str) -> int | None:
    """The first number in ``path``; None if there is none."""
    numbers = recorded_numbers(path)
    return numbers[0] if numbers else None


def recorded_status(meta: Meta) -> int | None:
    """The exit status the shim wrote, or None if it never wrote one (killed itself)."""
    return read_int(meta.status)


def recorded_pid(meta: Meta) -> int | None:
    return read_int(meta.pid)


def program_started(pid: int, meta: Meta) -> bool:
    """Whether the shim ``pid`` has a child that has exec'd the program (before the exec
    the forked child is still a copy of the shim, with the same command line)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        return False
    return any(not is_shim_of(child, meta) and _exists(child) for child in children)


def _exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def is_shim_of(pid: int, meta: Meta) -> bool:
    """Whether ``pid`` is the shim for ``meta`` (its command line names our files)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return False
    return os.fsencode(meta.status) in args
