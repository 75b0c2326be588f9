"""The 2015 Zephserver wire format (seeds/003, its ``zephclient.js``), on a path of its own.

The original browser client opens a WebSocket, sends ``{session_id, room}`` to say who
it is and which room it is in, then ``{task, data, room, session_id, date}`` frames, and
dispatches what comes back by its ``task`` key. Here each frame becomes a call of the
same TASKS_PATH task (``data`` as its params) through the router, with the same access
rules, pool and limits as JSON-RPC on ``/ws``; answers and server pushes go back in the
shape the client dispatches on:

    {"task": "<task>", "data": <result>, "room": "<room>"}
    {"task": "<task>", "error": {"code": -32602, "message": "...", "data": ...}}
    {"task": "room.message", "data": {...}}            (a push: its method as the task)

Authentication: the Django session the frame carries in ``session_id`` (the same checks
as the ``sessionid`` cookie, which is used when a frame carries none); the upgrade
request's Origin must be this site or in WS_ALLOWED_ORIGINS, as on ``/ws``. A join frame
is ``room.join`` (leaving the room joined before).
"""

import itertools
import json
import logging
import re
from typing import Any

from tornado.ioloop import IOLoop

from zephserver.errors import RpcCode, RpcError
from zephserver.http.ws import WsConnection, WsHandler
from zephserver.wire import compact

log = logging.getLogger(__name__)


def _error_frame(task: Any, code: RpcCode, message: str) -> dict:
    return {"task": task, "error": RpcError(code, message).to_json()}


class LegacyConnection(WsConnection):
    """A connection whose pushes (JSON-RPC notifications) go out as 2015 frames."""

    def send_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if isinstance(message, dict) and "method" in message:
            text = compact({"task": message["method"], "data": message.get("params")})
        super().send_text(text)

    def send_frame(self, frame: dict) -> None:
        super().send_text(compact(frame))


class LegacyWsHandler(WsHandler):
    """WebSocket: the 2015 Zephserver client's frames ({task, data, room, session_id}),
    each a call of the same JSON-RPC method (LEGACY_WS_PATH)."""

    connection_class = LegacyConnection

    def open(self) -> None:
        super().open()
        self.ids = itertools.count(1)
        self.session_key: str | None = None
        self.room: str | None = None

    async def on_message(self, message: str | bytes) -> None:  # type: ignore[override]
        # tornado reads the next frame only once this returns: frames keep their order,
        # so a join is done before the tasks sent after it.
        conn = self.conn
        assert isinstance(conn, LegacyConnection)
        try:
            frame = json.loads(message)
        except (ValueError, RecursionError) as exc:
            conn.send_frame(_error_frame(None, RpcCode.PARSE_ERROR, f"parse error: {exc}"))
            return
        if not isinstance(frame, dict):
            conn.send_frame(_error_frame(None, RpcCode.INVALID_REQUEST,
                                         "a frame must be an object"))
            return
        session_id = frame.get("session_id")
        fresh = isinstance(session_id, str) and session_id and session_id != self.session_key
        if fresh and not await self._authenticate(conn, session_id,
                                                  frame.get("task", "room.join")):
            return
        task = frame.get("task")
        if task is None:
            self._join(conn, frame.get("room"))
        elif not isinstance(task, str):
            conn.send_frame(_error_frame(None, RpcCode.INVALID_REQUEST,
                                         "task must be a string"))
        else:
            self._call(conn, task, frame.get("data"))

    async def _authenticate(self, conn: LegacyConnection, session_id: str, task: Any
                            ) -> bool:
        auth = self.service.ctx.get("auth")
        user, credential = await IOLoop.current().run_in_executor(
            self.service.auth_executor, auth.authenticate, {"sessionid": session_id},
            None)
        if not user.is_authenticated:
            conn.send_frame(_error_frame(task, RpcCode.NOT_AUTHENTICATED,
                                         "the session_id is not a valid login session"))
            return False
        conn.user, conn.credential, self.session_key = user, credential, session_id
        return True

    def _join(self, conn: LegacyConnection, room: Any) -> None:
        if not isinstance(room, str):
            conn.send_frame(_error_frame("room.join", RpcCode.INVALID_PARAMS,
                                         "a join frame needs a room (a string)"))
            return
        if room == self.room:
            return
        if self.room is not None:
            self._call(conn, "room.leave", {"room": self.room}, quiet=True)
        self.room = room
        self._call(conn, "room.join", {"room": room})

    def _call(self, conn: LegacyConnection, task: str, data: Any, quiet: bool = False
              ) -> None:
        room = self.room

        def answer(response: dict | str) -> None:  # any thread
            if quiet:
                return
            reply = json.loads(response) if isinstance(response, str) else response
            frame: dict[str, Any] = {"task": task}
            if "error" in reply:
                frame["error"] = reply["error"]
            else:
                frame["data"] = reply.get("result")
            if room is not None:
                frame["room"] = room
            conn.send_frame(frame)

        self.service.router.route(conn, task, data, next(self.ids), answer)


def routes(path: str) -> list[tuple[str, type]]:
    return [(re.escape(path), LegacyWsHandler)]
