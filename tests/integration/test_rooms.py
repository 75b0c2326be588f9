import json
import threading

import pytest

from zephserver.service.room_handler import RoomHandlerService
from zephserver.task.base import ANONYMOUS, UserInfo

pytestmark = pytest.mark.integration


class RecordingConnection:
    """A connection that keeps what it was sent (stands in for a WebSocket)."""

    def __init__(self, cid: str, user: UserInfo) -> None:
        self.cid = cid
        self.user = user
        self.sent: list[dict] = []
        self.lock = threading.Lock()

    def send_text(self, text: str) -> None:
        with self.lock:
            self.sent.append(json.loads(text))

    def methods(self) -> list[str]:
        return [m["method"] for m in self.sent]


def test_dropped_connections_leave_nothing_behind():
    """Unregistering every connection, anonymous or not, empties every table."""
    rooms = RoomHandlerService()
    alice = RecordingConnection("n-1", UserInfo(1, "alice"))
    alice2 = RecordingConnection("n-2", UserInfo(1, "alice"))
    anon = RecordingConnection("n-3", ANONYMOUS)
    for conn in (alice, alice2, anon):
        rooms.register(conn)
    rooms.join("n-1", "a")
    rooms.join("n-2", "a")
    rooms.join("n-3", "b")
    assert rooms.counts() == {"connections": 3, "users": 1, "rooms": 2}
    assert rooms.send_to_user(1, "x", {}) == 2
    rooms.unregister("n-1")
    assert "room.left" in alice2.methods()
    for cid in ("n-2", "n-3", "n-3"):  # a second unregister is harmless
        rooms.unregister(cid)
    assert rooms.counts() == {"connections": 0, "users": 0, "rooms": 0}
    assert rooms._joined == {}


def test_send_from_many_threads():
    """send_to_all is safe from many threads at once and reaches every connection."""
    rooms = RoomHandlerService()
    conns = [RecordingConnection(f"n-{i}", UserInfo(i, f"u{i}")) for i in range(10)]
    for c in conns:
        rooms.register(c)
    threads = [threading.Thread(target=lambda: [rooms.send_to_all("tick", {}) for _ in range(50)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(c.sent) == 200 for c in conns)
