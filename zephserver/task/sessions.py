"""JSON-RPC tasks for interactive sessions: the launcher REST API for WebSocket clients.

``sessions.start`` takes the same object the REST POST does (``application`` plus the
app's declared params, optional ``queue``) and answers once the session is ready.
``jobs.subscribe`` with no id brings ``session.updated`` (and ``job.updated``) for all of
the caller's sessions.
"""

from concurrent.futures import Future
from typing import Any, ClassVar

from zephserver.errors import RpcCode
from zephserver.task.base import TaskError
from zephserver.task.jobs import _JobTask

SLACK = 30.0  # seconds beyond the app's ready timeout


class SessionsStartTask(_JobTask):
    """Start an interactive session of a session app; answered once it is ready.

    Result: the session: id, sessionURL, secret (when the app uses one), and the
    fields the app declares, as the launcher's REST POST answers.
    Errors: -32602 no application or a bad param; -32005 no such app; -32004 no free port
    (unless queue is true: it then waits); -32010 it failed to start or to become ready.
    """

    # The launcher's free-form body: ``application``, ``queue`` and the app's own params.
    PARAMS: ClassVar[dict[str, Any]] = {"application": str, "queue": (bool, None),
                                        "...": "the app's declared params"}

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
    """The caller's sessions (staff with ``all``: everyone's).

    Result: a list of sessions with their job, URL and state.
    """

    PARAMS: ClassVar[dict[str, Any]] = {"all": (bool, False)}

    def main(self) -> list[dict]:
        p = self.params()
        return self.jobs.sessions_list(self.user, p["all"])


class SessionsGetTask(_JobTask):
    """One session, also after it ended.

    Result: the session.
    Errors: -32005 no such session (another user's is answered the same).
    """

    PARAMS: ClassVar[dict[str, Any]] = {"id": (int, str)}

    def main(self) -> dict:
        p: dict[str, Any] = self.params()
        return self.jobs.session_get(self.user, p["id"], deleted_ok=True)


class SessionsStopTask(_JobTask):
    """Stop a session (its process group gets SIGTERM, then SIGKILL after the grace).

    Result: the session.
    Errors: -32005 no such session (another user's is answered the same).
    """

    PARAMS: ClassVar[dict[str, Any]] = {"id": (int, str)}

    def main(self) -> dict:
        p: dict[str, Any] = self.params()
        return self.jobs.session_stop(self.user, p["id"])
