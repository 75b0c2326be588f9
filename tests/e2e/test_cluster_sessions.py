"""Sessions in a cluster: three real daemons on one real PostgreSQL. A session asked for
on any node starts on a node with a free port of its app's ranges (each range here
belongs to one node, by its host); a client's request is answered wherever the session
runs; a session that may not queue is refused only when no node can start it, with each
node's reason; every node's proxy map lists every session of the cluster."""

import concurrent.futures
from pathlib import Path

import pytest

from tests.support.cluster import node_settings, prepare_database, start_nodes, stop_nodes
from tests.support.daemon import child_env, short_tmpdir
from tests.support.poll import poll_until
from tests.support.postgres import Postgres
from tests.support.sessions import free_port_range, rest
from tests.support.web import Ws, run
from zephserver.launch.ports import bind_free

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

READY = ["/bin/sh", "-c", "echo ready on $$1; exec sleep 600", "viz", "$node"]


@pytest.fixture(scope="module")
def cluster():
    work = short_tmpdir("zs")
    low, _ = free_port_range(3, 23000)
    port_n1, port_n2 = free_port_range(2, 24000)
    nodes = [{"hostname": f"n{i}", "address": "127.0.0.1", "port": low + i - 1}
             for i in (1, 2, 3)]
    # one port on n1, one on n2, none on n3 (its hostname names no range)
    viz = {"kind": "session", "argv": READY, "ready_line": "ready", "timeout": 20,
           "grace": 1, "resources": {"cores": 0},
           "ports": [{"host": "n1", "port_range": [port_n1, port_n1]},
                     {"host": "n2", "port_range": [port_n2, port_n2]}]}
    daemons: dict = {}
    with Postgres() as pg:
        url = pg.database("sessions")
        env = child_env()
        paths = {n["hostname"]: node_settings(
            work, n["hostname"], nodes, url, APPS={"viz": viz},
            LAUNCHER_PROXY_FILE=str(work / f"{n['hostname']}.map"))
            for n in nodes}
        try:
            tokens = prepare_database(paths["n1"], env)
            start_nodes(paths, env, tokens, daemons)
            daemons["n1"].work = work
            daemons["n1"].ports = {"n1": port_n1, "n2": port_n2}
            yield daemons
        finally:
            stop_nodes(daemons, work)


def post(node, who="alice", timeout=30):
    return rest("POST", node.url + "/paraview", node.tokens[who], {"application": "viz"},
                timeout=timeout)


def delete(node, session_id, who="alice"):
    return rest("DELETE", f"{node.url}/paraview/{session_id}", node.tokens[who])


def proxy_lines(work: Path, node: str) -> set[str]:
    try:
        return set((work / f"{node}.map").read_text().splitlines())
    except FileNotFoundError:
        return set()


def live_sessions(node) -> list[dict]:
    """Alice's sessions not ended, as the cluster's database has them."""
    async def listed():
        ws = await Ws.connect(node.url, token=node.tokens["alice"])
        try:
            return (await ws.call("sessions.list", {}))["result"]
        finally:
            await ws.aclose()
    return [{**s, "id": int(s["id"])} for s in run(listed())]


def stop_all(cluster) -> None:
    n1, ports = cluster["n1"], cluster["n1"].ports
    for job in live_sessions(n1):
        assert delete(n1, job["id"])[0] == 200
    poll_until(lambda: not live_sessions(n1) and all(bind_free(p) for p in ports.values()),
               20, what="every session stopped and its port free")


def test_a_session_starts_on_a_node_with_a_free_port(cluster):
    n1, n3 = cluster["n1"], cluster["n3"]
    work, ports = n1.work, n1.ports
    try:
        status, first, _ = post(n1)
        assert status == 200, first
        assert (first["host"], first["port"]) == ("n1", ports["n1"])
        # n1's only port is taken: the next one asked of n1 starts on n2, and n1 answers
        status, second, _ = post(n1)
        assert status == 200, second
        assert (second["host"], second["port"], second["state"]) == \
            ("n2", ports["n2"], "RUNNING")
        assert second["job"]["host"] == "n2"
        status, seen, _ = rest("GET", f"{n3.url}/paraview/{second['id']}", n3.tokens["alice"])
        assert (status, seen["state"]) == (200, "RUNNING")
        # every node's proxy map lists every session of the cluster
        listed = {f"{first['id']} n1:{ports['n1']}", f"{second['id']} n2:{ports['n2']}"}
        for name in ("n1", "n2", "n3"):
            poll_until(lambda name=name: listed <= proxy_lines(work, name), 10,
                       what=f"{name}'s proxy map lists both sessions")
        # none free anywhere: refused, with every node's reason, and nothing left waiting
        status, refused, _ = post(n3)
        assert status == 503, refused
        text = refused["error"]
        assert f"n1: no free port in n1:{ports['n1']}" in text, text
        assert f"n2: no free port in n2:{ports['n2']}" in text, text
        assert "n3: no port range for node n3" in text, text
        assert len(live_sessions(n1)) == 2
        # stopped through another node: gone from every proxy map, its port free again
        assert delete(n3, second["id"])[0] == 200
        gone = f"{second['id']} n2:{ports['n2']}"
        for name in ("n1", "n2", "n3"):
            poll_until(lambda name=name: gone not in proxy_lines(work, name), 10,
                       what=f"{name}'s proxy map without the stopped session")
        poll_until(lambda: bind_free(ports["n2"]), 10, what="n2's port free")
        status, again, _ = post(n3)
        assert (status, again.get("host")) == (200, "n2"), again
    finally:
        stop_all(cluster)


def test_concurrent_posts_through_every_node_hand_each_port_once(cluster):
    """Twelve clients at once, four per node, for two ports in the cluster: two sessions
    start (one per port), the others are refused; none is left waiting."""
    nodes = [cluster[f"n{1 + i % 3}"] for i in range(12)]
    ports = cluster["n1"].ports
    try:
        with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
            answers = list(pool.map(post, nodes))
        started = [body for status, body, _ in answers if status == 200]
        refused = [body for status, body, _ in answers if status == 503]
        assert len(started) + len(refused) == len(nodes), answers
        assert sorted(b["port"] for b in started) == sorted(ports.values()), answers
        assert len(refused) == len(nodes) - 2
        assert sorted(j["id"] for j in live_sessions(cluster["n1"])) == \
            sorted(int(b["id"]) for b in started)
    finally:
        stop_all(cluster)
