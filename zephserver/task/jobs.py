"""JSON-RPC tasks for batch jobs and the queue: thin checks over the job manager.

Every method needs a logged-in user; a user sees and acts on their own jobs, staff on
all (the job manager enforces it and answers -32002 otherwise).
"""

from concurrent.futures import Future
from typing import Any, ClassVar

from zephserver.infra.service_manager import get_service
from zephserver.task.base import Task


class _JobTask(Task):
    @property
    def jobs(self) -> Any:
        return get_service("jobs")

    @property
    def user(self) -> Any:
        return self.request.user


class AppsListTask(_JobTask):
    """The apps a user may launch.

    Result: a list of apps: name, description, params with their rules, resources,
    controls.
    """

    def main(self) -> list[dict]:
        self.params()
        return [app.describe() for app in self.jobs.apps.values() if app.allows(self.user)]


class JobsSubmitTask(_JobTask):
    """Submit a job of an app; it waits in the queue until its resources are free.

    Result: the job (QUEUED, or STARTING at once when there is room).
    Errors: -32602 a bad param or app param (named in data.field); -32002 a priority
    above 0 for a user who is not staff; -32004 the queue is full.
    """

    PARAMS: ClassVar[dict[str, Any]] = {"app": str, "params": (dict, None),
                                        "resources": (dict, None), "priority": (int, None),
                                        "name": (str, None)}
    IN_ORDER = True

    def main(self) -> Future:
        p = self.params()
        return self.jobs.submit(self.user, p["app"], p["params"], p["resources"],
                                p["priority"], p["name"])


class JobsListTask(_JobTask):
    """The caller's jobs (staff: anyone's, or one ``owner``'s), newest first.

    Result: {jobs, total}.
    Errors: -32602 a bad filter.
    """

    PARAMS: ClassVar[dict[str, Any]] = {"state": ((str, list), None), "app": (str, None),
                                        "owner": (str, None), "limit": (int, 50),
                                        "offset": (int, 0)}

    def main(self) -> dict:
        p = self.params()
        return self.jobs.list_jobs(self.user, p["state"], p["app"], p["owner"], p["limit"],
                                   p["offset"])


class JobsGetTask(_JobTask):
    """One job.

    Result: the job.
    Errors: -32602 a bad param (named in data.field); -32005 no such job (another
    user's is answered the same).
    """

    PARAMS: ClassVar[dict[str, Any]] = {"id": int}

    def main(self) -> dict:
        return self.jobs.get(self.user, self.params()["id"])


class JobsCancelTask(_JobTask):
    """Cancel a job: a waiting one at once, a running one by SIGTERM, then SIGKILL after
    its app's grace.

    Result: the job.
    Errors: -32602 a bad param (named in data.field); -32005 no such job (another
    user's is answered the same); -32006 the job has already ended; -32007 its node does not answer.
    """

    PARAMS: ClassVar[dict[str, Any]] = {"id": int}

    def main(self) -> dict:
        return self.jobs.cancel(self.user, self.params()["id"])


class JobsOutputTask(_JobTask):
    """A byte range of a job's output (its log).

    Result: {data, offset, next_offset, size, eof}; past the end, empty data.
    Errors: -32602 a bad param (named in data.field); -32005 no such job (another
    user's is answered the same).
    """

    PARAMS: ClassVar[dict[str, Any]] = {"id": int, "offset": (int, 0), "limit": (int, 65536)}

    def main(self) -> dict:
        p = self.params()
        return self.jobs.output(self.user, p["id"], p["offset"], p["limit"])


class JobsSubscribeTask(_JobTask):
    """``job.updated`` and ``job.output`` (from ``offset``, default 0) for one job; with
    no id, ``job.updated`` (and ``session.updated``) for all the caller's jobs.

    An update carries the job's state once the change is written: a job that passed
    through several states at once (a short job that started and ended together) is
    sent its last one only, so a client waiting for RUNNING also takes an end as
    "started".

    Result: {subscribed: id or "all"}.
    Errors: -32602 a bad param (named in data.field); -32005 no such job (another
    user's is answered the same).
    """

    PARAMS: ClassVar[dict[str, Any]] = {"id": (int, None), "offset": (int, None)}

    def main(self) -> dict:
        p = self.params()
        return self.jobs.subscribe(self.user, self.request.cid, p["id"], p["offset"])


class JobsUnsubscribeTask(_JobTask):
    """Stop the notifications of one job (or of all, with no id).

    Result: {unsubscribed: id or "all"}.
    """

    PARAMS: ClassVar[dict[str, Any]] = {"id": (int, None)}

    def main(self) -> dict:
        p = self.params()
        return self.jobs.unsubscribe(self.user, self.request.cid, p["id"])


class JobsControlTask(_JobTask):
    """Send a running job one of its app's controls (e.g. LS-DYNA's ``sw1``: a restart
    dump), written where the program looks for it.

    Result: {id, control, file}.
    Errors: -32602 a bad param (named in data.field); -32005 no such job (another
    user's is answered the same); -32602 the app has no such control; -32006 the job is not running.
    """

    PARAMS: ClassVar[dict[str, Any]] = {"id": int, "control": str}

    def main(self) -> dict:
        p = self.params()
        return self.jobs.control(self.user, p["id"], p["control"])


class JobsUpdateTask(_JobTask):
    """Change a waiting job's params, resources or priority.

    Result: the job.
    Errors: -32602 a bad param (named in data.field); -32005 no such job (another
    user's is answered the same); -32006 the job is no longer waiting.
    """

    PARAMS: ClassVar[dict[str, Any]] = {"id": int, "params": (dict, None),
                                        "resources": (dict, None), "priority": (int, None)}

    def main(self) -> dict:
        p = self.params()
        return self.jobs.update(self.user, p["id"], p["params"], p["resources"], p["priority"])


class QueueListTask(_JobTask):
    """The waiting jobs in the order they will start, each with why it waits.

    Result: a list of jobs with position and state_reason.
    """

    def main(self) -> list[dict]:
        self.params()
        return self.jobs.queue_list(self.user)


class QueueMoveTask(_JobTask):
    """Move a waiting job (staff: among the jobs of its priority; a user: among their own).

    Result: the job with its new position.
    Errors: -32602 a bad param (named in data.field); -32005 no such job (another
    user's is answered the same); -32006 the job is not waiting.
    """

    PARAMS: ClassVar[dict[str, Any]] = {"id": int, "position": int}

    def main(self) -> dict:
        p = self.params()
        return self.jobs.move(self.user, p["id"], p["position"])


class QueueHoldTask(_JobTask):
    """Hold a waiting job: it is never started until released.

    Result: the job (HELD).
    Errors: -32602 a bad param (named in data.field); -32005 no such job (another
    user's is answered the same); -32006 the job is not waiting.
    """

    PARAMS: ClassVar[dict[str, Any]] = {"id": int}

    def main(self) -> dict:
        return self.jobs.hold(self.user, self.params()["id"], True)


class QueueReleaseTask(_JobTask):
    """Release a held job into the queue.

    Result: the job (QUEUED).
    Errors: -32602 a bad param (named in data.field); -32005 no such job (another
    user's is answered the same); -32006 the job is not held.
    """

    PARAMS: ClassVar[dict[str, Any]] = {"id": int}

    def main(self) -> dict:
        return self.jobs.hold(self.user, self.params()["id"], False)


class ResourcesStatusTask(_JobTask):
    """What this node (in a cluster: every node) offers and what is in use.

    Result: {capacity, free, running, queued, held} (and nodes, total in a cluster).
    """

    def main(self) -> dict:
        self.params()
        return self.jobs.resources_status()
