"""Room handler: connections, per-user connection lists, rooms, and sending to them.

Knows nothing of tornado: a connection is any object with ``cid``, ``user`` and a
thread-safe ``send_text(text)``. Every method may be called from any thread; the lock
is held only to read or change the tables, never while sending.
"""

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

from zephserver.infra.service import Service
from zephserver.task.base import UserInfo
from zephserver.wire import notification

log = logging.getLogger(__name__)


class Connection(Protocol):
    cid: str
    user: UserInfo

    def send_text(self, text: str) -> None: ...




CLUSTER_EVENT = "rooms.deliver"
MEMBERS = "rooms.members"  # who joined or left a room on the node that says it


class RoomHandlerService(Service):
    name = "rooms"

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._conns: dict[str, Connection] = {}
        self._by_user: dict[int, set[str]] = defaultdict(set)
        self._rooms: dict[str, set[str]] = defaultdict(set)
        self._joined: dict[str, set[str]] = defaultdict(set)  # cid -> rooms
        # Members on other nodes (what they said): room -> {(node, cid): user name}
        self._remote: dict[str, dict[tuple[str, str], str]] = defaultdict(dict)
        self._unregister_listeners: list[Callable[[str], None]] = []

    # -- connections ------------------------------------------------------------------

    def register(self, conn: Connection) -> None:
        with self._lock:
            self._conns[conn.cid] = conn
            if conn.user.id is not None:
                self._by_user[conn.user.id].add(conn.cid)

    def add_unregister_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(cid)`` whenever a connection goes (services drop their state)."""
        with self._lock:
            self._unregister_listeners.append(listener)

    def remove_unregister_listener(self, listener: Callable[[str], None]) -> None:
        with self._lock:
            if listener in self._unregister_listeners:
                self._unregister_listeners.remove(listener)

    def unregister(self, cid: str) -> None:
        """Forget a connection and take it out of every room (others are told)."""
        with self._lock:
            conn = self._conns.pop(cid, None)
            if conn is None:
                return
            listeners = list(self._unregister_listeners)
            if conn.user.id is not None:
                cids = self._by_user.get(conn.user.id)
                if cids is not None:
                    cids.discard(cid)
                    if not cids:
                        del self._by_user[conn.user.id]
            rooms = self._joined.pop(cid, set())
        for room in rooms:
            self._left(room, cid, conn.user)
        for listener in listeners:
            try:
                listener(cid)
            except Exception:
                log.exception("unregister listener failed for %s", cid)

    def connection(self, cid: str) -> Connection | None:
        with self._lock:
            return self._conns.get(cid)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"connections": len(self._conns), "users": len(self._by_user),
                    "rooms": len(self._rooms)}

    # -- rooms -------------------------------------------------------------------------

    def join(self, cid: str, room: str) -> list[str]:
        """Put ``cid`` in ``room``; members get ``room.joined`` and ``room.users``."""
        with self._lock:
            conn = self._conns.get(cid)
            if conn is None:
                return []
            self._rooms[room].add(cid)
            self._joined[cid].add(room)
        self._tell_membership(room, cid, conn.user.username, True)
        users = self.users_in(room)
        self.send_to_room(room, "room.joined", {"room": room, "user": conn.user.username,
                                                "cid": cid}, exclude=cid)
        self.send_to_room(room, "room.users", {"room": room, "users": users})
        return users

    def leave(self, cid: str, room: str) -> bool:
        with self._lock:
            conn = self._conns.get(cid)
            if conn is None or cid not in self._rooms.get(room, ()):
                return False
            self._joined[cid].discard(room)
            if not self._joined[cid]:
                del self._joined[cid]
        self._left(room, cid, conn.user)
        return True

    def _left(self, room: str, cid: str, user: UserInfo) -> None:
        with self._lock:
            members = self._rooms.get(room)
            if members is None:
                return
            members.discard(cid)
            if not members:
                del self._rooms[room]
        self._tell_membership(room, cid, user.username, False)
        self.send_to_room(room, "room.left", {"room": room, "user": user.username, "cid": cid})
        self.send_to_room(room, "room.users", {"room": room, "users": self.users_in(room)})

    def is_member(self, cid: str, room: str) -> bool:
        with self._lock:
            return cid in self._rooms.get(room, ())

    def users_in(self, room: str) -> list[str]:
        """Who is in ``room``, on every node."""
        with self._lock:
            here = {self._conns[c].user.username for c in self._rooms.get(room, ())
                    if c in self._conns}
            return sorted(here | set(self._remote.get(room, {}).values()))

    # -- other nodes ------------------------------------------------------------------

    def main(self) -> None:
        cluster = getattr(self.ctx, "cluster", None)
        subscriptions = [(CLUSTER_EVENT, self._from_cluster), (MEMBERS, self._members),
                         ("cluster.node_up", self._node_up),
                         ("cluster.node_down", self._node_down)]
        if cluster is not None:
            for event, callback in subscriptions:
                cluster.subscribe(event, callback)
        try:
            super().main()
        finally:
            if cluster is not None:
                for event, callback in subscriptions:
                    cluster.unsubscribe(event, callback)

    # Membership across nodes: each node says who joins and leaves its rooms, tells a
    # node that comes up who is in them now, and forgets a node's members when it goes.

    def _tell_membership(self, room: str, cid: str, user: str, joined: bool) -> None:
        cluster = getattr(self.ctx, "cluster", None)
        if cluster is not None and cluster.enabled:
            cluster.say(MEMBERS, {"node": cluster.node, "changes": [[room, cid, user,
                                                                     joined]]})

    def _members(self, m: dict) -> None:  # cluster dispatcher thread
        with self._lock:
            if m.get("snapshot"):
                for members in self._remote.values():
                    for key in [k for k in members if k[0] == m["node"]]:
                        del members[key]
            for room, cid, user, joined in m["changes"]:
                if joined:
                    self._remote[room][(m["node"], cid)] = user
                else:
                    self._remote[room].pop((m["node"], cid), None)

    def _node_up(self, data: dict) -> None:  # cluster dispatcher thread
        cluster = self.ctx.cluster  # type: ignore[union-attr]
        with self._lock:
            changes = [[room, cid, self._conns[cid].user.username, True]
                       for room, cids in self._rooms.items() for cid in cids
                       if cid in self._conns]
        cluster.tell(data["node"], MEMBERS, {"node": cluster.node, "changes": changes,
                                             "snapshot": True})

    def _node_down(self, data: dict) -> None:  # cluster dispatcher thread
        with self._lock:
            changed = []
            for room, members in self._remote.items():
                gone = [k for k in members if k[0] == data["node"]]
                for key in gone:
                    del members[key]
                if gone and room in self._rooms:
                    changed.append(room)
        for room in changed:  # this node's members hear who is left
            with self._lock:
                cids = list(self._rooms.get(room, ()))
            self._send(cids, "room.users", {"room": room, "users": self.users_in(room)})

    def _tell_cluster(self, kind: str, target: Any, method: str, params: Any,
                      exclude: str | None = None) -> None:
        cluster = getattr(self.ctx, "cluster", None)
        if cluster is not None and cluster.enabled:
            cluster.say(CLUSTER_EVENT, {"kind": kind, "target": target, "method": method,
                                        "params": params, "exclude": exclude})

    def _from_cluster(self, m: dict) -> None:  # cluster dispatcher thread
        with self._lock:
            if m["kind"] == "room":
                cids = [c for c in self._rooms.get(m["target"], ()) if c != m["exclude"]]
            elif m["kind"] == "user":
                cids = list(self._by_user.get(m["target"], ()))
            else:
                cids = list(self._conns)
        self._send(cids, m["method"], m["params"])

    # -- sending (any thread) -------------------------------------------------------------

    def _send(self, cids: list[str], method: str, params: Any) -> int:
        if not cids:
            return 0
        text = notification(method, params)  # serialised once for every recipient
        with self._lock:
            conns = [self._conns[c] for c in cids if c in self._conns]
        for conn in conns:
            conn.send_text(text)
        return len(conns)

    def send_to_cid(self, cid: str, method: str, params: Any) -> bool:
        return self._send([cid], method, params) == 1

    def send_to_user(self, user_id: int, method: str, params: Any) -> int:
        """Every connection of the user, on this node and the others (the count is
        this node's)."""
        with self._lock:
            cids = list(self._by_user.get(user_id, ()))
        self._tell_cluster("user", user_id, method, params)
        return self._send(cids, method, params)

    def send_to_room(self, room: str, method: str, params: Any, exclude: str | None = None) -> int:
        """Every member of ``room`` on any node (the count is this node's)."""
        with self._lock:
            cids = [c for c in self._rooms.get(room, ()) if c != exclude]
        self._tell_cluster("room", room, method, params, exclude)
        return self._send(cids, method, params)

    def send_to_all(self, method: str, params: Any) -> int:
        with self._lock:
            cids = list(self._conns)
        self._tell_cluster("all", None, method, params)
        return self._send(cids, method, params)
