"""Operations: ``/healthz``, ``/readyz`` and ``/metrics`` for load balancers, orchestrators
and Prometheus.

``/healthz`` says the process answers; ``/readyz`` is 200 only when every service is
RUNNING, the database answers and, in a cluster, some peer is heard (503 with a JSON
body naming what is wrong otherwise); ``/metrics`` is the Prometheus text format from
``prometheus_client`` (``zephserver.metrics`` lists every family). They are served on
PORT_ZEPH, or on OPS_ADDRESS by a small server of their own (then they still answer
when the web service is down), open or behind a staff API token (OPS_REQUIRE_TOKEN).
"""

import asyncio
import json
import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import tornado.web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets

from zephserver import memory, metrics
from zephserver.infra.service import Service
from zephserver.logs import CountingHandler

log = logging.getLogger(__name__)


class OperationsService(Service):
    name = "ops"
    announces_ready = True

    def __init__(self) -> None:
        super().__init__()
        self.executor = ThreadPoolExecutor(2, thread_name_prefix="zeph-ops")
        self.collector = metrics.StateCollector(self._sources)
        self.loop: IOLoop | None = None

    def main(self) -> None:
        assert self.ctx is not None
        s = self.ctx.settings
        for handler in logging.getLogger().handlers:  # what the daemon's own log costs
            if isinstance(handler, CountingHandler):
                handler.on_bytes = metrics.LOG_BYTES.labels("daemon").inc
        if s.OPS_ADDRESS is None:
            self.ctx.ready()  # served by the web service on PORT_ZEPH (http_routes)
            super().main()
            return
        self._serve_alone(s.OPS_ADDRESS)

    def _serve_alone(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        asyncio.set_event_loop(asyncio.new_event_loop())
        self.loop = IOLoop.current()
        server = HTTPServer(tornado.web.Application(self._routes()), chunk_size=memory.READ_CHUNK)
        sockets = bind_sockets(int(port), host)
        server.add_sockets(sockets)
        log.info("serving /healthz, /readyz and /metrics on http://%s:%d", host,
                 sockets[0].getsockname()[1])
        try:
            if not self._disabled.is_set():
                self.ctx.ready()  # type: ignore[union-attr]
                self.loop.start()
        finally:
            server.stop()
            self.loop.close(all_fds=True)
            self.loop = None

    def disable(self) -> None:
        super().disable()
        loop = self.loop
        if loop is not None:
            loop.add_callback(loop.stop)

    def http_routes(self) -> list[tuple[str, type]]:
        assert self.ctx is not None
        return [] if self.ctx.settings.OPS_ADDRESS is not None else self._routes()

    def _routes(self) -> list[tuple[str, type]]:
        return [(path, type(handler.__name__, (handler,), {"ops": self}))
                for path, handler in (("/healthz", HealthHandler), ("/readyz", ReadyHandler),
                                      ("/metrics", MetricsHandler))]

    # -- what the handlers ask (off the loop) ---------------------------------------------

    def problems(self) -> list[str]:
        """Why this node should not get traffic now; empty when it should."""
        assert self.ctx is not None
        problems = [f"service {s['name']} is {s['state']}" for s in self.ctx.services()
                    if s["state"] != "RUNNING"]
        why = database_problem()
        if why:
            problems.append(f"the database does not answer: {why}")
        for hook in self.ctx.hooks("health_problems"):  # e.g. writes failing (disk full)
            problems += hook()
        cluster = self.ctx.cluster
        if cluster is not None and cluster.enabled:
            peers = cluster.status()["peers"]
            if peers and not any(p["state"] == "up" for p in peers):
                problems.append("cut off from every cluster peer")
        return problems

    def _sources(self) -> Iterable[Callable[[], Iterable]]:
        assert self.ctx is not None
        return [self._daemon_families, *self.ctx.hooks("metric_families")]

    def _daemon_families(self) -> list:
        assert self.ctx is not None
        services = self.ctx.services()
        families = [
            metrics.SERVICE_STATE.family(((s["name"], s["state"]), 1) for s in services),
            metrics.SERVICE_RESTARTS.family(((s["name"],), s["restarts"]) for s in services),
            metrics.MEMORY_TRIM_PENDING.family([((), memory.pending())])]
        cluster = self.ctx.cluster
        if cluster is not None and cluster.enabled:
            peers = cluster.status()["peers"]
            families += [
                metrics.PEERS_UP.family([((), sum(p["state"] == "up" for p in peers))]),
                metrics.PEER_UP.family(((p["node"],), p["state"] == "up") for p in peers),
                metrics.MESSAGES_BUFFERED.family(((p["node"],), p["buffered"]) for p in peers),
                metrics.MESSAGES_LOST.family(((p["node"],), p["lost"]) for p in peers)]
        return families

    def allowed(self, authorization: str | None) -> bool:
        """Whether a request may see these pages (OPS_REQUIRE_TOKEN: a staff token)."""
        assert self.ctx is not None
        if not self.ctx.settings.OPS_REQUIRE_TOKEN:
            return True
        if not authorization or not authorization.lower().startswith("bearer "):
            return False
        from zephserver.service.session_manager import AuthenticationFailed

        try:
            user, _ = self.ctx.get("auth").authenticate({}, authorization)
        except AuthenticationFailed:
            return False
        return bool(user.is_authenticated and user.is_staff)


def database_problem() -> str:
    """'' when the database answers a trivial query, else why not."""
    from django.db import DatabaseError, close_old_connections, connection

    from zephserver.database import unavailable_reason

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return ""
    except DatabaseError as exc:
        return unavailable_reason(exc) or str(exc)
    finally:
        close_old_connections()


class OpsHandler(tornado.web.RequestHandler):
    ops: ClassVar[OperationsService]

    def initialize(self, **_: Any) -> None:  # on PORT_ZEPH the web service passes itself
        pass

    async def prepare(self) -> None:
        authorization = self.request.headers.get("Authorization")
        if not await self.off_loop(self.ops.allowed, authorization):
            self.set_status(401)
            self.set_header("WWW-Authenticate", 'Bearer realm="zephserver"')
            self.finish({"error": "a staff user's API token is required "
                                  "(Authorization: Bearer <token>)"})

    async def off_loop(self, fn: Callable, *args: Any) -> Any:
        return await IOLoop.current().run_in_executor(self.ops.executor, fn, *args)

    def compute_etag(self) -> None:
        return None


class HealthHandler(OpsHandler):
    async def get(self) -> None:
        """200 {status: "alive", pid, node} while the process answers (no login unless
        OPS_REQUIRE_TOKEN)."""
        self.finish({"status": "alive", "pid": os.getpid(),
                     "node": self.ops.ctx.settings.NODE_NAME})  # type: ignore[union-attr]


class ReadyHandler(OpsHandler):
    async def get(self) -> None:
        """200 {ready: true} when every service is RUNNING, the database answers and a
        cluster peer is heard; else 503 with the problems named."""
        problems = await self.off_loop(self.ops.problems)
        self.set_status(503 if problems else 200)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"ready": not problems, "problems": problems,
                                "node": self.ops.ctx.settings.NODE_NAME}))  # type: ignore


class MetricsHandler(OpsHandler):
    async def get(self) -> None:
        """The Prometheus text format (see the metrics page)."""
        body, content_type = await self.off_loop(metrics.exposition, self.ops.collector)
        self.set_header("Content-Type", content_type)
        self.finish(body)
