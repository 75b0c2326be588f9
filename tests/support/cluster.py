"""Clusters of real daemons for the tests: nodes on 127.0.0.1 sharing one real
PostgreSQL (started by the caller, see tests.support.postgres), migrated and given the
test users once."""

import uuid
from pathlib import Path
from typing import Any

from tests.support.daemon import DaemonProcess, write_settings
from tests.support.web import Ws, admin, create_users, run

SECRET = "a shared secret for the test cluster"


def node_settings(work: Path, name: str, nodes: list[dict], database_url: str,
                  secret: str = SECRET, **more: Any) -> Path:
    values = {"DATA_DIR": str(work / name), "NODE_NAME": name,
              "DJANGO_SETTINGS_MODULE": "tests.support.django_test_settings",
              "CLUSTER_SERVER_LIST": nodes, "CLUSTER_SECRET": secret,
              "CLUSTER_HEARTBEAT": 0.2, "CLUSTER_HEARTBEAT_TIMEOUT": 1.0,
              "CLUSTER_RETRY": 0.2, "DATABASE_URL": database_url,
              "AGENT_ALLOW": None, **more}
    return write_settings(work, f"{name}.py", **values)


def prepare_database(settings: Path, env: dict) -> dict[str, str]:
    """Migrate the shared database (once, from one node's settings) and create the test
    users; their tokens, valid on every node."""
    admin(settings, "migrate", "-v0", env=env)
    return create_users(settings, env)


def start_nodes(paths: dict[str, Path], env: dict, tokens: dict[str, str],
                started: dict[str, DaemonProcess]) -> None:
    """Start every node (into ``started`` as they come: a caller's teardown stops those
    that did start, should a later one fail)."""
    for name, path in paths.items():
        daemon = DaemonProcess(path, env)
        started[name] = daemon
        daemon.start()
        daemon.tokens = tokens
    wait_meshed(list(started.values()))


def wait_meshed(daemons: list[DaemonProcess], timeout: float = 20) -> None:
    """Until every node answers for every other (its status lists them all up): a node
    just started may not have heard from a peer yet, and rightly calls it unreachable."""
    import json

    from tests.support.poll import poll_until

    def all_up(daemon: DaemonProcess) -> bool:
        status = json.loads(daemon.cli("zephserver-status", "--json").stdout)
        return all(n["state"] == "up" for n in status.get("nodes", [])) and \
            len(status.get("nodes", [])) == len(daemons)
    for daemon in daemons:
        poll_until(lambda daemon=daemon: all_up(daemon), timeout, 0.1,
                   "every node up, seen from each")


def stop_nodes(daemons: dict[str, DaemonProcess], work: Path) -> None:
    """Stop every node started, kill what their jobs left, remove the folder."""
    import shutil

    from tests.support.jobs import kill_jobs_under

    for daemon in daemons.values():
        daemon.cli("zephserver-stop")
        daemon.close()
    kill_jobs_under(work)
    shutil.rmtree(work, ignore_errors=True)


def marker() -> str:
    """A number no other test's ``sleep`` has: its processes are told apart by it."""
    return f"{4000 + uuid.uuid4().int % 2000}.{uuid.uuid4().int % 10**6}"


def rpc(node: DaemonProcess, method: str, params: Any) -> dict:
    """One JSON-RPC call through ``node``, as alice: the whole answer."""
    async def go() -> dict:
        ws = await Ws.connect(node.url, token=node.tokens["alice"])
        try:
            return await ws.call(method, params)
        finally:
            await ws.aclose()
    return run(go())


def result_of(node: DaemonProcess, method: str, params: Any) -> Any:
    """The result of one JSON-RPC call through ``node`` (an error fails the test)."""
    answer = rpc(node, method, params)
    assert "result" in answer, answer
    return answer["result"]
