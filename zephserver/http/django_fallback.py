"""Everything PORT_ZEPH does not route itself goes to Django (the web UI, the login and
admin pages), through tornado's WSGI container, with the body bounded.

tornado's own ``FallbackHandler`` hands over a request whose body it has read whole (up
to 100 MB by default) before Django can say no. Here the body is streamed: a declared
length over HTTP_MAX_FORM_BODY is answered 413 before a byte of it is read, and one that
grows past it (chunked) is dropped as it comes, then answered 413.
"""

from typing import Any

import tornado.web

from zephserver.http.rest import BoundedBody, JsonError


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
