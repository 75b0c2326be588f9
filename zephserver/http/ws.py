"""``/ws``: JSON-RPC 2.0 over a WebSocket (the connection and its handler).

Authentication of the upgrade request (Django session cookie or bearer token) runs on
the web service's auth executor because it queries the database; each message goes to
the router, which answers through the connection's thread-safe ``send_text``.
"""

import contextlib
import logging
import struct
import threading
from typing import Any
from urllib.parse import urlparse

import tornado.iostream
import tornado.websocket
from tornado.ioloop import IOLoop

from zephserver import memory
from zephserver.errors import RpcCode, ServiceUnavailable
from zephserver.task.base import UserInfo
from zephserver.wire import compact

access_log = logging.getLogger("zephserver.access")

# A WebSocket frame's header (RFC 6455 5.2) by payload length: <126, <=0xFFFF, larger.
_FRAME_SHORT, _FRAME_MEDIUM, _FRAME_LONG = (struct.Struct("!BB"), struct.Struct("!BBH"),
                                            struct.Struct("!BBQ"))


class WsConnection:
    """One client connection as the rooms and router services see it (thread-safe)."""

    def __init__(self, handler: "WsHandler", cid: str, user: UserInfo,
                 credential: Any) -> None:
        self.handler = handler
        self.cid = cid
        self.user = user
        self.credential = credential
        self.origin = ""  # the client's address and this connection (audit lines)
        self._slots = 0
        self._lock = threading.Lock()
        self._pending = 0  # characters queued or buffered but not yet written to the socket

    def send_text(self, text: str) -> None:
        """Queue ``text`` for the client. Any thread, non-blocking."""
        with self._lock:
            self._pending += len(text)
        self.handler.service.post(self.handler, text)

    def pending_bytes(self) -> int:
        """How much sent text the client has not taken yet (producers back off on it)."""
        return self._pending

    def written(self, size: int) -> None:
        with self._lock:
            self._pending -= size

    def send_json(self, message: Any) -> None:
        self.send_text(compact(message))

    def acquire_slot(self, limit: int) -> bool:
        with self._lock:
            if self._slots >= limit:
                return False
            self._slots += 1
            return True

    def has_slot(self, limit: int) -> bool:
        return self._slots < limit

    def release_slot(self) -> None:
        with self._lock:
            self._slots -= 1


class WsHandler(tornado.websocket.WebSocketHandler):
    """WebSocket: JSON-RPC 2.0 requests, batches and notifications (see the JSON-RPC
    page); logged in by the Django session cookie or Authorization: Bearer token."""

    connection_class = WsConnection

    def initialize(self, service: Any) -> None:  # the web service
        self.service = service
        self.conn: WsConnection | None = None

    async def prepare(self) -> None:
        auth = self.service.ctx.get("auth")
        cookies = {name: morsel.value for name, morsel in self.request.cookies.items()}
        authorization = self.request.headers.get("Authorization")
        from zephserver.service.session_manager import AuthenticationFailed

        try:
            self.user, self.credential = await IOLoop.current().run_in_executor(
                self.service.auth_executor, auth.authenticate, cookies, authorization)
        except AuthenticationFailed as exc:
            access_log.info("ws refused from %s: %s", self.request.remote_ip, exc)
            self.set_status(401)
            self.finish({"error": str(exc)})
        except ServiceUnavailable as exc:
            self.set_status(503)
            self.set_header("Retry-After", "5")
            self.finish({"error": str(exc)})

    def check_origin(self, origin: str) -> bool:
        if origin in self.service.allowed_origins:
            return True
        allowed = urlparse(origin).netloc.lower() == self.request.host.lower()
        if not allowed:
            access_log.info("ws refused from %s: foreign origin %s", self.request.remote_ip,
                            origin)
        return allowed

    def open(self) -> None:
        # Small JSON-RPC messages are latency bound: without this, a reply followed by a
        # notification waits for the peer's delayed ACK (Nagle), about 40 ms here.
        self.set_nodelay(True)
        cid = f"{self.service.node}-{next(self.service.cids)}"
        self.conn = self.connection_class(self, cid, self.user, self.credential)
        self.conn.origin = f"{self.request.remote_ip} ws {cid}"
        self.service.handlers.add(self)
        self.service.ctx.get("rooms").register(self.conn)  # type: ignore[union-attr]
        access_log.info("ws open %s user=%s from %s", cid, self.user.username or "-",
                        self.request.remote_ip)

    def on_message(self, message: str | bytes) -> None:
        assert self.conn is not None
        if isinstance(message, bytes):
            self.conn.send_json({"jsonrpc": "2.0", "id": None, "error": {
                "code": int(RpcCode.INVALID_REQUEST),
                "message": "binary frames are not supported: send JSON-RPC as text"}})
            return
        self.service.router.handle_text(self.conn, message)

    def send_now(self, text: str) -> None:
        """Loop thread: write if the connection is still open (it may have closed since)."""
        if self.ws_connection is None or self.ws_connection.is_closing():
            return
        try:
            future = self.write_message(text)
        except tornado.websocket.WebSocketClosedError:
            return
        self._count_when_written(future, len(text))

    def send_many(self, texts: list[str]) -> None:
        """Loop thread: ``send_now`` each of ``texts``, in order, in one write to the socket
        (a burst's notifications: 100 frames were 100 sends and 100 asyncio tasks, half
        the loop's time in a 100-job launch). The frames are those tornado writes: text,
        final, unmasked (a server's), uncompressed (this handler never offers
        permessage-deflate: ``get_compression_options``)."""
        protocol = self.ws_connection
        if len(texts) == 1 or self.get_compression_options() is not None:
            for text in texts:
                self.send_now(text)
            return
        if protocol is None or protocol.is_closing():
            return
        frames = []
        for text in texts:
            data = text.encode()
            size = len(data)
            head = (_FRAME_SHORT.pack(0x81, size) if size < 126 else
                    _FRAME_MEDIUM.pack(0x81, 126, size) if size <= 0xFFFF else
                    _FRAME_LONG.pack(0x81, 127, size))
            frames += (head, data)
        try:
            future = protocol.stream.write(b"".join(frames))
        except tornado.iostream.StreamClosedError:
            return
        self._count_when_written(future, sum(map(len, texts)))

    def _count_when_written(self, future: Any, size: int) -> None:
        """The connection's ``size`` characters count as sent once ``future`` (their
        write) is done."""
        conn = self.conn
        if conn is None:
            return

        def flushed(f: Any) -> None:
            if not f.cancelled():
                f.exception()  # retrieved: a closed stream is not an error here
            conn.written(size)

        if future.done():
            flushed(future)  # the common case: written at once, no extra loop turn
        else:
            future.add_done_callback(flushed)

    def on_close(self) -> None:
        if self.service.handlers <= {self}:  # the last connection of a burst: asked
            memory.quiet()  # before the gauge shows 0, so a reader of both sees it asked
        self.service.handlers.discard(self)
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.service.ctx.get("rooms").unregister(self.conn.cid)  # type: ignore
            access_log.info("ws close %s code=%s", self.conn.cid, self.close_code)
        self.service.closed.set()


def routes() -> list[tuple[str, type]]:
    return [(r"/ws", WsHandler)]
