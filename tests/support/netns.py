"""Real network partitions for the tests (shared/recipes.md): each node in a network
namespace of its own, all joined by a bridge in one more namespace; the test's own
namespace is on the bridge too (it reaches every node, and PostgreSQL listens there).
Taking a node's link down is a real partition: its connections fail or stall, as on a
cut cable. Everything is made with names unique to the run and deleted at close, even
when a test fails half way.

    with Network(["n1", "n2", "n3"]) as net:
        net.address("n2")     # 10.231.x.2
        net.prefix("n2")      # ["nsenter", "--net=/var/run/netns/...", "--"]
        net.cut("n2"); net.mend("n2")
"""

import os
import random
import subprocess

from tests.support.server import ScratchServer


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


class Network(ScratchServer):
    def __init__(self, nodes: list[str]) -> None:
        self.nodes = nodes
        tag = f"{os.getpid() % 10000:04d}{random.randrange(100):02d}"
        self.tag = tag
        self.subnet = f"10.231.{random.randrange(1, 250)}"
        self.bridge_ns = f"zb{tag}"
        self.host_link = f"zh{tag}"  # our end of the link to the bridge
        self.made: list[str] = []

    def ns(self, node: str) -> str:
        return f"z{self.nodes.index(node) + 1}{self.tag}"

    def link(self, node: str) -> str:
        return f"zv{self.nodes.index(node) + 1}{self.tag}"

    def address(self, node: str) -> str:
        return f"{self.subnet}.{self.nodes.index(node) + 1}"

    @property
    def host_address(self) -> str:
        """Ours (the test's namespace), on the bridge: where PostgreSQL listens."""
        return f"{self.subnet}.253"

    def prefix(self, node: str) -> list[str]:
        """What runs a command in ``node``'s namespace (its network only)."""
        return ["nsenter", f"--net=/var/run/netns/{self.ns(node)}", "--"]

    def start(self) -> "Network":
        b = self.bridge_ns
        ip("netns", "add", b)
        self.made.append(b)
        ip("-n", b, "link", "add", "br0", "type", "bridge")
        ip("-n", b, "link", "set", "br0", "up")
        ip("-n", b, "link", "set", "lo", "up")
        # our namespace's link to the bridge
        ip("link", "add", self.host_link, "type", "veth", "peer", "name", "hp", "netns", b)
        ip("-n", b, "link", "set", "hp", "master", "br0")
        ip("-n", b, "link", "set", "hp", "up")
        ip("addr", "add", f"{self.host_address}/24", "dev", self.host_link)
        ip("link", "set", self.host_link, "up")
        for i, node in enumerate(self.nodes, start=1):
            ns, link = self.ns(node), self.link(node)
            ip("netns", "add", ns)
            self.made.append(ns)
            ip("link", "add", link, "netns", ns, "type", "veth", "peer", "name", f"p{i}",
               "netns", b)
            ip("-n", b, "link", "set", f"p{i}", "master", "br0")
            ip("-n", b, "link", "set", f"p{i}", "up")
            ip("-n", ns, "addr", "add", f"{self.address(node)}/24", "dev", link)
            ip("-n", ns, "link", "set", link, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        return self

    def cut(self, node: str) -> None:
        """``node``'s link down: it reaches nobody, nobody reaches it."""
        ip("-n", self.ns(node), "link", "set", self.link(node), "down")

    def mend(self, node: str) -> None:
        ip("-n", self.ns(node), "link", "set", self.link(node), "up")

    def close(self) -> None:
        for ns in reversed(self.made):  # (deleting a namespace deletes its links' pairs)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self.made = []
