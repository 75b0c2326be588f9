"""TCP ports handed to sessions.

A port is handed out only after a bind test shows it free at that moment (another
program may hold a port of the range; it is skipped, never handed out), and it stays
reserved until the session's process exits. The pool is used from one thread (the job
manager's), so it needs no lock.
"""

import errno
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class PortRange:
    host: str  # the name clients use to reach the session
    low: int
    high: int

    def __str__(self) -> str:
        return f"{self.host}:{self.low}-{self.high}"


def bind_free(port: int) -> bool:
    """Whether nothing listens on ``port`` now (any local address, IPv4 or IPv6).

    SO_REUSEADDR as servers set it: a port whose last connection lingers in TIME_WAIT is
    free for them, so it is for us.
    """
    for family, address in ((socket.AF_INET, ""), (socket.AF_INET6, "::")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 on this machine
            continue
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((address, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            if exc.errno != errno.EADDRNOTAVAIL:  # e.g. IPv6 disabled: not a verdict
                raise
        finally:
            s.close()
    return True


class PortPool:
    def __init__(self) -> None:
        self._owner: dict[tuple[str, int], int] = {}  # (host, port) -> job id
        self._held: dict[int, tuple[str, int]] = {}  # job id -> (host, port)

    def allocate(self, ranges: tuple[PortRange, ...], job_id: int) -> tuple[str, int] | None:
        """The lowest free port of the first range that has one, reserved for ``job_id``."""
        for r in ranges:
            for port in range(r.low, r.high + 1):
                if (r.host, port) not in self._owner and bind_free(port):
                    self.reserve(r.host, port, job_id)
                    return r.host, port
        return None

    def reserve(self, host: str, port: int, job_id: int) -> None:
        """Mark a port taken (a re-adopted session keeps the port it had)."""
        self.release(job_id)
        self._owner[(host, port)] = job_id
        self._held[job_id] = (host, port)

    def release(self, job_id: int) -> None:
        key = self._held.pop(job_id, None)
        if key is not None:
            self._owner.pop(key, None)

    def holder(self, host: str, port: int) -> int | None:
        return self._owner.get((host, port))

    def any_free(self, ranges: tuple[PortRange, ...]) -> bool:
        """Whether a port of ``ranges`` is not reserved (as ``free_count``, but stops at
        the first)."""
        return any((r.host, p) not in self._owner for r in ranges
                   for p in range(r.low, r.high + 1))

    def free_count(self, ranges: tuple[PortRange, ...]) -> int:
        """Ports of ``ranges`` not reserved (some may still be held by other programs)."""
        return sum(1 for r in ranges for p in range(r.low, r.high + 1)
                   if (r.host, p) not in self._owner)
