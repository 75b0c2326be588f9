"""An actor: one thread owns some state, and everything that touches it runs there, in
order, from an inbox.

Other threads ``post`` work (fire and forget), ``call`` it (and wait for the result) or
``call_soon`` it (a Future of the result); the owning thread may also ``after`` a delay.
So the state never races with itself and needs no lock. The job manager and the process
agent are actors; the job manager's ``handle`` runs each batch of its inbox in one
database transaction.
"""

import functools
import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from zephserver.errors import RpcCode, RpcError

log = logging.getLogger(__name__)

Item = tuple[Callable, tuple, Future | None]


class Actor:
    call_timeout = 30.0  # seconds ``call`` waits for its result
    max_batch = 500  # inbox items taken at once

    def __init__(self) -> None:
        self._inbox: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_ids = itertools.count()
        self._actor_thread: threading.Thread | None = None
        self._closing = False

    # -- any thread -----------------------------------------------------------------------

    def post(self, fn: Callable, *args: Any) -> None:
        """Run ``fn(*args)`` on the actor's thread soon. Non-blocking."""
        self._inbox.put((fn, args, None))

    def call_soon(self, fn: Callable, *args: Any) -> Future:
        """Run ``fn(*args)`` on the actor's thread; a Future of its result (failed with
        -32000 if the actor stops first)."""
        if self._closing:
            raise RpcError(RpcCode.SHUTTING_DOWN, "the server is shutting down")
        future: Future = Future()
        self._inbox.put((fn, args, future))
        return future

    def call(self, fn: Callable, *args: Any) -> Any:
        """Run ``fn(*args)`` on the actor's thread and return its result. Blocking
        (at most ``call_timeout``); at once when called from that thread."""
        if self.on_actor_thread():
            return fn(*args)
        return self.call_soon(fn, *args).result(self.call_timeout)

    def close_inbox(self) -> None:
        """Make ``run_inbox`` return after what is already queued; refuse new calls."""
        self._closing = True
        self._inbox.put(None)

    def on_actor_thread(self) -> bool:
        return threading.current_thread() is self._actor_thread

    # -- the actor's thread ---------------------------------------------------------------

    def after(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on this thread once ``delay`` seconds have passed."""
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_ids), fn))

    def run_inbox(self) -> None:
        """Serve the inbox until ``close_inbox``; callers still waiting then are refused."""
        self._actor_thread = threading.current_thread()
        self._closing = False
        while True:
            items = self._next_items()
            if None in items:  # closed: what came before runs, what came after is refused
                close = items.index(None)
                if close:
                    self.handle(items[:close])  # type: ignore[arg-type]
                self.refuse(item for item in items[close:] if item is not None)
                return
            self.handle(items)  # type: ignore[arg-type]

    def _next_items(self) -> list[Item | None]:
        timeout = None
        if self._timers:
            timeout = max(0.0, self._timers[0][0] - time.monotonic())
        try:
            items = [self._inbox.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(items) < self.max_batch and items[-1] is not None:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        return items

    def handle(self, items: list[Item]) -> None:
        """Run a batch of the inbox, then the timers that are due."""
        for item in items:
            self.execute(*item)
        self.fire_timers()

    def step(self, timeout: float) -> None:
        """Run one inbox item if one comes within ``timeout`` (a stop waiting for exits)."""
        try:
            item = self._inbox.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return
        if item is not None:
            self.execute(*item)

    def execute(self, fn: Callable, args: tuple, future: Future | None) -> None:
        try:
            result = fn(*args)
        except Exception as exc:
            if future is None:
                log.exception("%s: %s failed", type(self).__name__,
                              getattr(fn, "__name__", fn))
            else:
                future.set_exception(exc)
        else:
            if future is not None:
                future.set_result(result)

    def postpone_due_timers(self, delay: float) -> None:
        """Timers already due fire ``delay`` seconds from now instead (what they need
        is not there yet): the thread then waits, rather than trying again at once."""
        now = time.monotonic()
        self._timers = [(max(when, now + delay) if when <= now else when, n, fn)
                        for when, n, fn in self._timers]
        heapq.heapify(self._timers)

    def fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            self.execute(fn, (), None)

    def drain_inbox(self) -> list[Item]:
        return [item for item in self._take_inbox() if item is not None]

    def _take_inbox(self) -> list[Item | None]:
        """Everything in the inbox now (a None: it was closed)."""
        items: list[Item | None] = []
        while True:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                return items

    @staticmethod
    def refuse(items: Any) -> None:
        """Callers still waiting get an answer now, not after ``call_timeout`` (what was
        posted is settled again by the next start)."""
        for _, _, future in items:
            if future is not None and not future.done():
                future.set_exception(RpcError(RpcCode.SHUTTING_DOWN,
                                              "the server is shutting down"))


def on_actor(method: Callable) -> Callable:
    """Declare a method that runs on its actor's thread: called from another thread, it
    is handed to the actor and waited for (``Actor.call``); from that thread, it runs at
    once. One declaration per call, no forwarding pair."""
    @functools.wraps(method)
    def run(self: Actor, *args: Any, **kwargs: Any) -> Any:
        return self.call(functools.partial(method, self, *args, **kwargs))
    return run
