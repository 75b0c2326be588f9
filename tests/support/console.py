"""A WebSocket console client that costs next to nothing (benchmarks, slow-client tests):
a plain socket after the handshake, frames walked without building messages."""

import base64
import os
import select
import socket
import struct
import threading
import time
from urllib.parse import urlparse


def handshake(sock: socket.socket, url: str, token: str) -> bytes:
    """The WebSocket upgrade of ``url`` over a connected ``sock``; what followed it."""
    u = urlparse(url)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  f"Authorization: Bearer {token}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head[:100]
    return head.split(b"\r\n\r\n", 1)[1]


def send_text(sock: socket.socket, text: str) -> None:
    """One masked text frame, as a client sends it."""
    data, mask = text.encode(), os.urandom(4)
    n = len(data)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                            bytes([0x80 | 126]) + struct.pack("!H", n) if n < 65536 else
                            bytes([0x80 | 127]) + struct.pack("!Q", n))
    sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))


class RawConsole(threading.Thread):
    """A console client that costs next to nothing: a plain socket after the handshake.
    With ``count`` it walks the frame headers (lines received, bytes reported skipped);
    otherwise it only drains, so the figure measures the daemon, not this client."""

    def __init__(self, attach: str, token: str, count: bool, rcvbuf: int = 0,
                 paused: bool = False) -> None:
        super().__init__(daemon=True)
        u = urlparse(attach)
        self.sock = socket.socket()
        if rcvbuf:  # a small window: a client that does not read pushes back at once
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect((u.hostname, u.port))
        self.go = threading.Event()
        if not paused:
            self.go.set()
        self.pending = handshake(self.sock, attach, token)
        self.count = count
        self.lines = self.skipped = self.markers = 0
        self.first = self.last = 0.0
        self.start()

    def run(self) -> None:
        self.go.wait()
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        data = self.pending
        while True:
            if self.count:
                data = self._frames(data)
            try:
                n = self.sock.recv_into(view)
            except OSError:
                return
            if not n:
                return
            now = time.perf_counter()
            self.first = self.first or now
            self.last = now
            if self.count:
                data += bytes(view[:n])

    def _frames(self, data: bytes) -> bytes:
        i, end = 0, len(data)
        while i + 2 <= end:
            n, head = data[i + 1] & 0x7F, 2
            if n == 126:
                if i + 4 > end:
                    break
                n, head = struct.unpack_from("!H", data, i + 2)[0], 4
            elif n == 127:
                if i + 10 > end:
                    break
                n, head = struct.unpack_from("!Q", data, i + 2)[0], 10
            if i + head + n > end:
                break
            if data.startswith(b"[zephserver:", i + head):
                self.skipped += int(data[i + head:i + head + n].split()[1])
                self.markers += 1
            else:
                self.lines += 1
            i += head + n
        return data[i:]

    def has_data(self, timeout: float) -> bool:
        """Whether a frame has come (or comes within ``timeout``), without reading it."""
        return bool(self.pending) or bool(select.select([self.sock], [], [], timeout)[0])

    def close(self) -> None:
        self.sock.close()
        self.join(5)
