"""Router: JSON-RPC 2.0 method -> task class, run on a bounded pool of named task threads.

``handle_text`` runs on the event-loop thread and only parses and enqueues (the workers
are woken once per loop turn, however many messages the turn read); tasks run on
TASK_POOL_SIZE worker threads fed by a queue of TASK_QUEUE_SIZE. A full queue, or a
connection with WS_MAX_IN_FLIGHT requests already running, gets -32004 at once.
Replies are serialised in the worker and reach the client through the connection's
thread-safe ``send_text``. A task whose answer comes from another service returns a
``concurrent.futures.Future``: its worker is free at once, the request keeps its in-flight
slot, and the reply goes out from the thread that settles the future, or from the router
with -32012 once TASK_REPLY_TIMEOUT has passed (a wedged service never leaves a client
waiting forever, nor its slot taken).
"""

import asyncio
import functools
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from zephserver import logs, metrics
from zephserver.config import resolve_class
from zephserver.database import unavailable_reason
from zephserver.errors import RpcCode, RpcError
from zephserver.infra.service import Service
from zephserver.lent_connections import LentConnections
from zephserver.service.task_pool import TaskPool
from zephserver.task.base import ANONYMOUS, Request, UserInfo, check_access
from zephserver.wire import compact

log = logging.getLogger(__name__)

def _error(request_id: Any, code: int, message: str, data: Any = None) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "error": RpcError(code, message, data).to_json()}


def _send(conn: Any, reply: dict | str) -> None:
    if isinstance(reply, str):
        conn.send_text(reply)
    else:
        conn.send_json(reply)


class _Batch:
    """Collects the replies of one batch and sends them together when the last is in."""

    def __init__(self, conn: Any, size: int) -> None:
        self.conn = conn
        self.remaining = size
        self.replies: list[dict] = []
        self.lock = threading.Lock()

    def add(self, reply: dict | str | None) -> None:
        with self.lock:
            if reply is not None:
                self.replies.append(reply if isinstance(reply, str) else json.dumps(reply))
            self.remaining -= 1
            done = self.remaining == 0
        if done and self.replies:
            self.conn.send_text("[" + ",".join(self.replies) + "]")


class RouterService(Service):
    name = "router"
    requires = ("auth", "rooms")
    announces_ready = True

    def __init__(self) -> None:
        super().__init__()
        self.tasks: dict[str, type] = {}
        self.pool: TaskPool | None = None
        self.stopping = False
        self._running: dict[int, Any] = {}
        self._running_lock = threading.Lock()
        self._wake_pending = False
        # (loop thread) a batch's IN_ORDER requests, while it is dispatched: one task run
        self._in_order: list[tuple[Callable[[], None], Callable, Any]] | None = None
        self.reply_timeout = 30.0
        self._owed: set[_Owed] = set()  # replies that futures still owe
        self._owed_lock = threading.Lock()
        self.requests = metrics.RequestCounts()  # kept across restarts of the service
        # the task threads' database connections: about one kept per core (as many as
        # the pool runs at once)
        self.connections = LentConnections(keep=os.cpu_count() or 2)

    def main(self) -> None:
        assert self.ctx is not None
        s = self.ctx.settings
        self.tasks = {m: resolve_class(p) for m, p in s.TASKS_PATH.items()}
        self.max_batch = s.WS_MAX_BATCH
        self.max_in_flight = s.WS_MAX_IN_FLIGHT
        self.stopping = False
        self.pool = TaskPool(s.TASK_POOL_SIZE, s.TASK_QUEUE_SIZE,
                             share=s.TASK_POOL_USER_SHARE)
        self.reply_timeout = s.TASK_REPLY_TIMEOUT
        self.ctx.ready()
        sweep = min(1.0, self.reply_timeout / 4)
        while not self._disabled.wait(sweep):
            self._expire_owed(time.monotonic())
        self._shutdown(s.TASK_SHUTDOWN_TIMEOUT)

    def _shutdown(self, timeout: float) -> None:
        self.stopping = True
        pool, self.pool = self.pool, None
        if pool is None:
            return
        for job in pool.drain():
            job()  # queued jobs answer SHUTTING_DOWN because self.stopping is set
        with self._running_lock:
            running = list(self._running.values())
        for task in running:
            interrupt = getattr(task, "interrupt", None)
            if callable(interrupt):
                try:
                    interrupt()
                except Exception:
                    log.exception("task %s raised in interrupt()", type(task).__name__)
        log.info("router stopping: interrupted %d running task(s)", len(running))
        stuck = pool.stop(timeout)
        if stuck:
            log.error("task threads still busy after %.1fs: %s", timeout, ", ".join(stuck))
        self.connections.close()
        with self._owed_lock:
            owed, self._owed = self._owed, set()
        for reply in owed:  # futures the stopping services did not settle
            reply.give(lambda r: _error(r.request_id, RpcCode.SHUTTING_DOWN,
                                        "the server is shutting down"))

    def _expire_owed(self, now: float) -> None:
        with self._owed_lock:
            expired = {reply for reply in self._owed if reply.deadline <= now}
            self._owed -= expired
        for reply in expired:
            reply.give(self._timed_out)

    def _timed_out(self, reply: "_Owed") -> dict:
        error_id = uuid.uuid4().hex[:12]
        log.error("task %s: no answer within %gs (error id %s)", reply.method,
                  self.reply_timeout, error_id, extra={"conn": reply.conn.cid,
                                                       "rpc_id": reply.request_id,
                                                       "method": reply.method})
        return _error(reply.request_id, RpcCode.TASK_TIMEOUT, f"no answer within "
                      f"{self.reply_timeout:g}s (error id {error_id})", {"error_id": error_id})

    def metric_families(self) -> list:
        busy, queued = self.pool.load() if self.pool is not None else (0, 0)
        return [metrics.TASK_POOL_BUSY.family([((), busy)]),
                metrics.TASK_POOL_QUEUED.family([((), queued)]), *self.requests.families()]

    # -- the loop thread ------------------------------------------------------------------

    def handle_text(self, conn: Any, text: str) -> None:
        """Parse one WebSocket text message and dispatch it. Loop thread; never blocks."""
        try:
            message = json.loads(text)
        except ValueError as exc:
            conn.send_json(_error(None, RpcCode.PARSE_ERROR, f"parse error: {exc}"))
            return
        except RecursionError:  # thousands of nested brackets: refused, the connection kept
            conn.send_json(_error(None, RpcCode.PARSE_ERROR, "parse error: nested too "
                                  "deeply"))
            return
        if isinstance(message, list):
            if not message:
                conn.send_json(_error(None, RpcCode.INVALID_REQUEST, "invalid request: "
                                      "empty batch"))
                return
            if len(message) > self.max_batch:
                conn.send_json(_error(None, RpcCode.INVALID_REQUEST, f"invalid request: batch "
                                      f"of {len(message)} exceeds the limit of {self.max_batch}"))
                return
            batch = _Batch(conn, len(message))
            self._in_order = []
            try:
                for item in message:
                    self._dispatch(conn, item, batch.add)
            finally:
                in_order, self._in_order = self._in_order, None
            if in_order:
                self._submit(conn, in_order)
        else:
            self._dispatch(conn, message, lambda reply: reply and _send(conn, reply))

    def _dispatch(self, conn: Any, item: Any, reply: Callable[[Any], Any]) -> None:
        if not isinstance(item, dict):
            reply(_error(None, RpcCode.INVALID_REQUEST, "invalid request: expected an object"))
            return
        request_id = item.get("id")
        notify = "id" not in item
        method, params = item.get("method"), item.get("params")
        if (item.get("jsonrpc") != "2.0" or not isinstance(method, str)
                or not (params is None or isinstance(params, dict | list))
                or not (request_id is None or isinstance(request_id, str | int))
                or isinstance(request_id, bool)):
            reply(_error(request_id, RpcCode.INVALID_REQUEST, "invalid request: needs "
                         "jsonrpc '2.0', a method string, object or array params"))
            return

        started = time.perf_counter()

        def answer(response: dict | str) -> None:
            # a result is sent as its text; an error is a dict (see _result, _error)
            outcome = "ok" if isinstance(response, str) else str(response["error"]["code"])
            self.requests.add(method if method in self.tasks else "unknown", outcome,
                              time.perf_counter() - started)
            reply(None if notify else response)

        self.route(conn, method, params, request_id, answer)

    def route(self, conn: Any, method: str, params: Any, request_id: Any,
              answer: Callable[[dict | str], None]) -> None:
        """Run task ``method`` with ``params`` for ``conn``; ``answer`` gets the JSON-RPC
        response (a dict, or its JSON text). Loop thread; never blocks. The JSON-RPC
        face above and the 2015 wire format (service.legacy_ws) both come here."""
        cls = self.tasks.get(method)
        if cls is None:
            answer(_error(request_id, RpcCode.METHOD_NOT_FOUND, f"method not found: {method}",
                          {"method": method}))
            return
        pool = self.pool
        if self.stopping or pool is None:
            answer(_error(request_id, RpcCode.SHUTTING_DOWN, "the server is shutting down"))
            return
        inline = getattr(cls, "INLINE", False) and getattr(cls, "_zeph_access", ()) is None
        if not (conn.has_slot(self.max_in_flight) if inline
                else conn.acquire_slot(self.max_in_flight)):
            answer(_error(request_id, RpcCode.QUEUE_FULL, "too many requests in flight on "
                          f"this connection (limit {self.max_in_flight})"))
            return
        if inline:
            # open to anyone and answered from memory: no credential recheck (it may need
            # the database), no hop to a task thread and back; done before anything else
            # runs, so it holds its slot only in that it needs a free one
            answer(self._inline(cls, method, params, request_id, conn))
            return
        run = (lambda: self._run(conn, cls, method, params, request_id, answer), answer,
               request_id)
        if self._in_order is not None and getattr(cls, "IN_ORDER", False):
            self._in_order.append(run)  # (submitted with the others once all are read)
        else:
            self._submit(conn, [run])

    def _submit(self, conn: Any, runs: list[tuple[Callable[[], None], Callable, Any]]
                ) -> None:
        """Give ``runs`` (each request's run, answer and id) to the pool as one task: they
        run one after another, in order. Loop thread."""
        pool = self.pool
        # One user (an anonymous client: one connection) holds a share of the pool.
        asker = getattr(conn.user, "id", None) or conn.cid
        if pool is None or not pool.submit(functools.partial(_run_all, runs), wake=False,
                                           key=asker):
            for _, answer, request_id in runs:
                conn.release_slot()
                answer(_error(request_id, RpcCode.QUEUE_FULL, "server overloaded: task "
                              "queue full (or your share of it), retry later"))
        elif not self._wake_pending:
            # The loop reads many clients' messages in one turn: wake the workers once, at
            # the start of the next turn, rather than once per message (each wake is a
            # futex call and a GIL hand-off that the loop thread pays for).
            self._wake_pending = True
            asyncio.get_running_loop().call_soon(self._wake_pool, pool)

    def _wake_pool(self, pool: TaskPool) -> None:
        self._wake_pending = False
        pool.wake()

    # -- task threads ---------------------------------------------------------------------

    def _run(self, conn: Any, cls: type, method: str, params: Any, request_id: Any,
             answer: Callable[[dict | str], None]) -> None:
        thread = threading.current_thread()
        base_name = thread.name
        response: dict | str | Future = ""
        try:
            if self.stopping:
                response = _error(request_id, RpcCode.SHUTTING_DOWN,
                                  "the server is shutting down")
            else:
                thread.name = f"{base_name}-{method}"
                logs.for_request((conn.cid, request_id, method),
                                 getattr(conn, "origin", None) or f"connection {conn.cid}")
                with self.connections.lent():
                    response = self._execute(conn, cls, method, params, request_id)
        finally:
            logs.for_request(None)
            thread.name = base_name
            if not isinstance(response, Future):
                # Free the slot before answering: a client that sends its next request as
                # soon as it reads this reply must find the slot free.
                conn.release_slot()
        if isinstance(response, Future):
            # The answer comes later from a service (the job manager): this thread is free
            # now, and the reply goes out from whichever thread settles the future.
            # A task may give its Future a longer wait of its own (``reply_timeout``).
            wait = getattr(response, "reply_timeout", None) or self.reply_timeout
            owed = _Owed(conn, method, request_id, answer, time.monotonic() + wait)
            with self._owed_lock:
                self._owed.add(owed)
            response.add_done_callback(lambda future: self._settled(owed, future))
        else:
            answer(response)

    def _settled(self, owed: "_Owed", future: Future) -> None:
        with self._owed_lock:
            self._owed.discard(owed)
        owed.give(lambda r: _outcome(r.method, r.request_id, future))

    def _inline(self, cls: type, method: str, params: Any, request_id: Any,
                conn: Any) -> dict | str:
        try:
            task = cls(Request({} if params is None else params, conn.cid,
                               conn.user or ANONYMOUS, method))
            return _result(request_id, task.main())
        except Exception as exc:
            return _failure(method, request_id, exc)

    def _execute(self, conn: Any, cls: type, method: str, params: Any, request_id: Any,
                 user: UserInfo | None = None) -> dict | str | Future:
        """Run the task; ``user`` None: the connection's credential is checked again now."""
        assert self.ctx is not None
        task = None
        try:
            if user is None:
                user = conn.user = self.ctx.get("auth").recheck(conn.credential)
            check_access(cls, user)
            task = cls(Request({} if params is None else params, conn.cid, user, method))
            with self._running_lock:
                self._running[id(task)] = task
            result = task.main()
            return result if isinstance(result, Future) else _result(request_id, result)
        except Exception as exc:
            return _failure(method, request_id, exc)
        finally:
            if task is not None:
                with self._running_lock:
                    self._running.pop(id(task), None)


def _run_all(runs: list[tuple[Callable[[], None], Callable, Any]]) -> None:
    """Each request's run in turn (each answers its own, whatever it raises)."""
    for run, answer, request_id in runs:
        try:
            run()
        except Exception as exc:  # (a bug of the router's: the next ones still run)
            answer(_failure("(router)", request_id, exc))


class _Owed:
    """A reply that a task's Future owes its client. Given once: by the future when it
    settles, or by the router when it is overdue or stopping; whichever comes second is
    dropped. Giving it frees the connection's in-flight slot."""

    __slots__ = ("_once", "answer", "conn", "deadline", "method", "request_id")

    def __init__(self, conn: Any, method: str, request_id: Any,
                 answer: Callable[[dict | str], None], deadline: float) -> None:
        self.conn, self.method, self.request_id = conn, method, request_id
        self.answer, self.deadline = answer, deadline
        self._once = threading.Lock()

    def give(self, make_reply: Callable[["_Owed"], dict | str]) -> None:
        if not self._once.acquire(blocking=False):
            return
        self.conn.release_slot()
        self.answer(make_reply(self))


def _outcome(method: str, request_id: Any, future: Future) -> dict | str:
    """The reply for a settled future, as if its value came from main()."""
    try:
        return _result(request_id, future.result())
    except Exception as exc:
        return _failure(method, request_id, exc)


def _result(request_id: Any, result: Any) -> str:
    """The reply text; serialised here, so a result that is not JSON raises (TypeError)."""
    return compact({"jsonrpc": "2.0", "id": request_id, "result": result})


def _failure(method: str, request_id: Any, exc: Exception) -> dict:
    """A task's RpcError as it is; the database unavailable -32003 with the reason;
    anything else -32603 with an id that is in the log."""
    if isinstance(exc, RpcError):
        return {"jsonrpc": "2.0", "id": request_id, "error": exc.to_json()}
    why = unavailable_reason(exc)
    if why is not None:
        log.warning("task %s: the database is unavailable: %s", method, why)
        return _error(request_id, RpcCode.SERVICE_UNAVAILABLE, f"the database is "
                      f"unavailable, retry later: {why}", {"retry_after": 5})
    error_id = uuid.uuid4().hex[:12]
    log.error("task %s failed (error id %s)", method, error_id, exc_info=exc)
    return _error(request_id, RpcCode.INTERNAL_ERROR, f"internal error (error id {error_id})",
                  {"error_id": error_id})
