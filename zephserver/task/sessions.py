"""JSON-RPC tasks for interactive sessions: the launcher REST API for WebSocket clients.

``sessions.start`` takes the same object the REST POST does (``application`` plus the
app's declared params, optional ``queue``) and answers once the session is ready.
``jobs.subscribe`` with no id brings ``session.updated`` (and ``job.updated``) for all of
the caller's sessions.
"""

from concurrent.futures import Future
from typing import Any

from zephserver.errors import RpcCode
from zephserver.task.base import TaskError
from zephserver.task.jobs import _JobTask

SLACK = 30.0  # seconds beyond the app's ready timeout


class SessionsStartTask(_JobTask):
    def main(self) -> Future:
        body = self.request.data
        if not isinstance(body, dict) or not isinstance(body.get("application"), str):
            raise TaskError("params must be an object with an 'application'",
                            RpcCode.INVALID_PARAMS, {"field": "application"})
        queue = body.get("queue")
        if queue is not None and not isinstance(queue, bool):
            raise TaskError("'queue' must be true or false", RpcCode.INVALID_PARAMS,
                            {"field": "queue"})
        future = self.jobs.start_session(self.user, body["application"], body, queue)
        defined = self.jobs.apps.get(body["application"])
        timeout = defined.session.timeout if defined and defined.session else 60.0
        # The answer comes when the session is ready: no task thread waits for it (eight
        # slow sessions would hold every thread, and everyone's requests behind them).
        future.reply_timeout = timeout + SLACK  # type: ignore[attr-defined]
        return future


class SessionsListTask(_JobTask):
    def main(self) -> list[dict]:
        p = self.params(all=(bool, False))
        return self.jobs.sessions_list(self.user, p["all"])


class SessionsGetTask(_JobTask):
    def main(self) -> dict:
        p: dict[str, Any] = self.params(id=(int, str))
        return self.jobs.session_get(self.user, p["id"], deleted_ok=True)


class SessionsStopTask(_JobTask):
    def main(self) -> dict:
        p: dict[str, Any] = self.params(id=(int, str))
        return self.jobs.session_stop(self.user, p["id"])
