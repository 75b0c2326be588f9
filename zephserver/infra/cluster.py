"""Cluster manager: say / subscribe / unsubscribe across CLUSTER_SERVER_LIST over ZeroMQ.

With fewer than two nodes there is no cluster and every call is a silent success, so
applications run unchanged on one node.

How it works (one thread owns every ZeroMQ socket: the ``cluster`` service's,
"zeph-svc-cluster", supervised like any service: if the socket loop fails it is run again
after a backoff, messages not yet acknowledged are kept and sent again, and
``zephserver-status`` shows its state):

- each node binds a ROUTER on its own address and connects a DEALER to every peer's
  ROUTER; all of them use CURVE, with keys derived from CLUSTER_SECRET, and a ZAP
  handler that admits only the peers' keys (a refused handshake is logged);
- ``say`` serialises on the caller's thread and hands the text over through a queue; the
  socket thread sends what has piled up as one numbered batch per peer, keeps it until
  that peer acknowledges it, and sends it again (in order) until it does, or until the
  buffer limits drop it (logged and counted, never silent);
- a receiver delivers batches in order, once: it acknowledges the highest batch it has
  in sequence and ignores repeats and anything after a gap (which comes again);
- application heartbeats (and ZeroMQ's own) say which peers are up: ``cluster.node_up``
  and ``cluster.node_down`` go to subscribers;
- callbacks run on one dispatcher thread ("zeph-cluster-dispatch"): a slow one is logged
  and cannot hold up the sockets.
"""

import collections
import contextlib
import hashlib
import json
import logging
import os
import queue
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zephserver.config import Settings
from zephserver.infra.service import Service
from zephserver.wire import compact as _encode

log = logging.getLogger(__name__)

Callback = Callable[[Any], None]
U64 = struct.Struct("!Q")
SLOW_CALLBACK = 1.0  # seconds
MAX_RESEND = 256  # batches sent again per peer per retry pass


def derive_keys(secret: str, node: str, identity: str = "") -> tuple[bytes, bytes]:
    """(public, secret) CURVE keys of ``node``, derived from the shared secret and the
    cluster's identity (its database's): every node can compute every peer's public
    key, and a node with another secret, or of another database, cannot."""
    import zmq
    from zmq.utils import z85

    raw = hashlib.sha256(f"zephserver-cluster\0{secret}\0{identity}\0{node}".encode()
                         ).digest()
    secret_key = z85.encode(raw)
    return zmq.curve_public(secret_key), secret_key


@dataclass
class Peer:
    node: str
    endpoint: str
    public_key: bytes
    socket: Any = None
    up: bool = False
    last_seen: float = 0.0  # time.time() of the last frame from it
    seen_mono: float = 0.0
    seq: int = 0  # last batch number given out to it
    unacked: collections.deque = field(default_factory=collections.deque)
    # (seq, first send time, number of messages, frame) of batches not acknowledged yet
    buffered: int = 0  # messages in unacked
    sent: int = 0
    lost: int = 0
    recv_epoch: bytes = b""  # its current run, and the last batch delivered from it
    recv_last: int = 0


def node_urls(settings: Settings) -> dict[str, str]:
    """Where clients reach each node of CLUSTER_SERVER_LIST over HTTP: its entry's
    ``url``, or http://<address>:<PORT_ZEPH> (every node on this node's port)."""
    return {e["hostname"]: (e.get("url") or f"http://{e['address']}:{settings.PORT_ZEPH}"
                            ).rstrip("/")
            for e in settings.CLUSTER_SERVER_LIST}


class ClusterManager:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node = settings.NODE_NAME
        nodes = list(settings.CLUSTER_SERVER_LIST)
        self.enabled = len(nodes) >= 2
        self._subscribers: dict[str, list[Callback]] = {}
        self._lock = threading.Lock()
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._dispatch: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self.peers: dict[str, Peer] = {}
        self.me: dict = next((n for n in nodes if n["hostname"] == self.node), {})
        self._entries = [n for n in nodes if n["hostname"] != self.node]
        self.epoch = os.urandom(8)  # this run: a restarted node starts a new numbering
        self.delivered = 0
        self.refused = 0
        self._wake_r = self._wake_w = -1
        self._pending_wake = False
        self._open = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, identity: str = "") -> None:
        """Keys, the ZeroMQ context and the dispatcher (the daemon calls it at boot); the
        sockets are the cluster service's (``serve``). ``identity``: what the nodes of
        this cluster share besides the secret (its database's id)."""
        if not self.enabled:
            return
        import zmq
        from zmq.auth.thread import ThreadAuthenticator

        s = self.settings
        self.heartbeat = s.CLUSTER_HEARTBEAT
        self.timeout = s.CLUSTER_HEARTBEAT_TIMEOUT
        self.retry = s.CLUSTER_RETRY
        self.max_buffered = s.CLUSTER_BUFFER_MESSAGES
        self.max_age = s.CLUSTER_BUFFER_AGE
        self.public, self.secret = derive_keys(s.CLUSTER_SECRET, self.node, identity)
        for entry in self._entries:
            public, _ = derive_keys(s.CLUSTER_SECRET, entry["hostname"], identity)
            self.peers[entry["hostname"]] = Peer(
                entry["hostname"], f"tcp://{entry['address']}:{entry['port']}", public)
        self.ctx = zmq.Context()
        self.auth = ThreadAuthenticator(self.ctx, log=log)
        self.auth.start()
        self.auth.configure_curve_callback("*", credentials_provider=_Allowed(self))
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        from zephserver.infra.cluster_calls import ClusterCalls

        self.calls = ClusterCalls(self)  # (only with a cluster)
        dispatcher = threading.Thread(target=self._dispatcher, name="zeph-cluster-dispatch",
                                      daemon=True)
        dispatcher.start()
        self._threads = [dispatcher]
        log.info("cluster: node %s on %s with peers %s", self.node,
                 f"tcp://{self.me['address']}:{self.me['port']}", ", ".join(self.peers))

    def open(self) -> None:
        """Start running callbacks (the daemon calls it once its services are up, so that
        what peers said meanwhile waits for its subscribers instead of missing them)."""
        self._open.set()

    def stop(self) -> None:
        self._open.set()
        if not self._threads:
            return
        self.stop_serving()
        self.calls.close()
        self._dispatch.put(None)
        for thread in self._threads:
            thread.join(5)
        self._threads = []
        self._cleanup()

    def _cleanup(self) -> None:
        self.auth.stop()
        self.ctx.term()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    # -- API (any thread) -----------------------------------------------------------------

    def say(self, event: str, data: Any) -> None:
        """Deliver ``event`` with ``data`` to every other node. Any thread, non-blocking.

        Raises:
            TypeError / ValueError: ``data`` is not JSON-serialisable (said here, at once).
        """
        if not self.enabled:
            return
        if not isinstance(event, str):
            raise TypeError("the event must be a string")
        self._outbox.put((None, _encode([event, data]).encode()))
        self._wake()

    def tell(self, node: str, event: str, data: Any) -> None:
        """Deliver ``event`` with ``data`` to ``node`` only (same guarantees as ``say``:
        once, in order with everything else this node says to it). Any thread.

        Raises:
            KeyError: ``node`` is not a peer.
        """
        if not isinstance(event, str):
            raise TypeError("the event must be a string")
        if node not in self.peers:
            raise KeyError(f"{node!r} is not a node of CLUSTER_SERVER_LIST")
        self._outbox.put((node, _encode([event, data]).encode()))
        self._wake()

    def is_up(self, node: str) -> bool:
        peer = self.peers.get(node)
        return peer is not None and peer.up

    def subscribe(self, event: str, callback: Callback) -> None:
        with self._lock:
            self._subscribers.setdefault(event, []).append(callback)

    def unsubscribe(self, event: str, callback: Callback) -> None:
        with self._lock:
            callbacks = self._subscribers.get(event, [])
            if callback in callbacks:
                callbacks.remove(callback)

    def status(self) -> dict:
        peers = [{"node": p.node, "state": "up" if p.up else "down",
                  "last_seen": p.last_seen or None, "buffered": p.buffered,
                  "sent": p.sent, "lost": p.lost} for p in list(self.peers.values())]
        return {"enabled": self.enabled, "node": self.node, "peers": peers,
                "delivered": self.delivered, "refused": self.refused}

    def _wake(self) -> None:
        if self._wake_w >= 0 and not self._pending_wake:
            self._pending_wake = True
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake_w, b"x")

    # -- the socket thread (the cluster service's) -----------------------------------------

    def stop_serving(self) -> None:
        """Wake ``serve`` to see its stop event set. Any thread."""
        self._wake()

    def serve(self, ready: Callable[[], None], stop: threading.Event) -> None:
        """Own the sockets and run until ``stop`` is set (``stop_serving`` wakes the
        loop to see it); ``ready()`` once listening.

        Raises:
            OSError: this node's address cannot be listened on.
            Exception: the loop failed (the service runs it again after a backoff).
        """
        import zmq

        try:
            router = self._socket(zmq.ROUTER, server=True)
            router.bind(f"tcp://{self.me['address']}:{self.me['port']}")
            monitor = router.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                                | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                                | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        except zmq.ZMQError as exc:
            raise OSError(f"cluster: cannot listen on {self.me['address']}:"
                          f"{self.me['port']}: {exc}") from None
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        for peer in self.peers.values():
            peer.socket = self._socket(zmq.DEALER, server=False, peer=peer)
            peer.socket.connect(peer.endpoint)
            poller.register(peer.socket, zmq.POLLIN)
        ready()
        self._send_outbox()  # what was said while no loop ran
        next_beat = next_retry = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                wait = max(0.0, min(next_beat, next_retry) - now)
                for sock, _ in poller.poll(wait * 1000):
                    if sock is router:
                        self._receive(router)
                    elif sock is monitor:
                        self._monitor_event(monitor)
                    elif sock == self._wake_r:
                        self._drain_wake()
                        self._send_outbox()
                    else:
                        self._acks(sock)
                now = time.monotonic()
                if now >= next_beat:
                    self._beat(now)
                    next_beat = now + self.heartbeat
                if now >= next_retry:
                    self._resend(now)
                    next_retry = now + min(self.retry, self.heartbeat)
        finally:
            router.disable_monitor()
            for sock in [router, monitor, *(p.socket for p in self.peers.values())]:
                if sock is not None:
                    sock.close(linger=0)
            for peer in self.peers.values():
                peer.socket = None

    def _socket(self, kind: int, server: bool, peer: Peer | None = None) -> Any:
        import zmq

        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.HEARTBEAT_IVL, int(self.heartbeat * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(self.timeout * 1000))
        sock.setsockopt(zmq.MAXMSGSIZE, int(self.settings.CLUSTER_MAX_MESSAGE))
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        if server:
            sock.curve_server = True
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted peer takes its name back
        else:
            assert peer is not None
            sock.curve_serverkey = peer.public_key
            sock.setsockopt(zmq.IDENTITY, self.node.encode())
            sock.setsockopt(zmq.IMMEDIATE, 1)  # no queueing for a peer that is not there
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, int(self.heartbeat * 1000))
        return sock

    def _drain_wake(self) -> None:
        # Empty the pipe first, then lower the flag: a say() in between finds the flag up
        # and does not write, but its message is already queued for the drain that follows.
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        self._pending_wake = False

    def _send_outbox(self) -> None:
        items: list[tuple[str | None, bytes]] = []
        size = 0
        while True:
            try:
                items.append(self._outbox.get_nowait())
            except queue.Empty:
                break
            size += len(items[-1][1])
            if size > 4 * 1024 * 1024 and len(items) > 1:
                self._send_batches(items)
                items, size = [], 0
        if items:
            self._send_batches(items)

    def _send_batches(self, items: list[tuple[str | None, bytes]]) -> None:
        """One numbered batch per peer of what is for it (said to all, or told to it)."""
        told = any(target is not None for target, _ in items)
        shared = None if told else b"[" + b",".join(text for _, text in items) + b"]"
        for peer in self.peers.values():
            if shared is not None:
                self._send_batch(peer, shared, len(items))
                continue
            mine = [text for target, text in items if target is None or target == peer.node]
            if mine:
                self._send_batch(peer, b"[" + b",".join(mine) + b"]", len(mine))

    def _send_batch(self, peer: Peer, payload: bytes, count: int) -> None:
        now = time.monotonic()
        peer.seq += 1
        peer.unacked.append((peer.seq, now, count, payload))
        peer.buffered += count
        peer.sent += count
        if len(peer.unacked) == 1 or peer.up:
            self._send_one(peer, peer.seq, payload)
        self._trim(peer, now)

    def _send_one(self, peer: Peer, seq: int, payload: bytes) -> bool:
        import zmq

        base = peer.unacked[0][0] if peer.unacked else seq
        try:
            peer.socket.send_multipart([b"M", self.node.encode(), self.epoch, U64.pack(base),
                                        U64.pack(seq), payload], zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False  # not connected (or full): it stays buffered and goes again
        return True

    def _trim(self, peer: Peer, now: float) -> None:
        """Buffer limits: the oldest batches go, logged and counted."""
        while peer.unacked and (peer.buffered > self.max_buffered
                                or now - peer.unacked[0][1] > self.max_age):
            _, _, count, _ = peer.unacked.popleft()
            peer.buffered -= count
            peer.lost += count
            log.warning("cluster: %d message(s) for %s dropped (not acknowledged within the "
                        "buffer limits; %d lost so far)", count, peer.node, peer.lost)

    def _resend(self, now: float) -> None:
        for peer in self.peers.values():
            self._trim(peer, now)
            if peer.unacked and now - peer.unacked[0][1] >= self.retry:
                for i, (seq, _, _count, payload) in enumerate(peer.unacked):
                    if i >= MAX_RESEND or not self._send_one(peer, seq, payload):
                        break
                # restart the clock of what was just sent again
                peer.unacked = collections.deque(
                    (s, now if i < MAX_RESEND else t, c, p)
                    for i, (s, t, c, p) in enumerate(peer.unacked))

    def _beat(self, now: float) -> None:
        import zmq

        for peer in self.peers.values():
            with contextlib.suppress(zmq.Again):
                peer.socket.send_multipart([b"H", self.node.encode(), self.epoch], zmq.NOBLOCK)
            if peer.up and now - peer.seen_mono > self.timeout:
                peer.up = False
                log.warning("cluster: node %s is down (nothing heard for %.1fs)", peer.node,
                            now - peer.seen_mono)
                self._dispatch.put([("cluster.node_down", {"node": peer.node})])

    def _seen(self, peer: Peer, epoch: bytes) -> None:
        peer.last_seen = time.time()
        peer.seen_mono = time.monotonic()
        if epoch != peer.recv_epoch:
            peer.recv_epoch = epoch  # it restarted: its numbering starts again
            peer.recv_last = -1
        if not peer.up:
            peer.up = True
            log.info("cluster: node %s is up", peer.node)
            self._dispatch.put([("cluster.node_up", {"node": peer.node})])
            for seq, _, _, payload in list(peer.unacked)[:MAX_RESEND]:
                if not self._send_one(peer, seq, payload):
                    break

    def _receive(self, router: Any) -> None:
        import zmq

        acks: dict[bytes, tuple[bytes, int]] = {}
        for _ in range(1000):
            try:
                frames = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                self._frame(frames, acks)
            except Exception as exc:  # a malformed frame from a peer: never fatal
                log.warning("cluster: a malformed message was ignored: %s", exc)
        for identity, (epoch, last) in acks.items():
            with contextlib.suppress(zmq.ZMQError):
                router.send_multipart([identity, b"A", epoch, U64.pack(last)], zmq.NOBLOCK)

    def _frame(self, frames: list[bytes], acks: dict) -> None:
        identity, kind = frames[0], frames[1]
        sender = frames[2].decode()
        peer = self.peers.get(sender)
        if peer is None or identity != frames[2]:
            raise ValueError(f"from an unknown node {sender!r}")
        epoch = frames[3]
        self._seen(peer, epoch)
        if kind == b"H":
            return
        if kind != b"M":
            raise ValueError(f"unknown kind {kind!r}")
        base, seq = U64.unpack(frames[4])[0], U64.unpack(frames[5])[0]
        if peer.recv_last < 0:
            peer.recv_last = base - 1  # first contact in this run: start at its oldest
        if seq == peer.recv_last + 1:
            peer.recv_last = seq
            batch = json.loads(frames[6])
            self._dispatch.put(batch)  # one hand-over per batch, not per message
            self.delivered += len(batch)
        acks[identity] = (epoch, peer.recv_last)  # repeats and gaps: say where we are

    def _acks(self, sock: Any) -> None:
        import zmq

        peer = next(p for p in self.peers.values() if p.socket is sock)
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) == 3 and frames[0] == b"A" and frames[1] == self.epoch:
                last = U64.unpack(frames[2])[0]
                while peer.unacked and peer.unacked[0][0] <= last:
                    peer.buffered -= peer.unacked.popleft()[2]

    def _monitor_event(self, monitor: Any) -> None:
        from zmq.utils.monitor import recv_monitor_message

        event = recv_monitor_message(monitor)
        self.refused += 1
        log.warning("cluster: refused a connection to %s: the peer's keys are not ours "
                    "(handshake failed, event %s)", event.get("endpoint", b"?").decode(),
                    event.get("event"))

    # -- the dispatcher thread ------------------------------------------------------------

    def _dispatcher(self) -> None:
        self._open.wait()
        while (batch := self._dispatch.get()) is not None:
            for event, data in batch:
                self._run_callbacks(event, data)

    def _run_callbacks(self, event: str, data: Any) -> None:
        with self._lock:
            callbacks = list(self._subscribers.get(event, ()))
        for callback in callbacks:
            started = time.monotonic()
            try:
                callback(data)
            except Exception:
                log.exception("cluster: a callback for %s failed", event)
            took = time.monotonic() - started
            if took > SLOW_CALLBACK:
                log.warning("cluster: a callback for %s took %.1fs (it delays every "
                            "other cluster event)", event, took)


class ClusterService(Service):
    """The cluster manager's socket loop as a service (the daemon adds it when
    CLUSTER_SERVER_LIST names two nodes or more): if the loop fails, the service manager
    runs it again after a backoff, and ``zephserver-status`` shows its state."""

    name = "cluster"
    announces_ready = True
    critical = True

    def main(self) -> None:
        assert self.ctx is not None
        self._disabled.clear()
        self.ctx.cluster.serve(self.ctx.ready, self._disabled)

    def disable(self) -> None:
        self._disabled.set()
        if self.ctx is not None:
            self.ctx.cluster.stop_serving()


CLUSTER_SERVICE = f"{__name__}/ClusterService"


class _Allowed:
    """ZAP: admit only the keys of the nodes in CLUSTER_SERVER_LIST."""

    def __init__(self, cluster: ClusterManager) -> None:
        self.cluster = cluster

    def callback(self, domain: str, key: bytes) -> bool:
        from zmq.utils import z85

        allowed = {p.public_key for p in self.cluster.peers.values()}
        if z85.encode(key) in allowed or key in allowed:
            return True
        self.cluster.refused += 1
        log.warning("cluster: refused a peer with an unknown key (another "
                    "CLUSTER_SECRET, or a node of another database)")
        return False
