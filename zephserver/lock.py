"""The daemon's pid lock: the only module that imports ``lockfile`` (so it can be swapped).

lockfile's PIDLockFile never notices a stale lock; ``PidLock.acquire`` does: a lock whose
pid is dead, or is alive but not a zephserver, is broken with a warning.
"""

import logging
import os

from lockfile import AlreadyLocked, LockFailed
from lockfile.pidlockfile import PIDLockFile

from zephserver.errors import AlreadyRunning, LockError

log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (even if owned by another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_cmdline(pid: int) -> list[str]:
    """The argv of a live process, or [] if it cannot be read."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_zephserver(pid: int) -> bool:
    """True if ``pid`` is a live process started as zephserver (console script, -m or main.py)."""
    if pid == os.getpid() or not pid_alive(pid):
        return False
    argv = process_cmdline(pid)
    if not argv:
        # /proc hidden from us: a live pid we cannot inspect is treated as the owner.
        return True
    return any("zephserver" in arg or os.path.basename(arg) == "main.py"
               for arg in _program(argv))


def _program(argv: list[str]) -> list[str]:
    """The interpreter, its options and what it runs (the script, or -m's module): not
    the arguments given to that. The daemon's own start runs as ``python -X
    no_debug_ranges -OO .../zephserver-start`` (zephserver/interpreter.py)."""
    if not os.path.basename(argv[0]).startswith("python"):
        return argv[:1]  # a console script run as itself
    for i, arg in enumerate(argv[1:], 1):
        if arg in ("-X", "-W", "-m", "-c"):
            continue  # (its value follows: the next one)
        if not arg.startswith("-") and argv[i - 1] not in ("-X", "-W"):
            return argv[:i + 1]
    return argv


def read_lock_pid(path: str) -> int | None:
    """The pid written in a lock file, or None if absent or unreadable."""
    return PIDLockFile(path).read_pid()


class PidLock:
    """A pid file held for the life of the daemon."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = PIDLockFile(path, timeout=0)

    def acquire(self) -> None:
        """Take the lock, breaking a stale one.

        Raises:
            AlreadyRunning: a live zephserver holds it.
            LockError: the file cannot be created (permissions, missing directory).
        """
        for _ in range(2):
            try:
                self._lock.acquire(timeout=0)
                return
            except AlreadyLocked:
                pid = self._lock.read_pid()
                if pid is not None and is_zephserver(pid):
                    raise AlreadyRunning(pid) from None
                if pid is None or not pid_alive(pid):
                    reason = "its pid is dead" if pid else "it holds no pid"
                else:
                    reason = f"pid {pid} is not a zephserver"
                log.warning("breaking stale lock %s: %s", self.path, reason)
                self._lock.break_lock()
            except LockFailed as exc:
                raise LockError(f"cannot create lock file {self.path}: {exc}") from exc
        pid = self._lock.read_pid()
        raise AlreadyRunning(pid or 0)

    def adopt_current_pid(self) -> None:
        """Rewrite the lock with this process's pid (after daemonizing forked a new one)."""
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, self.path)

    def release(self) -> None:
        """Remove the lock if this process holds it; harmless otherwise."""
        if self._lock.i_am_locking():
            self._lock.release()
