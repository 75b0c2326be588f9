"""JSON-RPC tasks for batch jobs and the queue: thin checks over the job manager.

Every method needs a logged-in user; a user sees and acts on their own jobs, staff on
all (the job manager enforces it and answers -32002 otherwise).
"""

from concurrent.futures import Future
from typing import Any

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
    def main(self) -> list[dict]:
        self.params()
        return [app.describe() for app in self.jobs.apps.values()]


class JobsSubmitTask(_JobTask):
    def main(self) -> Future:
        p = self.params(app=str, params=(dict, None), resources=(dict, None),
                        priority=(int, None), name=(str, None))
        return self.jobs.submit(self.user, p["app"], p["params"], p["resources"],
                                p["priority"], p["name"])


class JobsListTask(_JobTask):
    def main(self) -> dict:
        p = self.params(state=((str, list), None), app=(str, None), owner=(str, None),
                        limit=(int, 50), offset=(int, 0))
        return self.jobs.list_jobs(self.user, p["state"], p["app"], p["owner"], p["limit"],
                              p["offset"])


class JobsGetTask(_JobTask):
    def main(self) -> dict:
        return self.jobs.get(self.user, self.params(id=int)["id"])


class JobsCancelTask(_JobTask):
    def main(self) -> dict:
        return self.jobs.cancel(self.user, self.params(id=int)["id"])


class JobsOutputTask(_JobTask):
    def main(self) -> dict:
        p = self.params(id=int, offset=(int, 0), limit=(int, 65536))
        return self.jobs.output(self.user, p["id"], p["offset"], p["limit"])


class JobsSubscribeTask(_JobTask):
    """``{id, offset}``: ``job.updated`` and ``job.output`` from ``offset`` (default 0) for
    one job; no id: ``job.updated`` for all the caller's jobs."""

    def main(self) -> dict:
        p = self.params(id=(int, None), offset=(int, None))
        return self.jobs.subscribe(self.user, self.request.cid, p["id"], p["offset"])


class JobsUnsubscribeTask(_JobTask):
    def main(self) -> dict:
        p = self.params(id=(int, None))
        return self.jobs.unsubscribe(self.user, self.request.cid, p["id"])


class JobsControlTask(_JobTask):
    def main(self) -> dict:
        p = self.params(id=int, control=str)
        return self.jobs.control(self.user, p["id"], p["control"])


class JobsUpdateTask(_JobTask):
    def main(self) -> dict:
        p = self.params(id=int, params=(dict, None), resources=(dict, None),
                        priority=(int, None))
        return self.jobs.update(self.user, p["id"], p["params"], p["resources"], p["priority"])


class QueueListTask(_JobTask):
    def main(self) -> list[dict]:
        self.params()
        return self.jobs.queue_list(self.user)


class QueueMoveTask(_JobTask):
    def main(self) -> dict:
        p = self.params(id=int, position=int)
        return self.jobs.move(self.user, p["id"], p["position"])


class QueueHoldTask(_JobTask):
    def main(self) -> dict:
        return self.jobs.hold(self.user, self.params(id=int)["id"], True)


class QueueReleaseTask(_JobTask):
    def main(self) -> dict:
        return self.jobs.hold(self.user, self.params(id=int)["id"], False)


class ResourcesStatusTask(_JobTask):
    def main(self) -> dict:
        self.params()
        return self.jobs.resources_status()
