"""The daemon's side of the keeper (``launch.keeper``): start it or find the one a
previous run left, ask it to spawn, and hear each exit.

Two connections. On "requests", ``spawn_later`` sends a batch and returns; a thread
("zeph-keeper-answers") reads the keeper's answers, a chunk of spawns at a time, and gives
each to the batch's ``on_chunk`` (the keeper answers requests in the order they came, so
the answers are matched to the batches first in, first out). The caller goes on with its
own work while the keeper spawns (the job manager records the exits of the jobs before
and plans the next) instead of waiting; ``spawn_in_chunks`` waits. On "events",
a thread ("zeph-keeper") hears each exit and gives it to ``on_exit(pid, code)``. If the
keeper goes away (killed), ``on_lost(pids)`` gets the pids it still had: they run on
without a parent that records their status, and are watched like any other process.
"""

import collections
import contextlib
import logging
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future

from zephserver.launch import keeper

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0  # seconds a new keeper has to listen
REPLY_TIMEOUT = 60.0  # seconds a batch of spawns may take
# Seconds since the last spawn or warm asked under which a warm is not sent: the kernel
# keeps the migration lock's fast path for a grace period or two after the keeper's last
# migration (a burst of 100 submits would otherwise ask 100 warms).
WARM_QUIET = 0.01
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes
# Ended jobs the keeper is told of at once, if no batch of spawns takes them first (a
# message a job would cost a send a job); no more are kept while no keeper listens.
FORGET_BATCH, MAX_FORGOTTEN = 256, 65536


class KeeperLost(Exception):
    pass


# A batch's answers: (results of the next jobs, whether more follow, None); or, the keeper
# gone before the last of them, ([], False, why).
OnChunk = Callable[[list[dict], bool, "KeeperLost | None"], None]


class KeeperClient:
    def __init__(self, path: str, on_exit: Callable[[int, int], None],
                 on_lost: Callable[[set[int]], None]) -> None:
        self.path = path
        self.on_exit, self.on_lost = on_exit, on_lost
        self.children: set[int] = set()  # pids it started and has not reported ended
        self._ended_first: set[int] = set()  # ended before their spawn's answer was read
        self._children_lock = threading.Lock()
        self._lock = threading.Lock()  # one request at a time; guards the connections
        self._sock: socket.socket | None = None  # requests
        # each batch sent on _sock and not wholly answered yet, in the order sent (the
        # connection's own: its answers' thread tells them if it ends)
        self._batches: collections.deque[OnChunk] = collections.deque()
        self._answered_at = 0.0  # monotonic: the last answer, or the first batch sent since
        self._asked_at = float("-inf")  # monotonic: the last spawn or warm sent
        self._forgotten: list[str] = []  # keys of ended jobs the keeper is to be told of
        self._events: socket.socket | None = None
        self._pid: int | None = None  # the keeper's
        self._closing = False

    @property
    def pid(self) -> int | None:
        """The keeper's pid (None: not connected)."""
        return self._pid

    @staticmethod
    def usable(path: str) -> bool:
        return len(os.fsencode(path)) <= MAX_SOCKET_PATH

    def connect(self) -> None:
        """Connect to the keeper of this DATA_DIR, starting one if none listens (or it is
        of another version: that one is told to retire once its jobs end)."""
        lost: set[int] = set()
        with self._lock:
            if self._sock is not None:
                return
            sock, hello = self._dial_keeper()
            if self._pid is not None and hello.get("pid") != self._pid:
                with self._children_lock:  # the keeper we had is gone: so is its reporting
                    lost, self.children = self.children, set()
            events = self._dial()
            if events is None:
                sock.close()
                raise KeeperLost("the keeper went away at once")
            hello_events: Future = Future()
            threading.Thread(target=self._read_events, args=(events, hello_events),
                             name="zeph-keeper", daemon=True).start()
            try:
                events.sendall(keeper.frame({"op": "hello", "role": "events"}))
                hello_events.result(START_TIMEOUT)
            except Exception as exc:
                sock.close()
                events.close()
                raise KeeperLost(f"the keeper did not answer: {exc}") from None
            old, self._events, self._sock = self._events, events, sock
            if old is not None:
                old.close()
            self._batches = collections.deque()
            threading.Thread(target=self._read_answers, args=(sock, self._batches),
                             name="zeph-keeper-answers", daemon=True).start()
            self._pid = hello.get("pid")
            with self._children_lock:
                self.children |= set(hello.get("children", []))
            log.info("keeper pid %s: %d job(s) of an earlier run still under it",
                     self._pid, len(hello.get("children", [])))
        if lost:
            self._lose(lost)

    def _dial_keeper(self) -> tuple[socket.socket, dict]:
        """The requests connection to a keeper of our version, and its hello."""
        sock = self._dial()
        if sock is not None:
            hello = self._request(sock, {"op": "hello", "role": "requests"})
            if hello.get("version") == keeper.VERSION:
                return sock, hello
            log.info("keeper pid %s is of another version: it retires when its jobs end",
                     hello.get("pid"))
            sock.sendall(keeper.frame({"op": "retire"}))
            sock.close()
        self._start()
        sock = self._dial(wait=START_TIMEOUT)
        if sock is None:
            raise KeeperLost(f"the keeper did not listen on {self.path}")
        return sock, self._request(sock, {"op": "hello", "role": "requests"})

    def _dial(self, wait: float = 0.0) -> socket.socket | None:
        deadline = time.monotonic() + wait
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.connect(self.path)
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.005)

    @classmethod
    def _request(cls, sock: socket.socket, message: dict) -> dict:
        """Send ``message`` on the requests connection and read the answer."""
        cls._send(sock, message)
        return cls._answer(sock, keeper.Frames())

    @staticmethod
    def _send(sock: socket.socket, message: dict) -> None:
        sock.settimeout(REPLY_TIMEOUT)
        try:
            sock.sendall(keeper.frame(message))
        except OSError as exc:
            raise KeeperLost(f"the keeper is not there: {exc}") from None

    @staticmethod
    def _answer(sock: socket.socket, frames: keeper.Frames) -> dict:
        """The next answer on the requests connection (``frames`` keeps what came with
        the one before)."""
        try:
            while (answer := frames.take()) is None:
                data = sock.recv(1 << 16)
                if not data:
                    raise KeeperLost("the keeper closed the connection")
                frames.add(data)
            return answer
        except (OSError, ValueError) as exc:
            raise KeeperLost(f"the keeper did not answer: {exc}") from None

    def _start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a dead keeper's socket
        log_path = os.path.join(os.path.dirname(self.path), "keeper.log")
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        # Started from a shell that leaves at once: the keeper is never our child (init's,
        # or the nearest subreaper's), so it outlives us and we hold nothing of it.
        argv = ["/bin/sh", "-c", '"$@" & exit 0', "zephserver-keeper", sys.executable, "-I",
                "-S", keeper.__file__, self.path]
        try:
            shell = os.posix_spawn(argv[0], argv, {"PATH": os.defpath}, setsid=True,
                                   file_actions=[
                                       (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                                       (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                                       (os.POSIX_SPAWN_DUP2, log_fd, 2)])
        finally:
            os.close(log_fd)
        os.waitpid(shell, 0)

    def warm(self, procs: str, quiet: float = WARM_QUIET) -> bool:
        """Before a batch, while its records are prepared and committed: the keeper takes
        the kernel's cgroup migration lock once (in its own cgroup of the hierarchy of
        ``procs``). The first migration after a quiet spell waits for an RCU grace period
        (8-20 ms here); paid now, the batch's first spawns do not wait for it. Whether it
        was asked: not if a spawn or warm was in the last ``quiet`` seconds, while a batch
        is being spawned (the keeper migrates all along: a warm-up would only wait behind
        it, and the send with it once the socket is full: in a stream of short jobs, 44 %
        of the job manager's time), or if the keeper is not connected."""
        with self._lock:
            now = time.monotonic()
            if self._sock is None or self._batches or now - self._asked_at < quiet:
                return False
            self._asked_at = now
            try:
                self._send(self._sock, {"op": "warm", "procs": procs})
            except KeeperLost:
                return False
            return True

    def spawn(self, requests: list[dict], groups: list[str] | None = None) -> list[dict]:
        """Start each job (``launch.keeper.spawn``'s request), each moved once started into
        the cgroups whose ``cgroup.procs`` are ``groups`` (shared by all); each one's
        result."""
        return [r for chunk in self.spawn_in_chunks(requests, groups) for r in chunk]

    def spawn_in_chunks(self, requests: list[dict], groups: list[str] | None = None
                        ) -> Iterator[list[dict]]:
        """``spawn``'s results in the order asked, a chunk as soon as the keeper has it."""
        chunks: queue.SimpleQueue = queue.SimpleQueue()
        self.spawn_later(requests, groups, lambda *chunk: chunks.put(chunk))
        more = True
        while more:
            # (the answers' thread tells every batch how it ends, a keeper that does not
            # answer included: after REPLY_TIMEOUT)
            results, more, lost = chunks.get()
            if lost is not None:
                raise lost
            yield results

    def spawn_later(self, requests: list[dict], groups: list[str] | None,
                    on_chunk: OnChunk) -> None:
        """Ask for ``spawn``; its answers go to ``on_chunk``, from the answers' thread.
        Raises KeeperLost (on_chunk is then never called) if the request cannot be sent;
        otherwise ``on_chunk`` hears how it ends, whatever happens to the keeper."""
        with self._lock:
            if self._sock is None:
                raise KeeperLost("no keeper")
            self._asked_at = time.monotonic()
            if not self._batches:
                self._answered_at = self._asked_at
            self._batches.append(on_chunk)  # (before it is sent: the answer may come first)
            forgotten, self._forgotten = self._forgotten, []
            try:
                self._send(self._sock, {"op": "spawn", "jobs": requests,
                                        "groups": groups or [], "forget": forgotten})
            except KeeperLost:
                self._forgotten = forgotten + self._forgotten
                self._batches.pop()
                with contextlib.suppress(OSError):  # (its answers' thread closes it)
                    self._sock.shutdown(socket.SHUT_RDWR)
                self._sock = None  # (the next launch connects again)
                raise

    def forget(self, key: str) -> None:
        """Job ``key``'s end is in the database: the keeper may drop it from its ledger
        (``launch.keeper.Ledger``). Told with the next batch of spawns, or once
        FORGET_BATCH are waiting."""
        with self._lock:
            if len(self._forgotten) < MAX_FORGOTTEN:
                self._forgotten.append(key)
            if len(self._forgotten) >= FORGET_BATCH:
                self._tell_forgotten()

    def _tell_forgotten(self) -> None:
        """(Under the lock.) The jobs forgotten so far, told to the keeper if it listens."""
        if self._sock is None or not self._forgotten:
            return
        try:
            self._send(self._sock, {"op": "forget", "keys": self._forgotten})
        except KeeperLost:
            return  # (its answers' thread sees the connection end; the next one tells it)
        self._forgotten = []

    def _read_answers(self, sock: socket.socket,
                      batches: "collections.deque[OnChunk]") -> None:
        """The answers' thread of one requests connection: each answer to the batch it
        belongs to; the batches left unanswered when the connection ends are told so."""
        frames = keeper.Frames()
        lost = KeeperLost("the keeper closed the connection")
        try:
            while True:
                try:
                    data = sock.recv(1 << 16)
                except TimeoutError:  # (the socket's timeout: _send)
                    with self._lock:
                        late = bool(batches) and (time.monotonic() - self._answered_at
                                                  >= REPLY_TIMEOUT)
                    if late:
                        lost = KeeperLost(f"the keeper did not answer in {REPLY_TIMEOUT:g}s")
                        break
                    continue
                if not data:
                    break
                for answer in frames.feed(data):
                    more, results = bool(answer.get("more", False)), answer["results"]
                    with self._lock:
                        self._answered_at = time.monotonic()
                        on_chunk = batches[0] if more else batches.popleft()
                    self._started(results)
                    self._tell(on_chunk, results, more, None)
        except Exception as exc:  # (a broken answer too: the batches are told below)
            lost = KeeperLost(f"the keeper did not answer: {exc}")
        with self._lock:
            if sock is self._sock:  # (the next launch connects again)
                self._sock = None
            sock.close()
            unanswered = list(batches)
            batches.clear()
        for on_chunk in unanswered:
            self._tell(on_chunk, [], False, lost)

    @staticmethod
    def _tell(on_chunk: OnChunk, results: list[dict], more: bool,
              lost: KeeperLost | None) -> None:
        try:
            on_chunk(results, more, lost)
        except Exception:  # (the answers' thread must go on: other batches wait on it)
            log.exception("a batch's answer could not be taken")

    def _started(self, results: list[dict]) -> None:
        with self._children_lock:
            for pid in (r["pid"] for r in results if "pid" in r):
                if pid in self._ended_first:
                    self._ended_first.discard(pid)
                else:
                    self.children.add(pid)

    def _read_events(self, sock: socket.socket, hello: Future) -> None:
        frames = keeper.Frames()
        try:
            while True:
                data = sock.recv(1 << 16)
                if not data:
                    break
                for message in frames.feed(data):
                    if message.get("op") == "hello":
                        hello.set_result(message)
                    else:
                        self._dispatch(message)
        except (OSError, ValueError):
            pass
        if not hello.done():
            hello.set_exception(KeeperLost("the keeper closed the connection"))
        self._gone(sock)

    def _dispatch(self, message: dict) -> None:
        if message.get("op") == "exit":
            pid = message["pid"]
            with self._children_lock:
                if pid in self.children:
                    self.children.discard(pid)
                elif len(self._ended_first) < 4096:  # (its spawn's answer is being read)
                    self._ended_first.add(pid)
            self.on_exit(pid, message["code"])

    def _gone(self, sock: socket.socket) -> None:
        """The events connection ended: the keeper died, unless we closed it (replaced by
        a newer one, or the daemon stops)."""
        with self._lock:
            if self._closing or sock is not self._events:
                return
            for own in (self._sock, self._events):
                if own is not None:
                    with contextlib.suppress(OSError):
                        own.shutdown(socket.SHUT_RDWR)  # (wakes its reading thread)
                    own.close()
            self._sock = self._events = self._pid = None
        with self._children_lock:
            lost, self.children = self.children, set()
            self._ended_first.clear()
        self._lose(lost)

    def _lose(self, pids: set[int]) -> None:
        log.error("the keeper went away: %d job(s) run on without it", len(pids))
        self.on_lost(pids)

    def close(self) -> None:
        """The daemon stops: the keeper goes on while its jobs run."""
        with self._lock:
            self._closing = True
            self._tell_forgotten()
            for sock in (self._sock, self._events):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
            self._sock = self._events = None
