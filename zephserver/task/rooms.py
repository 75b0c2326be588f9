"""``room.join`` / ``room.leave`` / ``room.say``: thin tasks over the rooms service."""

from typing import Any, ClassVar

from zephserver.errors import RpcCode
from zephserver.infra.service_manager import get_service
from zephserver.task.base import Task, TaskError

MAX_ROOM_NAME = 100


class _RoomTask(Task):
    PARAMS: ClassVar[dict[str, Any]] = {"room": str}

    def room(self) -> tuple[str, dict]:
        values = self.params()
        room = values["room"]
        if not room or len(room) > MAX_ROOM_NAME:
            raise TaskError(f"room must be 1-{MAX_ROOM_NAME} characters", RpcCode.INVALID_PARAMS,
                            {"field": "room"})
        return room, values


class RoomJoinTask(_RoomTask):
    """Join a room: ``room.message`` and ``room.users`` notifications follow.

    Result: {room, users}: the members on every node.
    Errors: -32602 a room name that is empty or over 100 characters.
    """

    def main(self) -> dict:
        room, _ = self.room()
        users = get_service("rooms").join(self.request.cid, room)
        return {"room": room, "users": users}


class RoomLeaveTask(_RoomTask):
    """Leave a room.

    Result: {room}.
    Errors: -32006 not in that room.
    """

    def main(self) -> dict:
        room, _ = self.room()
        if not get_service("rooms").leave(self.request.cid, room):
            raise TaskError(f"not in room {room!r}", RpcCode.CONFLICT, {"room": room})
        return {"room": room}


class RoomSayTask(_RoomTask):
    """Send a message (any JSON value) to every member of a room, on every node.

    Result: {room, delivered}.
    Errors: -32006 not in that room.
    """

    PARAMS: ClassVar[dict[str, Any]] = {"room": str, "message": object}

    def main(self) -> dict:
        room, values = self.room()
        rooms = get_service("rooms")
        if not rooms.is_member(self.request.cid, room):
            raise TaskError(f"join room {room!r} first", RpcCode.CONFLICT, {"room": room})
        sent = rooms.send_to_room(room, "room.message", {
            "room": room, "user": self.request.user.username, "message": values["message"]})
        return {"room": room, "delivered": sent}
