"""The ParaViewWeb / wslink launcher REST API on PORT_ZEPH (seeds/001).

``POST <endpoint>`` with ``{"application": ..., ...}`` answers, once the session is
ready, with the posted object plus ``id``, ``sessionURL`` and ``secret``;
``GET <endpoint>/<id>`` returns it again; ``DELETE <endpoint>/<id>`` stops it. Errors
are ``{"error": "..."}`` with 400, 401, 403, 404 or 503 (with Retry-After).

A POST waits for readiness without holding a thread: the job manager hands back a
future that the event loop awaits.
"""

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import tornado.web
from tornado.ioloop import IOLoop

from zephserver.errors import RpcCode, RpcError, ServiceUnavailable

if TYPE_CHECKING:
    from zephserver.service.websocket_client import WebSocketService

access_log = logging.getLogger("zephserver.access")

HTTP_STATUS = {RpcCode.INVALID_PARAMS: 400, RpcCode.NOT_AUTHENTICATED: 401,
               RpcCode.FORBIDDEN: 403, RpcCode.NOT_FOUND: 404, RpcCode.CONFLICT: 409,
               RpcCode.SERVICE_UNAVAILABLE: 503, RpcCode.SHUTTING_DOWN: 503,
               RpcCode.QUEUE_FULL: 503}
MAX_BODY = 64 * 1024
READY_SLACK = 30.0  # seconds beyond an app's own timeout before a POST gives up waiting


class JsonError(Exception):
    def __init__(self, status: int, message: str, **more: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.more = status, message, more


def authenticate_request(service: "WebSocketService", handler: tornado.web.RequestHandler
                         ) -> Any:
    """The request's user (session cookie or bearer token); JsonError 401 / 403.

    A cookie is sent by browsers on any site's request, so a cookie-authenticated
    request from a foreign Origin is refused (403): no cross-site launching.
    """
    sessions = service.ctx.get("sessions")  # type: ignore[union-attr]
    cookies = {name: morsel.value for name, morsel in handler.request.cookies.items()}
    authorization = handler.request.headers.get("Authorization")
    from zephserver.service.session_manager import AuthenticationFailed

    try:
        user, _ = sessions.authenticate(cookies, authorization)
    except AuthenticationFailed as exc:
        raise JsonError(401, str(exc)) from None
    if not user.is_authenticated:
        raise JsonError(401, "authentication required: a session cookie or "
                             "'Authorization: Bearer <token>'")
    origin = handler.request.headers.get("Origin")
    if not authorization and origin and origin not in service.allowed_origins and \
            urlparse(origin).netloc.lower() != handler.request.host.lower():
        raise JsonError(403, f"requests from origin {origin} are not allowed")
    return user


class JsonApiHandler(tornado.web.RequestHandler):
    """JSON in and out, authentication off the loop, RpcError -> HTTP status."""

    def initialize(self, service: "WebSocketService") -> None:
        self.service = service

    async def prepare(self) -> None:
        try:
            self.user = await self.blocking(authenticate_request, self.service, self)
        except JsonError as exc:
            self.fail(exc)

    async def blocking(self, fn: Any, *args: Any) -> Any:
        return await IOLoop.current().run_in_executor(self.service.api_executor, fn, *args)

    def json_body(self) -> dict:
        if len(self.request.body) > MAX_BODY:
            raise JsonError(413, f"request body larger than {MAX_BODY} bytes")
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError:
            raise JsonError(400, "request body must be JSON") from None
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


class LauncherHandler(JsonApiHandler):
    """``<endpoint>`` and ``<endpoint>/<id>``."""

    async def post(self, session_id: str | None = None) -> None:
        if session_id:
            raise tornado.web.HTTPError(405)
        try:
            body = self.json_body()
            app = body.get("application")
            if not isinstance(app, str) or not app:
                raise JsonError(400, "the request needs an 'application'", field="application")
            queue = body.get("queue")
            if queue is not None and not isinstance(queue, bool):
                raise JsonError(400, "'queue' must be true or false", field="queue")
            jobs = self.service.ctx.get("jobs")  # type: ignore[union-attr]
            future = await self.blocking(jobs.start_session, self.user, app, body, queue)
            self._starting = future
            defined = jobs.apps.get(app)  # (a reload may have removed it meanwhile)
            timeout = defined.session.timeout if defined and defined.session else 60.0
            result = await asyncio.wait_for(asyncio.wrap_future(future),
                                            timeout + READY_SLACK)
        except (JsonError, RpcError, ServiceUnavailable) as exc:
            self.fail(exc)
            return
        except TimeoutError:
            self.fail(JsonError(503, "the session did not report back in time",
                                retry_after=5))
            return
        self.finish(result)

    def on_connection_close(self) -> None:
        """The client left before its session was ready: nobody will ever know its id,
        so stop it rather than leave it running."""
        future = getattr(self, "_starting", None)
        if future is None:
            return
        jobs = self.service.ctx.get("jobs")  # type: ignore[union-attr]
        user = self.user

        def stop_when_known(f: Any) -> None:  # the job manager's thread
            if f.exception() is None and f.result().get("state") != "QUEUED":
                jobs.post(jobs.stop_abandoned, user, f.result()["id"])
        future.add_done_callback(stop_when_known)

    async def get(self, session_id: str | None = None) -> None:
        await self._one(session_id, "session_get")

    async def delete(self, session_id: str | None = None) -> None:
        await self._one(session_id, "session_stop")

    async def _one(self, session_id: str | None, method: str) -> None:
        try:
            if not session_id:
                raise JsonError(400, "the URL needs a session id: <endpoint>/<id>")
            jobs = self.service.ctx.get("jobs")  # type: ignore[union-attr]
            result = await self.blocking(getattr(jobs, method), self.user, session_id)
        except (JsonError, RpcError, ServiceUnavailable) as exc:
            self.fail(exc)
            return
        self.finish(result)
