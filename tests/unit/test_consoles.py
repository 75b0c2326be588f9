"""Consoles: a console that fell behind is always told how much it missed."""

import threading

import pytest

from zephserver.launch.consoles import Console, ConsoleGroup
from zephserver.launch.output import Tail

pytestmark = pytest.mark.timeout(20)


class Wire:
    """What a connection does with a console's bytes: keep them until ``flush``, which
    reports them written, as tornado does once the socket took them."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.unflushed = 0
        self.got = threading.Event()

    def write(self, frames: bytes) -> None:
        self.sent.append(frames)
        self.unflushed += len(frames)
        self.got.set()

    def flush(self, console: Console) -> None:
        n, self.unflushed = self.unflushed, 0
        console.written(n)


def markers(wire: Wire) -> list[bytes]:
    return [f for f in wire.sent if b"[zephserver:" in f]


def test_a_console_gets_its_marker_when_it_caught_up_before_the_skip():
    """The slow console drains first, the group jumps over the backlog after: the marker
    goes out then, not with output that may never come."""
    wire = Wire()
    console = Console(wire.write, max_pending=10)
    console.offer(b"x" * 20, 20)
    assert not console.ready()
    wire.flush(console)
    assert markers(wire) == []
    console.missed(5000)
    assert markers(wire)
    assert b"5000 bytes skipped" in markers(wire)[0]


def test_a_busy_console_gets_its_marker_once_it_has_drained():
    wire = Wire()
    console = Console(wire.write, max_pending=10)
    console.offer(b"x" * 20, 20)
    console.missed(700)
    assert markers(wire) == []
    wire.flush(console)
    assert b"700 bytes skipped" in markers(wire)[0]
    wire.flush(console)
    assert len(markers(wire)) == 1


def test_a_group_past_its_lag_jumps_ahead_and_says_so(tmp_path):
    """A real log and follower: a console that takes nothing while 200 KB are written,
    then drains, gets a marker without any further output."""
    log = tmp_path / "output.log"
    log.write_bytes(b"")
    tail = Tail()
    try:
        group = ConsoleGroup(str(log), 0, max_lag=10_000)
        wire = Wire()
        console = Console(wire.write, max_pending=1000)
        group.attach(console, 0)
        tail.follow(group.follower)
        with open(log, "ab") as out:
            out.write(b"line\n" * 300)
            out.flush()
            assert wire.got.wait(5)
            while console.ready():  # fill it up, as a flood does
                out.write(b"line\n" * 300)
                out.flush()
                wire.got.clear()
                wire.got.wait(0.2)
            out.write((b"y" * 99 + b"\n") * 2000)
        wire.got.clear()
        wire.flush(console)
        assert wire.got.wait(5), "no marker after the jump"
        assert markers(wire), wire.sent[-1][:80]
    finally:
        tail.close()
