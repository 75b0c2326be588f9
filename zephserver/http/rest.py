"""What the JSON REST APIs on PORT_ZEPH share: authentication (session cookie or bearer
token, off the event loop), JSON bodies, and errors as ``{"error": ...}`` with the HTTP
status a JSON-RPC code stands for."""

import json
import re
import uuid
from typing import Any
from urllib.parse import urlparse

import tornado.httputil
import tornado.web
from tornado.ioloop import IOLoop

from zephserver import logs
from zephserver.errors import RpcCode, RpcError, ServiceUnavailable

HTTP_STATUS = {RpcCode.INVALID_PARAMS: 400, RpcCode.NOT_AUTHENTICATED: 401,
               RpcCode.FORBIDDEN: 403, RpcCode.NOT_FOUND: 404, RpcCode.CONFLICT: 409,
               RpcCode.SERVICE_UNAVAILABLE: 503, RpcCode.SHUTTING_DOWN: 503,
               RpcCode.QUEUE_FULL: 503, RpcCode.NODE_UNREACHABLE: 503}
REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


class JsonError(Exception):
    def __init__(self, status: int, message: str, **more: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.more = status, message, more


def authenticate_request(service: Any, handler: tornado.web.RequestHandler
                         ) -> Any:
    """The request's user (session cookie or bearer token); JsonError 401 / 403.

    A cookie is sent by browsers on any site's request, so a cookie-authenticated
    request from a foreign Origin is refused (403): no cross-site launching.
    """
    auth = service.ctx.get("auth")
    cookies = {name: morsel.value for name, morsel in handler.request.cookies.items()}
    authorization = handler.request.headers.get("Authorization")
    from zephserver.service.session_manager import AuthenticationFailed

    try:
        user, _ = auth.authenticate(cookies, authorization, allow_basic=True)
    except AuthenticationFailed as exc:
        raise JsonError(401, str(exc)) from None
    except ServiceUnavailable as exc:
        raise JsonError(503, str(exc), retry_after=5) from None
    if not user.is_authenticated:
        raise JsonError(401, "authentication required: a session cookie or "
                             "'Authorization: Bearer <token>'")
    # Cookies and Basic credentials are sent by browsers on their own: only a bearer
    # token proves the request was written by its sender.
    ambient = not authorization or authorization[:6].lower() == "basic "
    origin = handler.request.headers.get("Origin")
    if ambient and origin and origin not in service.allowed_origins and \
            urlparse(origin).netloc.lower() != handler.request.host.lower():
        raise JsonError(403, f"requests from origin {origin} are not allowed")
    return user


class BoundedBody:
    """A streamed request body kept up to ``limit`` bytes (for handlers decorated with
    ``tornado.web.stream_request_body``): a declared length over it is refused before a
    byte is read, a body that grows past it is dropped as it comes."""

    def __init__(self, request: tornado.httputil.HTTPServerRequest, limit: int,
                 setting: str) -> None:
        """Raises JsonError 413 (400) when the request declares a longer (a bad) length."""
        self.limit, self.setting = limit, setting
        self._chunks: list[bytes] = []
        self._received = 0
        declared = request.headers.get("Content-Length", "0")
        try:
            too_long = int(declared) > limit
        except ValueError:
            raise JsonError(400, f"bad Content-Length {declared!r}") from None
        if too_long:
            raise JsonError(413, f"request body of {declared} bytes is larger than {limit} "
                                 f"({setting})")

    def add(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if self._received <= self.limit:
            self._chunks.append(chunk)
        else:
            self._chunks = []  # over the limit: kept no longer; ``bytes`` says 413

    def bytes(self) -> bytes:
        """Raises JsonError 413 when the body grew past the limit."""
        if self._received > self.limit:
            raise JsonError(413, f"request body larger than {self.limit} bytes "
                                 f"({self.setting})")
        return b"".join(self._chunks)


class RequestIdMixin:
    """Every response carries ``X-Request-Id``: the request's own (when it is a sane
    token) or a new one. Deploy clients (smartmob's) read it from every response.
    ``set_default_headers`` runs again when tornado clears a response for an error, so
    error responses carry it too."""

    request: tornado.httputil.HTTPServerRequest
    request_id: str

    def set_default_headers(self) -> None:
        if not hasattr(self, "request_id"):
            given = self.request.headers.get("X-Request-Id", "")
            self.request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        self.set_header("X-Request-Id", self.request_id)  # type: ignore[attr-defined]


@tornado.web.stream_request_body
class JsonApiHandler(RequestIdMixin, tornado.web.RequestHandler):
    """JSON in and out, authentication off the loop, RpcError -> HTTP status.

    The body is streamed, not buffered by tornado: the caller is authenticated from the
    headers and a declared length over HTTP_MAX_JSON_BODY is refused (413) before a byte
    of the body is read, and a body that grows past it (chunked) is dropped as it comes.
    So a client without credentials costs the daemon no memory, whatever it sends.
    """

    def initialize(self, service: Any) -> None:  # the web service (its ctx, executors)
        self.service = service

    async def prepare(self) -> None:
        try:
            self.body = BoundedBody(self.request, self.service.ctx.settings.HTTP_MAX_JSON_BODY,
                                    "HTTP_MAX_JSON_BODY")
            self.user = await self.blocking(authenticate_request, self.service, self)
        except JsonError as exc:
            self.fail(exc)

    def data_received(self, chunk: bytes) -> None:
        self.body.add(chunk)

    async def blocking(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on a worker thread, which knows where the request comes from."""
        origin = f"{self.request.remote_ip} {self.request.method} {self.request.path}"

        def call() -> Any:
            logs.for_request(None, origin)
            try:
                return fn(*args)
            finally:
                logs.for_request(None)
        return await IOLoop.current().run_in_executor(self.service.api_executor, call)

    def json_body(self) -> dict:
        try:
            body = json.loads(self.body.bytes() or b"null")
        except ValueError:
            raise JsonError(400, "request body must be JSON") from None
        except RecursionError:
            raise JsonError(400, "request body must be JSON (nested too deeply)") from None
        if not isinstance(body, dict):
            raise JsonError(400, "request body must be a JSON object")
        return body

    def fail(self, exc: Exception) -> None:
        if isinstance(exc, RpcError):
            data = exc.data if isinstance(exc.data, dict) else {}
            exc = JsonError(HTTP_STATUS.get(RpcCode(exc.code), 500), exc.message, **data)
        elif isinstance(exc, ServiceUnavailable):
            exc = JsonError(503, f"the launcher is not available now: {exc}",
                            retry_after=5)
        if not isinstance(exc, JsonError):
            raise exc
        self.set_status(exc.status)
        if "retry_after" in exc.more:
            self.set_header("Retry-After", str(exc.more.pop("retry_after")))
        self.finish({"error": exc.message, **exc.more})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # never a traceback: tornado's own errors (405, 500) as JSON too
        self.finish({"error": self._reason})
