"""``WsHandler.send_many``: a burst of messages written in one go reaches a real
WebSocket client (tornado's, which checks every frame) whole, in order, each as its own
message, at every length the frame header encodes differently."""

import asyncio

import pytest
import tornado.web
import tornado.websocket
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from zephserver.http.ws import WsConnection, WsHandler
from zephserver.task.base import ANONYMOUS

pytestmark = pytest.mark.timeout(30)

# lengths around each header form's limits (7-bit, 16-bit, 64-bit), and text that is
# longer in bytes than in characters
TEXTS = ["", "x" * 125, "x" * 126, "é" * 63, "é" * 64, "y" * 0xFFFF, "z" * 0x10000,
         '{"jsonrpc": "2.0", "method": "job.updated", "params": {"name": "n\u00e9e \u2603"}}']


class Burst(WsHandler):
    """The real handler, without the daemon around it: on open, it sends TEXTS at once."""

    def initialize(self, done: asyncio.Future) -> None:  # type: ignore[override]
        self.done = done

    async def prepare(self) -> None:  # (no daemon to log in with)
        pass

    def open(self) -> None:
        self.conn = WsConnection(self, "c1", ANONYMOUS, None)
        self.conn._pending = sum(map(len, TEXTS)) * 2  # as send_text counts them
        self.send_many(TEXTS)
        self.send_many(TEXTS[:1])  # (one alone: tornado's own path)
        self.send_many(TEXTS[1:])

    def on_close(self) -> None:
        if not self.done.done():
            self.done.set_result(self.conn)


def test_a_burst_arrives_as_separate_messages_in_order():
    async def run() -> None:
        done = asyncio.get_running_loop().create_future()
        sockets = bind_sockets(0, "127.0.0.1")
        server = HTTPServer(tornado.web.Application([(r"/ws", Burst, {"done": done})]))
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        try:
            client = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/ws")
            received = [await asyncio.wait_for(client.read_message(), 10)
                        for _ in range(2 * len(TEXTS))]
            assert received == TEXTS * 2
            client.close()
            conn = await asyncio.wait_for(done, 10)
            assert conn.pending_bytes() == 0  # every write counted as written
        finally:
            server.stop()

    asyncio.run(run())
