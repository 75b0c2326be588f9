"""The smartmob-agent REST API under /agent/ (seeds/004), and its live console.

Links in answers are absolute URLs built from the request. A user sees and deletes
their own processes, staff everybody's; another user's slug is a 404, as an unknown one.
``attach-console`` is a WebSocket sending one text frame per output line: the last lines
of the log first, then live. A console that cannot keep up skips ahead (with a marker
line) instead of slowing the process or the other consoles.
"""

import contextlib
from typing import Any
from urllib.parse import urlparse

import tornado.iostream
import tornado.web
import tornado.websocket
from tornado.ioloop import IOLoop

from zephserver.errors import RpcError, ServiceUnavailable
from zephserver.http.rest import (
    JsonApiHandler,
    JsonError,
    RequestIdMixin,
    authenticate_request,
)
from zephserver.launch.consoles import Console


def _links(handler: tornado.web.RequestHandler, status: dict) -> dict:
    base = f"{handler.request.protocol}://{handler.request.host}/agent"
    ws = base.replace("http", "ws", 1)
    slug = status["slug"]
    return {**status, "attach": f"{ws}/attach-console/{slug}",
            "details": f"{base}/process-status/{slug}",
            "status": f"{base}/process-status/{slug}",
            "delete": f"{base}/delete-process/{slug}"}


class AgentHandler(JsonApiHandler):
    """Calls into the agent service with the errors mapped to HTTP."""

    async def agent_call(self, method: str, *args: Any) -> Any:
        try:
            agent = self.service.ctx.get("agent")  # type: ignore[union-attr]
            return await self.blocking(getattr(agent, method), self.user, *args)
        except (RpcError, ServiceUnavailable) as exc:
            self.fail(exc)
            return None


class IndexHandler(AgentHandler):
    def get(self) -> None:
        """Links to the list and create endpoints."""
        base = f"{self.request.protocol}://{self.request.host}/agent"
        self.finish({"list": f"{base}/list-processes", "create": f"{base}/create-process"})


class CreateHandler(AgentHandler):
    async def post(self) -> None:
        """Create a process from {app, node, processes?, source_url, env?}: 201 with its
        status and links (Location: its details); 409 if the name is taken."""
        try:
            body = self.json_body()
        except JsonError as exc:
            self.fail(exc)
            return
        status = await self.agent_call("create", body, self.request_id)
        if status is not None:
            doc = _links(self, status)
            self.set_status(201)
            self.set_header("Location", doc["details"])
            self.finish(doc)


class ListHandler(AgentHandler):
    async def get(self) -> None:
        """The caller's processes: {processes: [status with links]}."""
        listing = await self.agent_call("list")
        if listing is not None:
            self.finish({"processes": [_links(self, s) for s in listing]})


class StatusHandler(AgentHandler):
    async def get(self, slug: str) -> None:
        """One process: state, pid, restarts, last exit, links."""
        status = await self.agent_call("get", slug)
        if status is not None:
            self.finish(_links(self, status))

    async def delete(self, slug: str) -> None:
        """Stop the process (TERM, AGENT_GRACE, KILL) and forget it."""
        await self._delete(slug)

    async def _delete(self, slug: str) -> None:
        try:
            agent = self.service.ctx.get("agent")  # type: ignore[union-attr]
            await self.blocking(agent.delete, self.user, slug)
        except (RpcError, ServiceUnavailable) as exc:
            self.fail(exc)
            return
        self.finish({})


class DeleteHandler(StatusHandler):
    async def get(self, slug: str) -> None:  # type: ignore[override]
        raise tornado.web.HTTPError(405)

    async def post(self, slug: str) -> None:
        """The same as DELETE on process-status (smartmob's clients POST here)."""
        await self._delete(slug)


class HandlerConsole(Console):
    """A console whose frames go to a WebSocket handler on the loop thread."""

    def __init__(self, handler: "ConsoleHandler", max_pending: int, max_rate: int) -> None:
        self.handler = handler
        self.loop = IOLoop.current()
        super().__init__(lambda frames: self.loop.add_callback(handler.write_frames, frames),
                         max_pending, max_rate)

    def close(self) -> None:  # any thread
        self.loop.add_callback(self.handler.close, 1000, "process deleted")


class ConsoleHandler(RequestIdMixin, tornado.websocket.WebSocketHandler):
    def initialize(self, service: Any) -> None:
        self.service = service
        self.console: HandlerConsole | None = None

    async def prepare(self) -> None:
        try:
            self.user = await IOLoop.current().run_in_executor(
                self.service.api_executor, authenticate_request, self.service, self)
        except JsonError as exc:
            self.set_status(exc.status)
            self.finish({"error": exc.message})

    def check_origin(self, origin: str) -> bool:
        return origin in self.service.allowed_origins or \
            urlparse(origin).netloc.lower() == self.request.host.lower()

    async def get(self, slug: str) -> None:  # type: ignore[override]
        """WebSocket: the process's live console, one text frame per line (the last
        AGENT_CONSOLE_REPLAY lines first); 404 for an unknown process."""
        # An unknown slug is refused before the upgrade, as the other endpoints do.
        try:
            agent = self.service.ctx.get("agent")
            await IOLoop.current().run_in_executor(self.service.api_executor, agent.get,
                                                   self.user, slug)
        except RpcError as exc:
            self.set_status(404 if exc.code == -32005 else 503)
            self.finish({"error": exc.message})
            return
        except ServiceUnavailable as exc:
            self.set_status(503)
            self.finish({"error": f"the agent is not available now: {exc}"})
            return
        await super().get(slug)

    async def open(self, slug: str) -> None:  # type: ignore[override]
        self.set_nodelay(True)
        self.slug = slug
        agent = self.service.ctx.get("agent")
        self.console = HandlerConsole(self, agent.console_max_pending,
                                      agent.console_max_rate)
        try:
            await IOLoop.current().run_in_executor(self.service.api_executor, agent.attach,
                                                   self.user, slug, self.console)
        except (RpcError, ServiceUnavailable):
            self.close(1011, "the process is gone")

    def write_frames(self, frames: bytes) -> None:  # loop thread
        console = self.console
        conn = self.ws_connection
        if console is None or conn is None or conn.is_closing() or conn.stream is None:
            return
        try:
            future = conn.stream.write(frames)
        except tornado.iostream.StreamClosedError:
            return
        size = len(frames)
        if future.done():
            console.written(size)
        else:
            future.add_done_callback(lambda f: (f.exception(), console.written(size)))

    def on_message(self, message: str | bytes) -> None:
        pass  # the console is output only

    def on_close(self) -> None:
        if self.console is not None:
            with contextlib.suppress(ServiceUnavailable):
                self.service.ctx.get("agent").detach(self.slug, self.console)


def routes() -> list[tuple[str, type]]:
    return [(r"/agent/?", IndexHandler),
            (r"/agent/create-process", CreateHandler),
            (r"/agent/list-processes", ListHandler),
            (r"/agent/process-status/([^/]+)", StatusHandler),
            (r"/agent/delete-process/([^/]+)", DeleteHandler),
            (r"/agent/attach-console/([^/]+)", ConsoleHandler)]
