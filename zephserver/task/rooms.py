"""``room.join`` / ``room.leave`` / ``room.say``: thin tasks over the rooms service."""

from typing import Any

from zephserver.errors import RpcCode
from zephserver.infra.service_manager import get_service
from zephserver.task.base import Task, TaskError

MAX_ROOM_NAME = 100


class _RoomTask(Task):
    def room(self, **extra: Any) -> tuple[str, dict]:
        values = self.params(room=str, **extra)
        room = values["room"]
        if not room or len(room) > MAX_ROOM_NAME:
            raise TaskError(f"room must be 1-{MAX_ROOM_NAME} characters", RpcCode.INVALID_PARAMS,
                            {"field": "room"})
        return room, values


class RoomJoinTask(_RoomTask):
    def main(self) -> dict:
        room, _ = self.room()
        users = get_service("rooms").join(self.request.cid, room)
        return {"room": room, "users": users}


class RoomLeaveTask(_RoomTask):
    def main(self) -> dict:
        room, _ = self.room()
        if not get_service("rooms").leave(self.request.cid, room):
            raise TaskError(f"not in room {room!r}", RpcCode.CONFLICT, {"room": room})
        return {"room": room}


class RoomSayTask(_RoomTask):
    def main(self) -> dict:
        room, values = self.room(message=object)
        rooms = get_service("rooms")
        if not rooms.is_member(self.request.cid, room):
            raise TaskError(f"join room {room!r} first", RpcCode.CONFLICT, {"room": room})
        sent = rooms.send_to_room(room, "room.message", {
            "room": room, "user": self.request.user.username, "message": values["message"]})
        return {"room": room, "delivered": sent}
