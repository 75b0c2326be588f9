"""Framing of the control socket: 4-byte big-endian length, then one JSON-RPC 2.0 object.

Pure functions and a small blocking client; the server lives in control.py.
"""

import collections
import itertools
import json
import socket
import struct
from typing import Any

from zephserver.errors import RpcCode, RpcError
from zephserver.wire import compact

HEADER = struct.Struct(">I")
MAX_FRAME = 8 * 1024 * 1024


class FrameError(Exception):
    """The byte stream is not a sequence of valid frames (the connection must be closed)."""


def encode(message: Any) -> bytes:
    body = compact(message).encode()
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


class FrameDecoder:
    """Accumulates bytes and yields complete frame bodies."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames = []
        while len(self._buf) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buf)
            if length > self.max_frame:
                raise FrameError(f"frame of {length} bytes exceeds the {self.max_frame} limit")
            if len(self._buf) < HEADER.size + length:
                break
            frames.append(bytes(self._buf[HEADER.size:HEADER.size + length]))
            del self._buf[:HEADER.size + length]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buf)


def error_response(request_id: Any, code: int, message: str, data: Any = None) -> dict:
    error: dict = {"code": int(code), "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def result_response(request_id: Any, result: Any) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def parse_request(body: bytes) -> tuple[Any, str, Any]:
    """(id, method, params) of a frame body.

    Raises:
        RpcError: PARSE_ERROR or INVALID_REQUEST, with the id when it could be read.
    """
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RpcError(RpcCode.PARSE_ERROR, f"parse error: {exc}") from None
    if not isinstance(message, dict):
        raise RpcError(RpcCode.INVALID_REQUEST, "invalid request: expected a JSON object")
    request_id = message.get("id")
    method = message.get("method")
    params = message.get("params", {})
    if message.get("jsonrpc") != "2.0" or not isinstance(method, str):
        raise RpcError(RpcCode.INVALID_REQUEST, "invalid request: needs jsonrpc '2.0' and a "
                       "method string", {"id": request_id})
    if not isinstance(params, dict | list):
        raise RpcError(RpcCode.INVALID_REQUEST, "invalid request: params must be an object or "
                       "an array", {"id": request_id})
    return request_id, method, params


class ControlClient:
    """A blocking client of the control socket (used by the CLI and the tests)."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._sock: socket.socket | None = None
        self._decoder = FrameDecoder()
        self._frames: collections.deque[bytes] = collections.deque()

    def connect(self) -> "ControlClient":
        """Raises OSError (FileNotFoundError, ConnectionRefusedError, PermissionError...)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "ControlClient":
        return self.connect() if self._sock is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        assert self._sock is not None
        self._sock.sendall(data)

    def read_message(self) -> Any:
        """The next message from the daemon (frames beyond it are kept for later)."""
        assert self._sock is not None
        while not self._frames:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("the daemon closed the control connection")
            self._frames.extend(self._decoder.feed(chunk))
        return json.loads(self._frames.popleft())

    def call(self, method: str, params: dict | list | None = None) -> Any:
        """Send one request and return its result.

        Raises:
            RpcError: the daemon answered with an error.
            OSError: the socket could not be reached or broke.
        """
        if self._sock is None:
            self.connect()
        request_id = next(self._ids)
        self.send_raw(encode({"jsonrpc": "2.0", "id": request_id, "method": method,
                              "params": params if params is not None else {}}))
        reply = self.read_message()
        if "error" in reply:
            err = reply["error"]
            raise RpcError(err.get("code", RpcCode.INTERNAL_ERROR), err.get("message", ""),
                           err.get("data"))
        return reply.get("result")

