"""A service and tasks that let tests drive the cluster API of a real daemon over /ws:
``probe.say`` says, ``probe.heard`` lists what this node heard, ``probe.unsubscribe``
stops listening to one event. Added to SERVICE_LIST and TASKS_PATH by the tests."""

import hashlib
import threading
import time
from typing import Any

from zephserver.infra.service import Service
from zephserver.infra.service_manager import get_service
from zephserver.task.base import Task

EVENTS = ("probe.msg", "probe.other", "probe.big", "cluster.node_up", "cluster.node_down")


class ProbeService(Service):
    name = "probe"

    def main(self) -> None:
        assert self.ctx is not None
        self.cluster = self.ctx.cluster
        self.heard: list[dict] = []
        self.lock = threading.Lock()
        self.callbacks = {event: self._recorder(event) for event in EVENTS}
        for event, callback in self.callbacks.items():
            self.cluster.subscribe(event, callback)
        try:
            super().main()
        finally:
            for event, callback in self.callbacks.items():
                self.cluster.unsubscribe(event, callback)

    def _recorder(self, event: str) -> Any:
        def record(data: Any) -> None:
            if event == "probe.big":  # a digest, not 10 MB, goes back to the test
                data = {"len": len(data), "sha256": hashlib.sha256(data.encode()).hexdigest()}
            with self.lock:
                self.heard.append({"event": event, "data": data, "at": time.time()})
        return record


class ProbeSayTask(Task):
    def main(self) -> dict:
        p = self.params(event=str, data=object, repeat=(int, 1))
        cluster = get_service("probe").cluster
        data = p["data"]
        if p["event"] == "probe.big":
            data = "x" * data  # the size of the payload
        for _ in range(p["repeat"]):
            cluster.say(p["event"], data)
        return {"said": p["repeat"]}


class ProbeHeardTask(Task):
    def main(self) -> list:
        self.params()
        probe = get_service("probe")
        with probe.lock:
            return list(probe.heard)


class ProbeUnsubscribeTask(Task):
    def main(self) -> dict:
        event = self.params(event=str)["event"]
        probe = get_service("probe")
        probe.cluster.unsubscribe(event, probe.callbacks[event])
        return {"unsubscribed": event}
