"""The feed: who is subscribed to which jobs, and what they are sent.

``job.updated`` (and ``session.updated`` for sessions) go to the connections subscribed
to the job or to all of its owner's jobs; ``job.output`` streams a job's log from a byte
offset to one connection, fed from the file by the output thread, and waits while that
connection has more than OUTPUT_MAX_PENDING unsent (a slow reader never slows the job).
Thread-safe: the job manager and the agent publish from their own threads, the rooms
service tells when a connection goes. In a cluster, every update is also said to the
other nodes, whose feeds hand it to their own subscribers of that job or owner; and a
subscriber of another node's job gets its output as a stream: the owner's feed follows
the log and tells the chunks to the subscriber's node, at most STREAM_WINDOW bytes ahead
of what that node has handed to its client (it acknowledges as it does).
"""

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from zephserver.jobs.cluster_queue import queue_fields
from zephserver.launch.output import Follower, Tail
from zephserver.launch.states import TERMINAL
from zephserver.wire import notification

UPDATED = "jobs.updated"  # the cluster event carrying an update to the other nodes
OUTPUT, ACK, UNFOLLOW = "jobs.output", "jobs.output.ack", "jobs.output.unfollow"
STREAM_WINDOW = 4 << 20  # bytes a stream may be ahead of its subscriber's node
ACK_RETRY = 0.02  # seconds between looks at a slow subscriber's client




class Feed:
    def __init__(self, rooms: Any, tail: Tail, to_json: Callable[[Any], dict],
                 session_view: Callable[[Any], dict], max_pending: int = 8 << 20,
                 cluster: Any = None) -> None:
        self.rooms = rooms
        self.cluster = cluster if cluster is not None and cluster.enabled else None
        self.tail = tail
        self.to_json = to_json
        self.session_view = session_view
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._by_job: dict[int, set[str]] = {}
        self._by_owner: dict[int, set[str]] = {}
        self._followers: dict[str, dict[int, Follower]] = {}  # cid -> job id -> follower
        # another node's job, followed for a client here: stream -> (conn, job id, node)
        self._incoming: dict[str, tuple[Any, int, str]] = {}
        self._owed: dict[str, int] = {}  # stream -> bytes handed over, not acknowledged
        self._acker: threading.Thread | None = None
        # this node's jobs, followed for another node: stream -> [follower, node, unacked]
        self._outgoing: dict[str, list] = {}
        if self.cluster is not None:
            for event, callback in self._cluster_events():
                self.cluster.subscribe(event, callback)

    def _cluster_events(self) -> list[tuple[str, Callable]]:
        return [(UPDATED, self._from_cluster), (OUTPUT, self._stream_chunk),
                (ACK, self._stream_acked), (UNFOLLOW, self._stream_unfollowed),
                ("cluster.node_down", self._node_down)]

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
        if self.cluster is not None:  # (with what another node's copy of the queue needs)
            self.cluster.say(UPDATED, {"id": job.pk, "owner": job.owner_id, "texts": texts,
                                       "queue": queue_fields(job)})
        self._deliver(cids, texts)

    def send_queue(self, job: Any) -> None:
        """What the other nodes' queues need of ``job`` (a new one: no client is told)."""
        if self.cluster is not None:
            self.cluster.say(UPDATED, {"id": job.pk, "owner": job.owner_id, "texts": [],
                                       "queue": queue_fields(job)})

    def _from_cluster(self, update: dict) -> None:  # the cluster's dispatcher thread
        with self._lock:
            cids = (self._by_job.get(update["id"], set())
                    | self._by_owner.get(update["owner"], set()))
        self._deliver(cids, update["texts"])

    def close(self) -> None:
        if self.cluster is not None:
            for event, callback in self._cluster_events():
                self.cluster.unsubscribe(event, callback)
        with self._lock:
            outgoing, self._outgoing = self._outgoing, {}
        for follower, _, _ in outgoing.values():
            self.tail.unfollow(follower)

    # -- another node's job, for a client of this node ------------------------------------

    def expect_stream(self, conn: Any, job_id: int, node: str) -> str:
        """A new stream id for the output of ``node``'s job ``job_id`` to ``conn`` (which
        also gets the job's updates)."""
        stream = uuid.uuid4().hex
        with self._lock:
            self._by_job.setdefault(job_id, set()).add(conn.cid)
            old = [s for s, (c, j, _) in self._incoming.items()
                   if c.cid == conn.cid and j == job_id]
            self._incoming[stream] = (conn, job_id, node)
        for s in old:  # a resubscription replaces the stream it had
            self.drop_stream(s)
        return stream

    def drop_stream(self, stream: str) -> None:
        with self._lock:
            entry = self._incoming.pop(stream, None)
            self._owed.pop(stream, None)
        if entry is not None and self.cluster is not None:
            with contextlib.suppress(KeyError):
                self.cluster.tell(entry[2], UNFOLLOW, {"stream": stream})

    def _stream_chunk(self, m: dict) -> None:  # the cluster's dispatcher thread
        with self._lock:
            entry = self._incoming.get(m["stream"])
        if entry is None:
            return  # unsubscribed meanwhile (the owner has been told)
        conn = entry[0]
        params = {k: m[k] for k in ("id", "offset", "next_offset", "data") if k in m}
        if m.get("eof"):
            params["eof"] = True
            with self._lock:
                self._incoming.pop(m["stream"], None)
        conn.send_text(notification("job.output", params))
        size = m["next_offset"] - m["offset"]
        if size:
            with self._lock:
                self._owed[m["stream"]] = self._owed.get(m["stream"], 0) + size
            self._acknowledge()

    def _acknowledge(self) -> None:
        """Acknowledge what clients have taken; while one is behind, look again every
        ACK_RETRY on a thread of its own (its stream's owner waits meanwhile)."""
        if not self._ack_taken():
            return
        with self._lock:
            if self._acker is not None:
                return
            self._acker = threading.Thread(target=self._ack_later, daemon=True,
                                           name="zeph-feed-acks")
            self._acker.start()

    def _ack_later(self) -> None:
        try:
            while self._ack_taken():
                time.sleep(ACK_RETRY)
        finally:
            with self._lock:
                self._acker = None

    def _ack_taken(self) -> bool:
        """Tell owners what the clients took; True if some client is still behind."""
        with self._lock:
            owed = [(s, n, self._incoming[s]) for s, n in self._owed.items()
                    if s in self._incoming]
        behind = False
        for stream, size, (conn, _, node) in owed:
            if getattr(conn, "pending_bytes", lambda: 0)() >= self.max_pending:
                behind = True
                continue
            with self._lock:
                self._owed.pop(stream, None)
            with contextlib.suppress(KeyError):
                self.cluster.tell(node, ACK, {"stream": stream, "bytes": size})
        return behind

    # -- this node's job, for a client of another node ------------------------------------

    def stream_to(self, node: str, stream: str, job: Any, offset: int) -> None:
        """Follow ``job``'s log from ``offset`` and tell it to ``node`` as ``stream``."""
        if not job.log_path:
            self.cluster.tell(node, OUTPUT, {"stream": stream, "id": job.pk, "offset": 0,
                                             "next_offset": 0, "data": "", "eof": True})
            return

        def deliver(at: int, data: bytes) -> None:  # output thread
            with self._lock:
                entry = self._outgoing.get(stream)
                if entry is not None:
                    entry[2] += len(data)
            self.cluster.tell(node, OUTPUT, {
                "stream": stream, "id": job.pk, "offset": at, "next_offset": at + len(data),
                "data": data.decode("utf-8", "replace")})

        def ready() -> bool:
            with self._lock:
                entry = self._outgoing.get(stream)
            return entry is not None and entry[2] < STREAM_WINDOW

        def done(end: int) -> None:
            with self._lock:
                self._outgoing.pop(stream, None)
            self.cluster.tell(node, OUTPUT, {"stream": stream, "id": job.pk, "offset": end,
                                             "next_offset": end, "data": "", "eof": True})

        follower = Follower(job.log_path, offset, deliver, ready, done)
        if job.state in TERMINAL:
            follower.final = True
        with self._lock:
            self._outgoing[stream] = [follower, node, 0]
        self.tail.follow(follower)

    def _stream_acked(self, m: dict) -> None:
        with self._lock:
            entry = self._outgoing.get(m["stream"])
            if entry is None:
                return
            was_full = entry[2] >= STREAM_WINDOW
            entry[2] -= m["bytes"]
        if was_full:  # the follower waits: resume at once, not at the tail's next retry
            self.tail.ready_again(entry[0])

    def _stream_unfollowed(self, m: dict) -> None:
        with self._lock:
            entry = self._outgoing.pop(m["stream"], None)
        if entry is not None:
            self.tail.unfollow(entry[0])

    def _node_down(self, data: dict) -> None:
        """A subscriber's node gone: its streams stop (a client resubscribes from its
        last offset)."""
        with self._lock:
            gone = [s for s, e in self._outgoing.items() if e[1] == data["node"]]
            entries = [self._outgoing.pop(s) for s in gone]
        for follower, _, _ in entries:
            self.tail.unfollow(follower)

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
                follower, streams = None, []
            else:
                self._by_job.get(job_id, set()).discard(cid)
                follower = self._followers.get(cid, {}).pop(job_id, None)
                streams = [s for s, (c, j, _) in self._incoming.items()
                           if c.cid == cid and j == job_id]
        if follower is not None:
            self.tail.unfollow(follower)
        for stream in streams:
            self.drop_stream(stream)

    def connection_gone(self, cid: str) -> None:
        """Forget a closed connection (the rooms service's thread: bookkeeping only)."""
        with self._lock:
            for table in (self._by_job, self._by_owner):
                for key in [k for k, cids in table.items() if cid in cids]:
                    table[key].discard(cid)
                    if not table[key]:
                        del table[key]
            followers = self._followers.pop(cid, {})
            streams = [s for s, (c, _, _) in self._incoming.items() if c.cid == cid]
        for follower in followers.values():
            self.tail.unfollow(follower)
        for stream in streams:
            self.drop_stream(stream)
