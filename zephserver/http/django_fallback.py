"""Everything PORT_ZEPH does not route itself goes to Django (the web UI, the login and
admin pages), through tornado's WSGI container, with the body bounded.

tornado's own ``FallbackHandler`` hands over a request whose body it has read whole (up
to 100 MB by default) before Django can say no. Here the body is streamed: a declared
length over HTTP_MAX_FORM_BODY is answered 413 before a byte of it is read, and one that
grows past it (chunked) is dropped as it comes, then answered 413.
"""

from typing import Any

import tornado.web

from zephserver.http.rest import JsonError, refuse_declared_length


@tornado.web.stream_request_body
class DjangoHandler(tornado.web.RequestHandler):
    def initialize(self, fallback: Any, max_body: int) -> None:
        self.fallback = fallback
        self.max_body = max_body
        self._chunks: list[bytes] = []
        self._received = 0

    def prepare(self) -> None:
        try:
            refuse_declared_length(self.request, self.max_body)
        except JsonError as exc:
            self._refuse(exc.status, exc.message)

    def data_received(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if self._received <= self.max_body:
            self._chunks.append(chunk)
        else:
            self._chunks = []

    def _refuse(self, status: int, message: str) -> None:
        self.set_status(status)
        self.finish({"error": message})

    def _hand_over(self, *args: Any) -> None:
        if self._received > self.max_body:
            self._refuse(413, f"request body larger than {self.max_body} bytes "
                              "(HTTP_MAX_FORM_BODY)")
            return
        self.request.body = b"".join(self._chunks)
        self.fallback(self.request)  # WSGIContainer: answers on the connection itself
        self._finished = True
        self.on_finish()

    get = head = post = put = patch = delete = options = _hand_over
