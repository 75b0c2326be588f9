"""Health and identity tasks."""

from zephserver.task.base import Task, allow_anonymous


@allow_anonymous
class PingTask(Task):
    """Is the server there? The only method an unauthenticated connection may call.

    Result: "pong".
    """

    INLINE = True

    def main(self) -> str:
        return "pong"


class WhoAmITask(Task):
    """Who the connection is logged in as.

    Result: {id, username, is_staff}.
    """

    def main(self) -> dict:
        return self.request.user.to_json()
