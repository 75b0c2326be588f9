"""Cluster manager: say / subscribe / unsubscribe across CLUSTER_SERVER_LIST.

With fewer than two nodes there is no cluster and every call is a silent success, so
applications run unchanged on one node.
"""

import logging
import threading
from collections.abc import Callable
from typing import Any

from zephserver.config import Settings

log = logging.getLogger(__name__)

Callback = Callable[[Any], None]


class ClusterManager:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node = settings.NODE_NAME
        self.enabled = len(settings.CLUSTER_SERVER_LIST) >= 2
        self._subscribers: dict[str, list[Callback]] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        if self.enabled:
            log.warning("cluster messaging across %d nodes is not available in this build; "
                        "running as a single node", len(self.settings.CLUSTER_SERVER_LIST))

    def stop(self) -> None:
        pass

    def say(self, event: str, data: Any) -> None:
        """Deliver ``event`` with ``data`` to every other node. Any thread, non-blocking."""

    def subscribe(self, event: str, callback: Callback) -> None:
        with self._lock:
            self._subscribers.setdefault(event, []).append(callback)

    def unsubscribe(self, event: str, callback: Callback) -> None:
        with self._lock:
            callbacks = self._subscribers.get(event, [])
            if callback in callbacks:
                callbacks.remove(callback)

    def status(self) -> dict:
        return {"enabled": self.enabled, "node": self.node, "peers": []}
