"""Watching files for writes with inotify, by path: the kernel says which files changed,
so a thread that cares about writes sleeps while nothing is written (no poll tick)."""

import ctypes
import logging
import os
import struct

IN_MODIFY = 0x002
IN_CLOSE_WRITE = 0x008
IN_Q_OVERFLOW = 0x4000
EVENT = struct.Struct("iIII")
log = logging.getLogger(__name__)


class PathWatch:
    """Not thread-safe: its owner serialises calls. ``fd`` is for a selector."""

    def __init__(self, mask: int = IN_MODIFY | IN_CLOSE_WRITE) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.mask = mask
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:  # pragma: no cover - inotify is always there on Linux
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._wds: dict[str, int] = {}
        self._paths: dict[int, str] = {}

    def __contains__(self, path: str) -> bool:
        return path in self._wds

    def paths(self) -> set[str]:
        return set(self._wds)

    def add(self, path: str) -> bool:
        """Watch ``path`` (again: nothing happens); False, logged, if it cannot be."""
        if path in self._wds:
            return True
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), self.mask)
        if wd < 0:
            log.warning("cannot watch %s: %s", path, os.strerror(ctypes.get_errno()))
            return False
        self._wds[path] = wd
        self._paths[wd] = path
        return True

    def remove(self, path: str) -> None:
        wd = self._wds.pop(path, None)
        if wd is not None:
            self._paths.pop(wd, None)
            self._libc.inotify_rm_watch(self.fd, wd)

    def changed(self) -> set[str] | None:
        """The watched paths written since the last call; None if the kernel's queue
        overflowed (then any of them may have been)."""
        found: set[str] = set()
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return found
            pos = 0
            while pos + EVENT.size <= len(data):
                wd, mask, _cookie, length = EVENT.unpack_from(data, pos)
                pos += EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    return None
                path = self._paths.get(wd)
                if path is not None:
                    found.add(path)

    def close(self) -> None:
        os.close(self.fd)
