"""Consoles of an agent process that runs on another node of the cluster.

The node that runs the process attaches a relay console to it: the frames it would
write to a WebSocket are told to the viewer's node instead, which writes them to its
client's WebSocket and acknowledges what was written. The relay counts what is not
acknowledged as unsent, so a slow viewer far away skips ahead with a marker exactly as
a slow viewer nearby does, and never slows the process.
"""

import base64
import contextlib
import dataclasses
import threading
import uuid
from typing import Any

from zephserver.launch.consoles import Console
from zephserver.task.base import UserInfo

FRAMES, ACK, DETACH = "agent.console", "agent.console.ack", "agent.console.detach"


class _Relay(Console):
    """A console whose frames go to another node's viewer (the runner's side)."""

    def __init__(self, cluster: Any, node: str, stream: str, max_pending: int,
                 max_rate: int) -> None:
        self.cluster, self.node, self.stream = cluster, node, stream
        super().__init__(self._tell, max_pending, max_rate)

    def _tell(self, frames: bytes) -> None:
        with contextlib.suppress(KeyError):
            self.cluster.tell(self.node, FRAMES, {"stream": self.stream, "frames":
                                                  base64.b64encode(frames).decode()})

    def close(self) -> None:  # the process is gone: the viewer's console closes
        with contextlib.suppress(KeyError):
            self.cluster.tell(self.node, FRAMES, {"stream": self.stream, "closed": True})


class ConsoleRelay:
    def __init__(self, agent: Any, cluster: Any) -> None:
        self.agent, self.cluster = agent, cluster
        self._lock = threading.Lock()
        self._viewers: dict[str, tuple[Console, str]] = {}  # stream -> (console, runner)
        self._relays: dict[str, tuple[_Relay, str]] = {}  # stream -> (relay, slug)
        self._events = [(FRAMES, self._frames), (ACK, self._acked), (DETACH, self._detached),
                        ("cluster.node_down", self._node_down)]
        for event, callback in self._events:
            cluster.subscribe(event, callback)
        cluster.calls.handle("agent.attach", self._serve_attach)

    def close(self) -> None:
        for event, callback in self._events:
            self.cluster.unsubscribe(event, callback)

    # -- the viewer's node ----------------------------------------------------------------

    def attach(self, node: str, user: UserInfo, slug: str, console: Console,
               timeout: float) -> None:
        """Attach ``console`` (a client here) to process ``slug`` running on ``node``."""
        stream = uuid.uuid4().hex

        def acknowledge(size: int) -> None:
            with contextlib.suppress(KeyError):
                self.cluster.tell(node, ACK, {"stream": stream, "bytes": size})

        console.on_written = acknowledge
        with self._lock:
            self._viewers[stream] = (console, node)
        try:
            self.cluster.calls.call(node, "agent.attach", {
                "stream": stream, "to": self.cluster.node, "slug": slug,
                "user": dataclasses.asdict(user)},
                timeout)
        except BaseException:
            with self._lock:
                self._viewers.pop(stream, None)
            raise

    def detach(self, console: Console) -> bool:
        """Forget a console of this node's client; True if it was a relayed one."""
        with self._lock:
            found = [(s, n) for s, (c, n) in self._viewers.items() if c is console]
            for stream, _ in found:
                del self._viewers[stream]
        for stream, node in found:
            with contextlib.suppress(KeyError):
                self.cluster.tell(node, DETACH, {"stream": stream})
        return bool(found)

    def _frames(self, m: dict) -> None:  # the cluster's dispatcher thread
        with self._lock:
            entry = self._viewers.get(m["stream"])
            if entry is not None and m.get("closed"):
                del self._viewers[m["stream"]]
        if entry is None:
            return
        if m.get("closed"):
            entry[0].close()  # type: ignore[attr-defined]
        else:
            entry[0].send(base64.b64decode(m["frames"]))

    # -- the runner's node ----------------------------------------------------------------

    def _serve_attach(self, params: dict) -> dict:  # a cluster worker thread
        relay = _Relay(self.cluster, params["to"], params["stream"],
                       self.agent.console_max_pending, self.agent.console_max_rate)
        with self._lock:
            self._relays[params["stream"]] = (relay, params["slug"])
        try:
            self.agent.attach(UserInfo(**params["user"]), params["slug"], relay)
        except BaseException:
            with self._lock:
                self._relays.pop(params["stream"], None)
            raise
        return {}

    def _acked(self, m: dict) -> None:
        with self._lock:
            entry = self._relays.get(m["stream"])
        if entry is not None:
            entry[0].written(m["bytes"])

    def _detached(self, m: dict) -> None:
        with self._lock:
            entry = self._relays.pop(m["stream"], None)
        if entry is not None:
            self.agent.detach(entry[1], entry[0])

    def _node_down(self, data: dict) -> None:
        """Viewers of a node gone: their relays go; consoles of its processes close."""
        node = data["node"]
        with self._lock:
            relays = [(s, e) for s, e in self._relays.items() if e[0].node == node]
            viewers = [(s, e) for s, e in self._viewers.items() if e[1] == node]
            for stream, _ in relays:
                del self._relays[stream]
            for stream, _ in viewers:
                del self._viewers[stream]
        for _, (relay, slug) in relays:
            self.agent.detach(slug, relay)
        for _, (console, _) in viewers:
            console.close()  # type: ignore[attr-defined]
