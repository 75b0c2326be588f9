"""Health and identity tasks."""

from zephserver.task.base import Task, allow_anonymous


@allow_anonymous
class PingTask(Task):
    """``ping`` -> "pong" (the only method an unauthenticated connection may call)."""

    def main(self) -> str:
        return "pong"


class WhoAmITask(Task):
    """``whoami`` -> the caller's id, username and staff flag."""

    def main(self) -> dict:
        return self.request.user.to_json()
