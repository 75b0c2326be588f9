"""Spawning launched programs and noticing their exits: the bottom of the launch core.

- ``spawn``: argv only (never a shell), a new session so the program and everything it
  forks form one process group, no ``preexec_fn`` (it forces fork and costs 3-4x),
  stdout+stderr appended to a log file.
- ``Reaper``: one thread ("zeph-reaper") waiting on pidfds with a selector, so an exit is
  seen when it happens, not on a poll tick. It also runs the stop ladder: SIGTERM to the
  group, a grace period, SIGKILL to the group (grandchildren included).
"""

import contextlib
import dataclasses
import functools
import heapq
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zephserver.launch.wakeup import WAKE, WakeableSelector

log = logging.getLogger(__name__)

ExitCallback = Callable[[int, int | None], None]  # (pid, returncode or None if unknown)
EARLY_KEPT = 4096  # exits reported before their watch, kept at most


class SpawnError(Exception):
    """The program could not be started (missing, not executable, bad directory)."""


def _stat(pid: int) -> list[bytes] | None:
    """/proc/PID/stat from field 3 (state) on, or None if the process is gone."""
    try:  # a bare read: this runs for every spawn and every watchdog pass
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        stat = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return stat[stat.rindex(b")") + 2:].split()


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if it is gone.

    With the pid it identifies a process for good: a reused pid has another start time.
    """
    fields = _stat(pid)
    return None if fields is None else int(fields[19])


def is_alive(pid: int, start_time: int | None, zombie_of: int | None = None) -> bool:
    """Whether ``pid`` still runs and is the very process that started at ``start_time``
    (not a newer process that reused the pid; not a zombie, unless its parent is
    ``zombie_of``, which has yet to reap it and record its status)."""
    fields = _stat(pid)
    return (fields is not None and int(fields[19]) == start_time
            and (fields[0] != b"Z" or (zombie_of is not None and int(fields[1]) == zombie_of)))


def boot_id() -> str:
    """This boot's id: a pid and start time recorded under another boot mean nothing."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:  # pragma: no cover - always there on Linux
        return ""


@dataclass(frozen=True)
class Spawned:
    pid: int
    start_time: int | None
    popen: subprocess.Popen | None  # None when spawned with posix_spawn


def spawn(argv: Sequence[str], cwd: str | None, env: Mapping[str, str],
          log_path: str, extra_fds: Mapping[int, int] | None = None,
          read_start_time: bool = True, nice: int = 0) -> Spawned:
    """Start ``argv`` in its own session with output appended to ``log_path``.

    A caller starting many programs in a row passes ``read_start_time=False`` and then
    ``with_start_times``: read at once, /proc/PID/stat waits on the exec still under way,
    and costs several times more than when read after the last spawn.

    With ``cwd`` None the program starts in the daemon's directory through
    ``os.posix_spawn``. Popen releases the GIL while it waits for the exec and, in a busy
    daemon, waits up to a switch interval (5 ms) to get it back; posix_spawn does not.
    Python's posix_spawn cannot change directory, so the job shim does its own ``cd``.
    ``extra_fds`` maps a descriptor number in the child to one of ours (posix_spawn only).
    ``nice``: see ``lower_priority``.

    Raises:
        SpawnError: with a message naming what was wrong.
    """
    if not argv:
        raise SpawnError("empty command")
    try:
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    except OSError as exc:
        raise SpawnError(f"cannot open log {log_path}: {exc.strerror}") from exc
    popen = None
    try:
        if cwd is None:
            # Our fds are close-on-exec (PEP 446): only these three reach the program.
            # (SIGPIPE and SIGXFSZ at their default, which Python ignores: as Popen does)
            pid = os.posix_spawn(argv[0], list(argv), dict(env), setsid=True,
                                 setsigdef=(signal.SIGPIPE, signal.SIGXFSZ), file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1), (os.POSIX_SPAWN_DUP2, log_fd, 2),
                *((os.POSIX_SPAWN_DUP2, fd, target)
                  for target, fd in (extra_fds or {}).items())])
        else:
            popen = subprocess.Popen(list(argv), cwd=cwd, env=dict(env),
                                     stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                                     start_new_session=True, close_fds=True)
            pid = popen.pid
    except FileNotFoundError as exc:
        missing = exc.filename or argv[0]
        what = "working directory" if missing == cwd else "program"
        raise SpawnError(f"{what} not found: {missing}") from exc
    except PermissionError as exc:
        raise SpawnError(f"permission denied: {exc.filename or argv[0]}") from exc
    except OSError as exc:
        raise SpawnError(f"cannot start {argv[0]}: {exc.strerror}") from exc
    finally:
        os.close(log_fd)
    if nice:
        lower_priority(pid, nice)
    return Spawned(pid, process_start_time(pid) if read_start_time else None, popen)


def lower_priority(leader: int, nice: int) -> None:
    """Run the session that ``leader`` started ``nice`` steps below the daemon (19 at
    most): its process group, and its autogroup (where the kernel has them, each session
    is scheduled as one entity: a hundred busy jobs would otherwise each weigh as much as
    the whole daemon). What the leader forks later inherits them.

    The leader alone is reniced (3 us; the whole group costs 230 us: a quarter of a short
    job's launch), unless it has forked already: then the group."""
    process, group = job_priority(nice)
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, leader, process)
        if _has_children(leader):
            os.setpriority(os.PRIO_PGRP, leader, process)
    if group is not None:
        with contextlib.suppress(OSError):
            fd = os.open(f"/proc/{leader}/autogroup", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, str(group).encode())
            finally:
                os.close(fd)


def job_priority(nice: int) -> tuple[int | None, int | None]:
    """The niceness of a process, and of its autogroup, ``nice`` steps below the daemon
    (None: leave it; the autogroup's also where there are no autogroups)."""
    if not nice:
        return None, None
    own, own_group = _own_priority()
    return min(19, own + nice), None if own_group is None else min(19, own_group + nice)


def _has_children(pid: int) -> bool:
    try:
        fd = os.open(f"/proc/{pid}/task/{pid}/children", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return bool(os.read(fd, 64).strip())
    except OSError:
        return False
    finally:
        os.close(fd)


@functools.cache
def _own_priority() -> tuple[int, int | None]:
    """The daemon's niceness and its autogroup's (None: no autogroups), read once: not
    again for every job it starts."""
    own = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        with open("/proc/self/autogroup") as f:
            return own, autogroup_level(f.read(), own)
    except OSError:
        return own, None


def autogroup_level(shown: str, own: int) -> int | None:
    """The niceness the daemon's autogroup weighs as, from what /proc/self/autogroup
    shows ("/autogroup-42 nice 0"). Nothing shown: the daemon is in the kernel's default
    autogroup (a session older than autogroups, under init), where each of its threads
    weighs as itself: its own niceness. None: unreadable."""
    fields = shown.split()
    if not fields:
        return own
    try:
        return int(fields[-1])
    except ValueError:
        return None


def with_start_times(results: list[Any]) -> list[Any]:
    """``results`` with each Spawned's start time read (anything else passes through)."""
    return [dataclasses.replace(r, start_time=process_start_time(r.pid))
            if isinstance(r, Spawned) and r.start_time is None else r for r in results]


def descendants(pid: int) -> list[int]:
    """Every living descendant of ``pid`` (children of each of its threads, and theirs):
    under a subreaper, those that left the process group are still among them."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a whole process group; False if the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


class Reaper:
    """Watches launched processes and calls back once each exits. Thread-safe."""

    def __init__(self) -> None:
        self._selector = WakeableSelector()
        self._lock = threading.Lock()
        self._pending: list[tuple[int, ExitCallback, subprocess.Popen | None]] = []
        self._watched: dict[int, tuple[int, ExitCallback, subprocess.Popen | None]] = {}
        self._deadlines: list[tuple[float, int]] = []  # (when, pid): SIGKILL the tree then
        self._senders: dict[int, Callable[[int, int], bool]] = {}  # how to reach a tree
        # Processes whose parent reports their exits (the keeper): no pidfd of ours.
        self._reported: dict[int, tuple[ExitCallback, subprocess.Popen | None]] = {}
        self._early: dict[int, int | None] = {}  # reported before they were watched
        self._settled: list[tuple[int, ExitCallback, subprocess.Popen | None, int | None]] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="zeph-reaper", daemon=True)
        self._thread.start()

    def watch(self, pid: int, callback: ExitCallback,
              popen: subprocess.Popen | None = None) -> None:
        """Call ``callback(pid, returncode)`` on the reaper thread when ``pid`` exits.

        For our own children the return code is collected (zombies never pile up); for a
        process we did not start (re-adopted) it is None. A pid already gone calls back soon.
        """
        with self._lock:
            self._pending.append((pid, callback, popen))
        self._wake()

    def watch_reported(self, pid: int, callback: ExitCallback) -> None:
        """Like ``watch``, for a process whose exit its parent reports (``report``)."""
        with self._lock:
            if pid in self._early:
                self._settled.append((pid, callback, None, self._early.pop(pid)))
            else:
                self._reported[pid] = (callback, None)
                return
        self._wake()

    def report(self, pid: int, code: int | None) -> None:
        """A process's parent says it exited with ``code``. Any thread."""
        with self._lock:
            watched = self._reported.pop(pid, None)
            if watched is None:
                self._early[pid] = code  # (its watch comes right after its start)
                if len(self._early) > EARLY_KEPT:  # ones nobody watches: the oldest go
                    del self._early[next(iter(self._early))]
                return
            self._settled.append((pid, watched[0], watched[1], code))
        self._wake()

    def unreported(self, pids: set[int]) -> None:
        """Their parent is gone: watch these processes ourselves from now on."""
        with self._lock:
            for pid in pids:
                watched = self._reported.pop(pid, None)
                if watched is not None:
                    self._pending.append((pid, watched[0], watched[1]))
        self._wake()

    def stop_process(self, pid: int, grace: float,
                     send: Callable[[int, int], bool] = signal_group) -> None:
        """SIGTERM the tree of ``pid`` now and SIGKILL it after ``grace`` seconds unless
        the leader has exited by then (the rest is killed at its exit). ``send(pid, sig)``
        reaches the tree: by default its process group."""
        send(pid, signal.SIGTERM)
        with self._lock:
            self._senders[pid] = send
            heapq.heappush(self._deadlines, (time.monotonic() + grace, pid))
        self._wake()

    def close(self) -> None:
        self._stopping = True
        self._wake()
        self._thread.join(5)
        self._selector.close()

    def _wake(self) -> None:
        self._selector.wake()

    def _run(self) -> None:
        while not self._stopping:
            self._register_pending()
            timeout = self._next_timeout()
            for fd, pid in self._selector.select(timeout):
                if pid is not WAKE:
                    self._exited(fd, pid)
            self._expire_deadlines()

    def _register_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            settled, self._settled = self._settled, []
        for pid, callback, popen, code in settled:
            self._finish(pid, callback, popen, code)
        for pid, callback, popen in pending:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                self._finish(pid, callback, popen)
                continue
            self._watched[fd] = (pid, callback, popen)
            self._selector.register(fd, pid)

    def _exited(self, fd: int, pid: int) -> None:
        self._selector.unregister(fd)
        os.close(fd)
        _, callback, popen = self._watched.pop(fd)
        self._finish(pid, callback, popen)

    def _finish(self, pid: int, callback: ExitCallback, popen: subprocess.Popen | None,
                returncode: int | None = None) -> None:
        if returncode is None:
            try:
                reaped, status = os.waitpid(pid, os.WNOHANG)
                if reaped == pid:
                    returncode = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                pass  # not our child: someone else reaps it (re-adopted process)
        if popen is not None and returncode is not None:
            popen.returncode = returncode  # so Popen never waits on a reaped pid
        with self._lock:
            stopping = any(p == pid for _, p in self._deadlines)
            self._deadlines = [(w, p) for w, p in self._deadlines if p != pid]
            heapq.heapify(self._deadlines)
            send = self._senders.pop(pid, signal_group)
        if stopping:
            send(pid, signal.SIGKILL)  # grandchildren left in the tree go too
        try:
            callback(pid, returncode)
        except Exception:
            log.exception("exit callback for pid %d failed", pid)

    def _next_timeout(self) -> float | None:
        with self._lock:
            if not self._deadlines:
                return None
            return max(0.0, self._deadlines[0][0] - time.monotonic())

    def _expire_deadlines(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = []
            while self._deadlines and self._deadlines[0][0] <= now:
                due.append(heapq.heappop(self._deadlines)[1])
            senders = [self._senders.get(pid, signal_group) for pid in due]
        for pid, send in zip(due, senders, strict=True):
            if send(pid, signal.SIGKILL):
                log.info("pid %d ignored SIGTERM; killed its process tree", pid)




def describe_exit(code: int | None) -> str:
    """What an exit status means, as the user reads it."""
    if code is None:
        return "the process ended but its exit status was not recorded"
    if code < 0:
        return f"killed by signal {_signame(-code)}"
    if code > 128 and _signame(code - 128, None):
        return f"exit code {code} (signal {_signame(code - 128)})"
    if code == 127:
        return "exit code 127 (command not found)"
    return f"exit code {code}"


def _signame(num: int, default: str | None = "?") -> str | None:
    try:
        return signal.Signals(num).name
    except ValueError:
        return default if default is None else f"{num}"
