"""The feed: who is subscribed to which jobs, and what they are sent.

``job.updated`` (and ``session.updated`` for sessions) go to the connections subscribed
to the job or to all of its owner's jobs; ``job.output`` streams a job's log from a byte
offset to one connection, fed from the file by the output thread, and waits while that
connection has more than OUTPUT_MAX_PENDING unsent (a slow reader never slows the job).
Thread-safe: the job manager and the agent publish from their own threads, the rooms
service tells when a connection goes. In a cluster, every update is also said to the
other nodes, whose feeds hand it to their own subscribers of that job or owner.
"""

import json
import threading
from collections.abc import Callable
from typing import Any

from zephserver.launch.output import Follower, Tail
from zephserver.launch.states import TERMINAL

UPDATED = "jobs.updated"  # the cluster event carrying an update to the other nodes


def notification(method: str, params: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": params},
                      separators=(",", ":"))


class Feed:
    def __init__(self, rooms: Any, tail: Tail, to_json: Callable[[Any], dict],
                 session_view: Callable[[Any], dict], max_pending: int = 8 << 20,
                 cluster: Any = None) -> None:
        self.rooms = rooms
        self.cluster = cluster if cluster is not None and cluster.enabled else None
        if self.cluster is not None:
            self.cluster.subscribe(UPDATED, self._from_cluster)
        self.tail = tail
        self.to_json = to_json
        self.session_view = session_view
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._by_job: dict[int, set[str]] = {}
        self._by_owner: dict[int, set[str]] = {}
        self._followers: dict[str, dict[int, Follower]] = {}  # cid -> job id -> follower

    def send_update(self, job: Any) -> None:
        """``job.updated`` (+ ``session.updated``) to every subscriber of ``job`` now,
        on every node."""
        with self._lock:
            cids = self._by_job.get(job.pk, set()) | self._by_owner.get(job.owner_id, set())
        if not cids and self.cluster is None:
            return
        texts = [notification("job.updated", self.to_json(job))]
        if job.kind == "session":
            texts.append(notification("session.updated", self.session_view(job)))
        if self.cluster is not None:
            self.cluster.say(UPDATED, {"id": job.pk, "owner": job.owner_id, "texts": texts})
        self._deliver(cids, texts)

    def _from_cluster(self, update: dict) -> None:  # the cluster's dispatcher thread
        with self._lock:
            cids = (self._by_job.get(update["id"], set())
                    | self._by_owner.get(update["owner"], set()))
        self._deliver(cids, update["texts"])

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.unsubscribe(UPDATED, self._from_cluster)

    def _deliver(self, cids: set[str], texts: list[str]) -> None:
        for cid in cids:
            conn = self.rooms.connection(cid)
            if conn is not None:
                for text in texts:
                    conn.send_text(text)

    def subscribe_owner(self, owner_id: int, cid: str) -> None:
        with self._lock:
            self._by_owner.setdefault(owner_id, set()).add(cid)

    def subscribe_job(self, job: Any, conn: Any, offset: int) -> None:
        """Updates of ``job`` to ``conn``, and its log from ``offset`` on (again from
        there if it was already subscribed)."""
        with self._lock:
            self._by_job.setdefault(job.pk, set()).add(conn.cid)
            old = self._followers.setdefault(conn.cid, {}).pop(job.pk, None)
        if old is not None:
            self.tail.unfollow(old)
        if not job.log_path:  # never started: no log yet
            return
        follower = self._output_follower(conn, job, offset)
        with self._lock:
            self._followers.setdefault(conn.cid, {})[job.pk] = follower
        if job.state in TERMINAL:
            follower.final = True
        self.tail.follow(follower)

    def _output_follower(self, conn: Any, job: Any, offset: int) -> Follower:
        job_id = job.pk
        pending = getattr(conn, "pending_bytes", lambda: 0)
        limit = self.max_pending

        def deliver(at: int, data: bytes) -> None:
            conn.send_text(notification("job.output", {
                "id": job_id, "offset": at, "next_offset": at + len(data),
                "data": data.decode("utf-8", "replace")}))

        def done(end: int) -> None:
            conn.send_text(notification("job.output", {
                "id": job_id, "offset": end, "next_offset": end, "data": "", "eof": True}))
            with self._lock:
                self._followers.get(conn.cid, {}).pop(job_id, None)

        return Follower(job.log_path, offset, deliver, lambda: pending() < limit, done)

    def unsubscribe(self, owner_id: int, cid: str, job_id: int | None) -> None:
        """From one job, or (``job_id`` None) from all of the owner's."""
        with self._lock:
            if job_id is None:
                self._by_owner.get(owner_id, set()).discard(cid)
                follower = None
            else:
                self._by_job.get(job_id, set()).discard(cid)
                follower = self._followers.get(cid, {}).pop(job_id, None)
        if follower is not None:
            self.tail.unfollow(follower)

    def connection_gone(self, cid: str) -> None:
        """Forget a closed connection (the rooms service's thread: bookkeeping only)."""
        with self._lock:
            for table in (self._by_job, self._by_owner):
                for key in [k for k, cids in table.items() if cid in cids]:
                    table[key].discard(cid)
                    if not table[key]:
                        del table[key]
            followers = self._followers.pop(cid, {})
        for follower in followers.values():
            self.tail.unfollow(follower)
