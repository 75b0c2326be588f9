"""Calls to one node of the cluster: a request told to it over the bus, its answer (or
its error) told back; for what only that node can do (a job's process lives there).

- ``call(node, method, params, timeout)`` blocks the calling thread (never the bus's):
  a node known to be down, or one that does not answer within ``timeout``, or one that
  goes down meanwhile, is -32007 "node N is unreachable" at once / in time;
- handlers (``handle(method, fn)``) run on a few worker threads of their own, so a slow
  one never holds up the bus; an RpcError goes back as it is, anything else as -32603
  with an error id in the serving node's log.

Generic: nothing here knows what is called.
"""

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from zephserver.errors import RpcCode, RpcError

log = logging.getLogger(__name__)

WORKERS = 4


def unreachable(node: str, why: str) -> RpcError:
    return RpcError(RpcCode.NODE_UNREACHABLE, f"node {node} is unreachable: {why}",
                    {"node": node})


class ClusterCalls:
    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self._handlers: dict[str, Callable[[Any], Any]] = {}
        self._pending: dict[str, tuple[str, Future]] = {}
        self._lock = threading.Lock()
        self._workers: ThreadPoolExecutor | None = None
        cluster.subscribe("cluster.call", self._on_call)
        cluster.subscribe("cluster.answer", self._on_answer)
        cluster.subscribe("cluster.node_down", self._on_down)

    def handle(self, method: str, fn: Callable[[Any], Any]) -> None:
        """Serve ``method``: ``fn(params)`` returns the JSON result or raises RpcError."""
        self._handlers[method] = fn

    def call(self, node: str, method: str, params: Any, timeout: float) -> Any:
        """``node``'s answer to ``method(params)``. Blocking, at most ``timeout``.

        Raises:
            RpcError: the node's own error, or -32007 (unreachable, or no answer in time).
        """
        if not self.cluster.is_up(node):
            raise unreachable(node, "not heard from")
        call_id = uuid.uuid4().hex
        future: Future = Future()
        with self._lock:
            self._pending[call_id] = (node, future)
        try:
            self.cluster.tell(node, "cluster.call", {"id": call_id, "from": self.cluster.node,
                                                     "method": method, "params": params})
            return future.result(timeout)
        except FutureTimeout:
            raise unreachable(node, f"no answer within {timeout:g}s") from None
        finally:
            with self._lock:
                self._pending.pop(call_id, None)

    def close(self) -> None:
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)

    # -- the dispatcher thread: hand over at once -----------------------------------------

    def _on_call(self, request: dict) -> None:
        if self._workers is None:
            self._workers = ThreadPoolExecutor(WORKERS, thread_name_prefix="zeph-cluster-call")
        self._workers.submit(self._serve, request)

    def _on_answer(self, answer: dict) -> None:
        with self._lock:
            entry = self._pending.get(answer.get("id", ""))
        if entry is None:
            return  # its caller gave up
        future = entry[1]
        if "error" in answer:
            e = answer["error"]
            future.set_exception(RpcError(e["code"], e["message"], e.get("data")))
        else:
            future.set_result(answer.get("result"))

    def _on_down(self, data: dict) -> None:
        node = data.get("node")
        with self._lock:
            lost = [f for n, f in self._pending.values() if n == node]
        for future in lost:
            if not future.done():
                future.set_exception(unreachable(node, "it went down"))

    # -- a worker thread ------------------------------------------------------------------

    def _serve(self, request: dict) -> None:
        method, caller = request.get("method"), request.get("from")
        answer: dict[str, Any] = {"id": request.get("id")}
        try:
            handler = self._handlers.get(method)  # type: ignore[arg-type]
            if handler is None:
                raise RpcError(RpcCode.METHOD_NOT_FOUND, f"node {self.cluster.node} does "
                               f"not serve {method!r}")
            answer["result"] = handler(request.get("params"))
        except RpcError as exc:
            answer["error"] = exc.to_json()
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            log.exception("a call of %s from node %s failed (error id %s)", method, caller,
                          error_id)
            answer["error"] = RpcError(RpcCode.INTERNAL_ERROR, f"internal error on node "
                                       f"{self.cluster.node} (error id {error_id})",
                                       {"error_id": error_id}).to_json()
        try:
            self.cluster.tell(caller, "cluster.answer", answer)
        except (KeyError, TypeError):
            log.warning("cannot answer a call of %s from %r", method, caller)
