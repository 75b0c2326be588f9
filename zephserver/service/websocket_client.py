"""WebSocket client service: one tornado application serving /ws, the REST APIs
(service.launcher_api) and the Django views.

The tornado IOLoop runs in this service's thread; other threads reach it only through
``IOLoop.add_callback`` (WsConnection.send_text). Authentication of the upgrade request
runs on a small executor because it queries the database.
"""

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

import tornado.web
import tornado.websocket
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets
from tornado.wsgi import WSGIContainer

from zephserver.errors import RpcCode
from zephserver.infra.service import Service
from zephserver.task.base import UserInfo
from zephserver.web.django_setup import setup_django

log = logging.getLogger(__name__)
access_log = logging.getLogger("zephserver.access")


def strip_header_values(app: Any) -> Any:
    """Django's Set-Cookie values can start with a space, which tornado rejects (the request
    then hangs); strip every header value on the way out."""
    def wrapped(environ: dict, start_response: Any) -> Any:
        def start(status: str, headers: list, exc_info: Any = None) -> Any:
            return start_response(status, [(k, v.strip()) for k, v in headers], exc_info)
        return app(environ, start)
    return wrapped


class WsConnection:
    """One client connection as the rooms and router services see it (thread-safe)."""

    def __init__(self, handler: "WsHandler", cid: str, user: UserInfo, credential: Any) -> None:
        self.handler = handler
        self.cid = cid
        self.user = user
        self.credential = credential
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
        self.send_text(json.dumps(message, separators=(",", ":")))

    def acquire_slot(self, limit: int) -> bool:
        with self._lock:
            if self._slots >= limit:
                return False
            self._slots += 1
            return True

    def release_slot(self) -> None:
        with self._lock:
            self._slots -= 1


class WsHandler(tornado.websocket.WebSocketHandler):
    connection_class = WsConnection

    def initialize(self, service: "WebSocketService") -> None:
        self.service = service
        self.conn: WsConnection | None = None

    async def prepare(self) -> None:
        sessions = self.service.ctx.get("sessions")  # type: ignore[union-attr]
        cookies = {name: morsel.value for name, morsel in self.request.cookies.items()}
        authorization = self.request.headers.get("Authorization")
        from zephserver.service.session_manager import AuthenticationFailed

        try:
            self.user, self.credential = await IOLoop.current().run_in_executor(
                self.service.auth_executor, sessions.authenticate, cookies, authorization)
        except AuthenticationFailed as exc:
            access_log.info("ws refused from %s: %s", self.request.remote_ip, exc)
            self.set_status(401)
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
        conn, size = self.conn, len(text)
        if conn is not None:
            def flushed(f: Any) -> None:
                if not f.cancelled():
                    f.exception()  # retrieved: a closed stream is not an error here
                conn.written(size)

            if future.done():
                flushed(future)  # the common case: written at once, no extra loop turn
            else:
                future.add_done_callback(flushed)

    def on_close(self) -> None:
        self.service.handlers.discard(self)
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.service.ctx.get("rooms").unregister(self.conn.cid)  # type: ignore
            access_log.info("ws close %s code=%s", self.conn.cid, self.close_code)
        self.service.closed.set()


class WebSocketService(Service):
    name = "websocket"
    requires = ("sessions", "rooms", "router")
    announces_ready = True
    critical = True

    def __init__(self) -> None:
        super().__init__()
        self.loop: IOLoop | None = None
        self.handlers: set[WsHandler] = set()
        self.cids = itertools.count(1)
        self.closed = asyncio.Event()
        # Messages from other threads wait here; one loop wakeup drains them all, instead
        # of one add_callback (and one write to the loop's waker pipe) per message.
        self._outbox: collections.deque[tuple[WsHandler, str]] = collections.deque()
        self._outbox_lock = threading.Lock()

    def post(self, handler: WsHandler, text: str) -> None:
        """Queue ``text`` for ``handler``. Any thread, non-blocking."""
        loop = self.loop
        if loop is None:
            return
        with self._outbox_lock:
            wake = not self._outbox
            self._outbox.append((handler, text))
        if wake:
            loop.add_callback(self._flush_outbox)

    def _flush_outbox(self) -> None:
        with self._outbox_lock:
            items, self._outbox = self._outbox, collections.deque()
        for handler, text in items:
            handler.send_now(text)

    def main(self) -> None:
        assert self.ctx is not None
        s = self.ctx.settings
        setup_django(s)
        from django.contrib.staticfiles.handlers import StaticFilesHandler
        from django.core.wsgi import get_wsgi_application

        self.node = s.NODE_NAME
        self.allowed_origins = set(s.WS_ALLOWED_ORIGINS)
        self.router = self.ctx.get("router")
        self.auth_executor = ThreadPoolExecutor(2, thread_name_prefix="zeph-auth")
        wsgi_executor = ThreadPoolExecutor(int(s.WSGI_POOL_SIZE), thread_name_prefix="zeph-wsgi")
        asyncio.set_event_loop(asyncio.new_event_loop())
        self.loop = IOLoop.current()
        self.closed = asyncio.Event()
        django_app = WSGIContainer(strip_header_values(StaticFilesHandler(
            get_wsgi_application())), executor=wsgi_executor)
        from zephserver.launch.wslink import effective_endpoint
        from zephserver.service import agent_api
        from zephserver.service.launcher_api import LauncherHandler

        self.api_executor = ThreadPoolExecutor(8, thread_name_prefix="zeph-api")
        endpoint = re.escape(effective_endpoint(s))
        legacy = []
        if s.LEGACY_WS_PATH:  # the 2015 client's wire format
            from zephserver.service.legacy_ws import LegacyWsHandler

            legacy = [(re.escape(s.LEGACY_WS_PATH), LegacyWsHandler, {"service": self})]
        app = tornado.web.Application(
            [(r"/ws", WsHandler, {"service": self}), *legacy,
             (rf"{endpoint}/?()", LauncherHandler, {"service": self}),
             (rf"{endpoint}/([^/]+)", LauncherHandler, {"service": self}),
             (r"/agent/?", agent_api.IndexHandler, {"service": self}),
             (r"/agent/create-process", agent_api.CreateHandler, {"service": self}),
             (r"/agent/list-processes", agent_api.ListHandler, {"service": self}),
             (r"/agent/process-status/([^/]+)", agent_api.StatusHandler, {"service": self}),
             (r"/agent/delete-process/([^/]+)", agent_api.DeleteHandler, {"service": self}),
             (r"/agent/attach-console/([^/]+)", agent_api.ConsoleHandler, {"service": self}),
             (r".*", tornado.web.FallbackHandler, {"fallback": django_app})],
            websocket_max_message_size=int(s.WS_MAX_MESSAGE_SIZE),
            websocket_ping_interval=float(s.WS_PING_INTERVAL) or None,
            websocket_ping_timeout=float(s.WS_PING_TIMEOUT) or None)
        sockets = bind_sockets(s.PORT_ZEPH, s.BIND_ADDRESS)
        server = HTTPServer(app)
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        self.ctx.set_public_url(f"http://{s.BIND_ADDRESS}:{port}")
        log.info("serving http://%s:%d (/ws and Django)", s.BIND_ADDRESS, port)
        try:
            if not self._disabled.is_set():
                self.ctx.ready()
                self.loop.start()
        finally:
            server.stop()
            self.loop.close(all_fds=True)
            self.loop = None
            self.auth_executor.shutdown(wait=False)
            self.api_executor.shutdown(wait=False)
            wsgi_executor.shutdown(wait=True)

    def disable(self) -> None:
        self._disabled.set()
        loop = self.loop
        if loop is not None:
            loop.add_callback(self._close_all)

    async def _close_all(self) -> None:
        """Loop thread: close every connection with 1001, wait briefly, stop the loop."""
        for handler in list(self.handlers):
            handler.close(1001, "server shutting down")
        deadline = asyncio.get_running_loop().time() + 2.0
        while self.handlers and asyncio.get_running_loop().time() < deadline:
            self.closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closed.wait(), 0.2)
        IOLoop.current().stop()
