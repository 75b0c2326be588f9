"""Helpers for session tests: a free port range, the launcher REST API over real HTTP."""

import json
import socket
import urllib.error
import urllib.request
from typing import Any

from zephserver.launch.ports import bind_free


def free_port_range(count: int, start: int = 21000, stop: int = 32768) -> tuple[int, int]:
    """``count`` consecutive ports nothing listens on now (for an app's port_range), below
    the kernel's ephemeral range (32768-60999): a port there may become a connection's
    own between this check and its use."""
    port = start
    while port + count < stop:
        if all(bind_free(p) for p in range(port, port + count)):
            return port, port + count - 1
        port += count
    raise RuntimeError("no free port range")


def rest(method: str, url: str, token: str | None = None, body: Any = None,
         headers: dict | None = None, timeout: float = 30) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of one request; errors are answers too."""
    data = None if body is None else (body if isinstance(body, bytes)
                                      else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json",
                                          **(headers or {})})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}"), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), dict(err.headers)


def listening(port: int) -> socket.socket:
    """A socket of 'another program' bound and listening on ``port``."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do (TIME_WAIT)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s
