"""Tasks used by the tests through TASKS_PATH."""

import os
import threading
import time
from concurrent.futures import Future

from zephserver.task.base import Task, TaskError, staff_required, user_passes_test


class EchoRequestTask(Task):
    """Returns what the router passed in: data, cid, user and task name."""

    def main(self):
        r = self.request
        return {"data": r["data"], "cid": r["cid"], "user": r["user"].username, "task": r["task"]}


class BoomTask(Task):
    def main(self):
        raise ValueError("secret internal detail")


class RefuseTask(Task):
    def main(self):
        raise TaskError("you asked for it", code=-32006, data={"why": "test"})


@staff_required
class StaffOnlyTask(Task):
    def main(self):
        return "staff ok"


@user_passes_test(lambda user: user.username.startswith("a"), "names starting with a only")
class ATask(Task):
    def main(self):
        return "a ok"


class SlowTask(Task):
    """Sleeps 0.3 s (keeps a task thread busy)."""

    def main(self):
        time.sleep(0.3)
        return "slow done"


class LongTask(Task):
    """Runs until interrupted; then writes $ZEPH_TEST_INTERRUPTED."""

    def __init__(self, request):
        super().__init__(request)
        self._stop = threading.Event()

    def main(self):
        self._stop.wait(60)
        path = os.environ.get("ZEPH_TEST_INTERRUPTED")
        if path and self._stop.is_set():
            with open(path, "w") as f:
                f.write("interrupted")
        return "ended"

    def interrupt(self):
        self._stop.set()


class LaterTask(Task):
    """Answers through a Future that a timer thread settles ``after`` seconds later: with
    ``value``, or per ``outcome`` a TaskError ("refuse"), a ValueError ("boom") or a value
    JSON cannot encode ("unjson"); with outcome "never" nothing settles it."""

    def main(self):
        p = self.request.data
        future = Future()

        def settle():
            outcome = p.get("outcome", "value")
            if outcome == "refuse":
                future.set_exception(TaskError("refused later", code=-32006))
            elif outcome == "boom":
                future.set_exception(ValueError("secret later detail"))
            elif outcome == "unjson":
                future.set_result({1, 2})
            else:
                future.set_result(p.get("value"))

        if p.get("outcome") != "never":
            threading.Timer(p.get("after", 0), settle).start()
        return future
