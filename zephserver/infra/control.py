"""External control: a UNIX-socket server (mode 0600) speaking framed JSON-RPC 2.0.

One accept thread ("zeph-control") and one short-lived thread per connection, so a slow
verb on one connection never delays ``status`` on another. The server only parses and
dispatches; what a verb does is in control_commands.py.
"""

import contextlib
import errno
import itertools
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable
from typing import Any

from zephserver.errors import RpcCode, RpcError
from zephserver.infra.control_protocol import (
    FrameDecoder,
    FrameError,
    encode,
    error_response,
    parse_request,
    result_response,
)

log = logging.getLogger(__name__)
access_log = logging.getLogger("zephserver.control")
ANSWER_GRACE = 2.0  # seconds close() waits for requests being answered

Dispatch = Callable[[str, Any], Any]


class SocketInUse(OSError):
    """Another live process answers on the control socket path."""


def _socket_is_live(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise
    finally:
        probe.close()
    return True


def bind_unix_socket(path: str) -> socket.socket:
    """Bind and listen on ``path`` with mode 0600, replacing a stale socket file.

    Raises:
        SocketInUse: a live process listens there (its socket is never removed).
        OSError: the path exists and is not a socket, or cannot be bound.
    """
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        if _socket_is_live(path):
            raise SocketInUse(errno.EADDRINUSE, f"a live process answers on {path}")
        log.warning("removing stale control socket %s", path)
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # created 0600: no window where others could connect
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    sock.listen(64)
    return sock


class ControlServer:
    def __init__(self, path: str, dispatch: Dispatch) -> None:
        self.path = path
        self.dispatch = dispatch
        self._sock: socket.socket | None = None
        self._inode: int | None = None  # of the socket file we bound, to unlink only ours
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._conn_ids = itertools.count(1)
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        # Connections whose request is being answered: close() lets them finish (a
        # "stop" must get its reply even when the daemon stops faster than it is sent).
        self._answering: set[socket.socket] = set()
        self._answered = threading.Condition(self._lock)

    def bind(self) -> None:
        self._sock = bind_unix_socket(self.path)
        self._inode = os.stat(self.path).st_ino

    def start(self) -> None:
        self._thread = threading.Thread(target=self._accept_loop, name="zeph-control",
                                        daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                if self._closing.is_set():
                    return
                log.exception("control socket accept failed")
                continue
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name=f"zeph-control-{next(self._conn_ids)}").start()

    def _serve(self, conn: socket.socket) -> None:
        decoder = FrameDecoder()
        try:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                try:
                    frames = decoder.feed(data)
                except FrameError as exc:
                    # The stream cannot be resynchronised: say why, then close.
                    conn.sendall(encode(error_response(None, RpcCode.INVALID_REQUEST, str(exc))))
                    return
                for body in frames:
                    with self._lock:
                        self._answering.add(conn)
                    try:
                        conn.sendall(encode(self._handle(body)))
                    finally:
                        with self._lock:
                            self._answering.discard(conn)
                            self._answered.notify_all()
        except OSError:
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _handle(self, body: bytes) -> dict:
        request_id = None
        try:
            request_id, method, params = parse_request(body)
            access_log.debug("control: %s %s", method, params)
            return result_response(request_id, self.dispatch(method, params))
        except RpcError as exc:
            if isinstance(exc.data, dict) and "id" in exc.data:
                request_id = exc.data["id"]
            return error_response(request_id, exc.code, exc.message)
        except Exception:
            log.exception("control command failed")
            return error_response(request_id, RpcCode.INTERNAL_ERROR,
                                  "internal error (see the daemon log)")

    def close(self) -> None:
        """Stop accepting, drop open connections and remove our socket file."""
        self._closing.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        with self._lock:
            self._answered.wait_for(lambda: not self._answering, timeout=ANSWER_GRACE)
            for conn in list(self._conns):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(2.0)
        # Only unlink the file if it is still ours (a new daemon may have replaced it).
        with contextlib.suppress(OSError):
            if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
