"""Live consoles of a supervised process: its log, one WebSocket text frame per line.

All consoles of one process share one follower of its log (a ``ConsoleGroup``): the
lines are split, checked and framed once, and the same bytes go to every console
that can take them. A console that cannot (it has more than its limit unsent) misses
those lines and later gets a marker saying how much; when no console can take more, the
log is not read at all, and past ``max_lag`` unread bytes the group jumps to the end.
So neither the process nor the other consoles ever wait for a slow one, and five
consoles cost about what one does.
"""

import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from zephserver.launch.output import Follower, read_range, valid_utf8

MAX_CARRY = 64 * 1024  # a "line" this long without a newline is sent as it is
WINDOW = 0.1  # seconds over which a console's rate is counted


def text_frames(lines: list[bytes]) -> bytes:
    """Final, unmasked WebSocket text frames (RFC 6455 5.2), one per line, as a server
    sends them (consoles never negotiate compression). Built in one pass and written in
    one call: write_message per line costs microseconds each, a core for a fast printer."""
    head = b"\x81"
    return b"".join([head + bytes((len(line),)) + line if len(line) < 126
                     else struct.pack("!BBH", 0x81, 126, len(line)) + line if len(line) < 65536
                     else struct.pack("!BBQ", 0x81, 127, len(line)) + line
                     for line in lines])


class Console:
    """One attached console. ``write(frames)`` must be callable from any thread and hand
    the bytes to its connection; ``written(n)`` is called back once they are sent."""

    def __init__(self, write: Callable[[bytes], None], max_pending: int,
                 max_rate: int = 0) -> None:
        self._write = write
        self.max_pending = max_pending
        # bytes per second at most (0: no limit): a console is for watching, and a cap
        # keeps what a fast printer costs the machine (and so the printer) small
        self._budget = max_rate * WINDOW
        self._window = 0.0
        self._window_sent = 0
        self._lock = threading.Lock()
        self._pending = 0
        self._skipped = 0
        self.on_written: Callable[[int], None] | None = None  # told each ``written``

    def ready(self) -> bool:
        return self._pending < self.max_pending and not self._over_budget(0)

    def _over_budget(self, size: int) -> bool:
        if not self._budget:
            return False
        now = time.monotonic()
        if now - self._window >= WINDOW:
            self._window, self._window_sent = now, 0
        return self._window_sent + size > self._budget and self._window_sent > 0

    def offer(self, frames: bytes, size: int) -> None:
        """New lines (``size`` bytes of log): sent if this console keeps up, else counted."""
        with self._lock:
            if self._pending >= self.max_pending or self._over_budget(len(frames)):
                self._skipped += size
                return
            marker = self._marker()
            self._pending += len(marker) + len(frames)
            self._window_sent += len(frames)
        self._write(marker + frames if marker else frames)

    def missed(self, size: int) -> None:
        """``size`` bytes went by unread. An idle console is told now: no ``written`` may
        come to carry the marker if the process prints nothing more."""
        with self._lock:
            self._skipped += size
            marker = self._marker() if self._pending == 0 else b""
            self._pending += len(marker)
        if marker:
            self._write(marker)

    def send(self, frames: bytes) -> None:
        with self._lock:
            self._pending += len(frames)
        self._write(frames)

    def written(self, size: int) -> None:
        with self._lock:
            self._pending -= size
            # caught up after missing lines, and nothing new may come: say so now
            marker = self._marker() if self._pending == 0 else b""
            self._pending += len(marker)
        if marker:
            self._write(marker)
        if self.on_written is not None:
            self.on_written(size)

    def _marker(self) -> bytes:
        if not self._skipped:
            return b""
        skipped, self._skipped = self._skipped, 0
        return text_frames([f"[zephserver: {skipped} bytes skipped: this console fell "
                            "behind]".encode()])


class ConsoleGroup:
    """The consoles of one log file and the one follower that feeds them."""

    def __init__(self, path: str, offset: int, max_lag: int) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.consoles: set[Console] = set()
        self._carry = b""
        self._delivered = offset  # end of the complete lines handed out so far
        self.follower = Follower(path, offset, self._feed, self._ready, max_lag=max_lag,
                                 skipped=self._skip)

    def attach(self, console: Console, replay_lines: int) -> None:
        """Give ``console`` the last ``replay_lines`` complete lines, then the live ones,
        with no gap and no repeat between the two."""
        with self._lock:
            end = self._delivered
            if replay_lines:
                back = min(end, replay_lines * 256 + 4096)
                recent = read_range(self.path, end - back, back).split(b"\n")
                if back < end:
                    recent = recent[1:]  # a partial first line
                lines = [valid_utf8(line) for line in recent[:-1][-replay_lines:]]
                if lines:
                    console.send(text_frames(lines))
            self.consoles.add(console)

    def detach(self, console: Any) -> bool:
        """Forget ``console``; True if the group has no console left."""
        with self._lock:
            self.consoles.discard(console)
            return not self.consoles

    def _ready(self) -> bool:  # output thread: nobody can take more: leave it in the file
        return any(c.ready() for c in list(self.consoles))

    def _skip(self, size: int) -> None:  # output thread: jumped over ``size`` bytes
        with self._lock:
            for c in self.consoles:
                c.missed(size + len(self._carry))
            self._delivered += size + len(self._carry)
            self._carry = b""

    def _feed(self, offset: int, data: bytes) -> None:  # output thread
        with self._lock:
            chunk = self._carry + data
            cut = chunk.rfind(b"\n")
            if cut < 0 and len(chunk) <= MAX_CARRY:
                self._carry = chunk
                return
            if cut < 0:
                body, self._carry = chunk, b""
                lines = [valid_utf8(body)]
            else:
                body, self._carry = chunk[:cut + 1], chunk[cut + 1:]
                lines = valid_utf8(body[:-1]).split(b"\n")
            self._delivered += len(body)
            frames = text_frames(lines)
            for c in self.consoles:
                c.offer(frames, len(body))
