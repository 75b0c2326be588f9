"""The ParaViewWeb / wslink launcher REST API on PORT_ZEPH (seeds/001).

``POST <endpoint>`` with ``{"application": ..., ...}`` answers, once the session is
ready, with the posted object plus ``id``, ``sessionURL`` and ``secret``;
``GET <endpoint>/<id>`` returns it again; ``DELETE <endpoint>/<id>`` stops it. Errors
are ``{"error": "..."}`` with 400, 401, 403, 404 or 503 (with Retry-After).

A POST waits for readiness without holding a thread: the job manager hands back a
future that the event loop awaits.
"""

import asyncio
import re
from typing import Any

import tornado.web

from zephserver.errors import RpcError, ServiceUnavailable
from zephserver.http.rest import JsonApiHandler, JsonError
from zephserver.launch.interactive import wslink_answer

READY_SLACK = 30.0  # seconds beyond an app's own timeout before a POST gives up waiting


class LauncherHandler(JsonApiHandler):
    """What ``<endpoint>`` and ``<endpoint>/<id>`` share: the answer in wslink's shape."""

    def _answer(self, view: dict) -> None:
        jobs = self.service.ctx.get("jobs")  # type: ignore[union-attr]
        app = jobs.apps.get(view.get("application"))
        self.finish(wslink_answer(view, app.session.fields if app and app.session else None))


class SessionsHandler(LauncherHandler):
    """``<endpoint>``: start a session."""

    async def post(self) -> None:
        """Start a session: {application, ...its params}; answered once it is ready with
        id, sessionURL and secret (wslink's launcher protocol)."""
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
        self._answer(result)

    async def get(self) -> None:
        self.fail(JsonError(400, "the URL needs a session id: <endpoint>/<id>"))

    delete = get

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



class SessionHandler(LauncherHandler):
    """``<endpoint>/<id>``: one session."""

    async def get(self, session_id: str) -> None:
        """One session of the caller (the id is in the POST's answer)."""
        await self._one(session_id, "session_get")

    async def delete(self, session_id: str) -> None:
        """Stop a session."""
        await self._one(session_id, "session_stop")

    async def post(self, session_id: str) -> None:
        raise tornado.web.HTTPError(405)

    async def _one(self, session_id: str, method: str) -> None:
        try:
            jobs = self.service.ctx.get("jobs")  # type: ignore[union-attr]
            result = await self.blocking(getattr(jobs, method), self.user, session_id)
        except (JsonError, RpcError, ServiceUnavailable) as exc:
            self.fail(exc)
            return
        self._answer(result)


def routes(endpoint: str) -> list[tuple[str, type]]:
    """``endpoint`` (e.g. /paraview) and ``endpoint/<id>``."""
    escaped = re.escape(endpoint)
    return [(rf"{escaped}/?", SessionsHandler), (rf"{escaped}/([^/]+)", SessionHandler)]
