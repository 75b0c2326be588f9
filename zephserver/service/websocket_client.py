"""WebSocket client service: one tornado application on PORT_ZEPH serving the routes
every service registers (``http_routes``: /ws here, the launcher REST API from the job
manager, /agent/ from the agent; handlers live in ``zephserver.http``) and, for every
other path, the Django views.

The tornado IOLoop runs in this service's thread; other threads reach it only through
``post`` (one loop wakeup drains many messages). Authentication of the upgrade request
runs on a small executor because it queries the database.
"""

import asyncio
import collections
import contextlib
import itertools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets
from tornado.wsgi import WSGIContainer

from zephserver import memory, metrics
from zephserver.http import legacy_ws, ws
from zephserver.http.django_fallback import (
    BuiltOnFirstCall,
    DjangoHandler,
    django_wsgi,
    strip_header_values,
)
from zephserver.infra import held_wakes
from zephserver.infra.cluster import node_urls
from zephserver.infra.service import Service

log = logging.getLogger(__name__)


class WebSocketService(Service):
    name = "websocket"
    requires = ("auth", "rooms", "router")
    announces_ready = True
    critical = True

    def __init__(self) -> None:
        super().__init__()
        self.loop: IOLoop | None = None
        self.handlers: set[Any] = set()  # open /ws (and legacy) handlers
        self.cids = itertools.count(1)
        self.closed = asyncio.Event()
        # Messages from other threads wait here; one loop wakeup drains them all, instead
        # of one add_callback (and one write to the loop's waker pipe) per message.
        self._outbox: collections.deque[tuple[ws.WsHandler, str]] = collections.deque()
        self._outbox_lock = threading.Lock()
        self._loop_thread: int | None = None
        self._sent_this_turn = False

    def post(self, handler: ws.WsHandler, text: str) -> None:
        """Queue ``text`` for ``handler``. Any thread, non-blocking."""
        loop = self.loop
        if loop is None:
            return
        on_loop = threading.get_ident() == self._loop_thread
        with self._outbox_lock:
            # An answer made on the loop thread (an inline task) goes out at once, like an
            # echo server's, when it is the first of this turn of the loop; later ones wait
            # for the turn's end: many clients' replies then leave together, and their next
            # requests come back together (fewer, fuller polls).
            if on_loop and not self._outbox and not self._sent_this_turn:
                self._sent_this_turn = True
                loop.asyncio_loop.call_soon(self._new_turn)  # type: ignore[attr-defined]
                now = True
            else:
                now, wake = False, not self._outbox
                self._outbox.append((handler, text))
        if now:
            handler.send_now(text)
        elif wake:
            if on_loop:  # drained once this turn's events are handled, without a wake-up
                loop.asyncio_loop.call_soon(self._flush_outbox)  # type: ignore[attr-defined]
            elif not held_wakes.defer(self._wake):  # (a burst: woken once, at its end)
                self._wake()

    def _wake(self) -> None:
        loop = self.loop
        if loop is not None:
            loop.add_callback(self._flush_outbox)

    def _new_turn(self) -> None:
        self._sent_this_turn = False

    def _flush_outbox(self) -> None:
        with self._outbox_lock:
            items, self._outbox = self._outbox, collections.deque()
        if len(items) == 1:
            handler, text = items[0]
            handler.send_now(text)
            return
        by_handler: dict[ws.WsHandler, list[str]] = {}  # (each one's in order)
        for handler, text in items:
            by_handler.setdefault(handler, []).append(text)
        for handler, texts in by_handler.items():
            handler.send_many(texts)

    def main(self) -> None:
        assert self.ctx is not None
        s = self.ctx.settings
        self.node = s.NODE_NAME
        self.allowed_origins = set(s.WS_ALLOWED_ORIGINS)
        if len(s.CLUSTER_SERVER_LIST) >= 2:  # a page of one node may move to another
            self.allowed_origins |= set(node_urls(s).values())
        self.router = self.ctx.get("router")
        self.auth_executor = ThreadPoolExecutor(2, thread_name_prefix="zeph-auth")
        wsgi_executor = ThreadPoolExecutor(s.WSGI_POOL_SIZE, thread_name_prefix="zeph-wsgi")
        asyncio.set_event_loop(asyncio.new_event_loop())
        self.loop = IOLoop.current()
        self._loop_thread = threading.get_ident()
        self.closed = asyncio.Event()
        django_app = WSGIContainer(strip_header_values(BuiltOnFirstCall(django_wsgi)),
                                   executor=wsgi_executor)
        self.api_executor = ThreadPoolExecutor(8, thread_name_prefix="zeph-api")
        routes = [(pattern, handler, {"service": self})
                  for pattern, handler in self.ctx.http_routes()]
        app = tornado.web.Application(
            [*routes, (r".*", DjangoHandler, {"fallback": django_app,
                                              "max_body": s.HTTP_MAX_FORM_BODY})],
            websocket_max_message_size=s.WS_MAX_MESSAGE_SIZE,
            websocket_ping_interval=s.WS_PING_INTERVAL or None,
            websocket_ping_timeout=s.WS_PING_TIMEOUT or None)
        sockets = bind_sockets(s.PORT_ZEPH, s.BIND_ADDRESS)
        # Handlers stream bodies and refuse what is over their own limit; this is the
        # connection-level bound on top of it.
        server = HTTPServer(app, max_body_size=max(s.HTTP_MAX_JSON_BODY,
                                                   s.HTTP_MAX_FORM_BODY),
                            chunk_size=memory.READ_CHUNK)
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

    def metric_families(self) -> list:
        return [metrics.WEBSOCKETS.family([((), len(self.handlers))])]

    def http_routes(self) -> list[tuple[str, type]]:
        assert self.ctx is not None
        path = self.ctx.settings.LEGACY_WS_PATH  # the 2015 client's wire format
        return [*ws.routes(), *(legacy_ws.routes(path) if path else [])]

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
