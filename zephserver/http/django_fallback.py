"""Everything PORT_ZEPH does not route itself goes to Django (the web UI, the login and
admin pages), through tornado's WSGI container, with the body bounded.

Django's request handling (its handler, the middleware, the debug views and their
template engine) is loaded by the first web request, not at start: a node driven only by
scripts and JSON-RPC never pays for it (0.9 MiB of the daemon's memory; the first page
takes 10-20 ms longer).

tornado's own ``FallbackHandler`` hands over a request whose body it has read whole (up
to 100 MB by default) before Django can say no. Here the body is streamed: a declared
length over HTTP_MAX_FORM_BODY is answered 413 before a byte of it is read, and one that
grows past it (chunked) is dropped as it comes, then answered 413.
"""

import logging
import threading
from collections.abc import Callable
from typing import Any

import tornado.web

from zephserver.http.rest import BoundedBody, JsonError

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict, Callable], Any]


def django_wsgi() -> WsgiApp:
    """Django's WSGI application, serving the static files too."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.core.wsgi import get_wsgi_application

    return StaticFilesHandler(get_wsgi_application())


class BuiltOnFirstCall:
    """A WSGI application built by ``build`` on its first request, once however many
    arrive together (they run on the WSGI executor's threads). A build that fails is
    logged and tried again by the next request."""

    def __init__(self, build: Callable[[], WsgiApp]) -> None:
        self._build = build
        self._app: WsgiApp | None = None
        self._lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        app = self._app
        if app is None:
            with self._lock:
                if self._app is None:
                    try:
                        self._app = self._build()
                    except Exception:
                        log.exception("the web application (Django) cannot be loaded")
                        raise
                app = self._app
        return app(environ, start_response)


def strip_header_values(app: WsgiApp) -> WsgiApp:
    """Django's Set-Cookie values can start with a space, which tornado rejects (the request
    then hangs); strip every header value on the way out."""
    def wrapped(environ: dict, start_response: Callable) -> Any:
        def start(status: str, headers: list, exc_info: Any = None) -> Any:
            return start_response(status, [(k, v.strip()) for k, v in headers], exc_info)
        return app(environ, start)
    return wrapped


@tornado.web.stream_request_body
class DjangoHandler(tornado.web.RequestHandler):
    def initialize(self, fallback: Any, max_body: int) -> None:
        self.fallback = fallback
        self.max_body = max_body

    def prepare(self) -> None:
        try:
            self.body = BoundedBody(self.request, self.max_body, "HTTP_MAX_FORM_BODY")
        except JsonError as exc:
            self._refuse(exc)

    def data_received(self, chunk: bytes) -> None:
        self.body.add(chunk)

    def _refuse(self, exc: JsonError) -> None:
        self.set_status(exc.status)
        self.finish({"error": exc.message})

    def _hand_over(self, *args: Any) -> None:
        try:
            self.request.body = self.body.bytes()
        except JsonError as exc:
            self._refuse(exc)
            return
        self.fallback(self.request)  # WSGIContainer: answers on the connection itself
        self._finished = True
        self.on_finish()

    get = head = post = put = patch = delete = options = _hand_over
