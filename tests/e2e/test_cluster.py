"""Three real daemons on 127.0.0.1 form a cluster over ZeroMQ (CURVE), sharing one real
PostgreSQL: say / subscribe, rooms across nodes, a node killed and restarted, a big
payload, a stranger refused, garbage on the cluster port."""

import asyncio
import json
import shutil
import signal
import socket

import pytest

from tests.support.cluster import node_settings, prepare_database, start_nodes
from tests.support.daemon import DaemonProcess, child_env, short_tmpdir
from tests.support.poll import poll_until
from tests.support.postgres import Postgres
from tests.support.sessions import free_port_range
from tests.support.web import Ws, run
from zephserver import defaults

pytestmark = pytest.mark.e2e

TASKS = {**defaults.TASKS_PATH, "probe.say": "tests.support.cluster_probe/ProbeSayTask",
         "probe.heard": "tests.support.cluster_probe/ProbeHeardTask",
         "probe.unsubscribe": "tests.support.cluster_probe/ProbeUnsubscribeTask"}
SERVICES = [*defaults.SERVICE_LIST, "tests.support.cluster_probe/ProbeService"]


def probe_settings(work, name, nodes, database_url, **more):
    return node_settings(work, name, nodes, database_url, SERVICE_LIST=SERVICES,
                         TASKS_PATH=TASKS, **more)


@pytest.fixture(scope="module")
def cluster():
    work = short_tmpdir("zc")
    low, _ = free_port_range(4, 31000)
    nodes = [{"hostname": f"n{i}", "address": "127.0.0.1", "port": low + i}
             for i in range(1, 4)]
    env = child_env()
    daemons: dict = {}
    pg = Postgres()
    try:  # a setup that fails half way still stops what it started
        pg.start()
        url = pg.database("zeph")
        paths = {n["hostname"]: probe_settings(work, n["hostname"], nodes, url)
                 for n in nodes}
        state = {"work": work, "nodes": nodes, "paths": paths, "daemons": daemons,
                 "env": env, "spare_port": low + 4, "pg": pg}
        tokens = prepare_database(paths["n1"], env)
        start_nodes(paths, env, tokens, daemons)
        for name in daemons:  # everyone sees everyone before the tests start
            poll_until(lambda name=name: sum(1 for h in heard(state, name)
                                             if h["event"] == "cluster.node_up") >= 2, 15,
                       0.05, f"{name} sees both peers")
        yield state
    finally:
        for d in daemons.values():
            d.cli("zephserver-stop")
            d.close()
            print(d.output[-3000:])
        pg.close()
        shutil.rmtree(work, ignore_errors=True)


def rpc(state, name, method, params=None):
    d = state["daemons"][name]

    async def call():
        ws = await Ws.connect(d.url, token=d.tokens["alice"])
        try:
            answer = await ws.call(method, params or {})
        finally:
            await ws.aclose()
        assert "error" not in answer, answer
        return answer["result"]
    return run(call())


def heard(state, name, event=None):
    return [h for h in rpc(state, name, "probe.heard")
            if event is None or h["event"] == event]


def test_say_reaches_every_other_node_once(cluster):
    rpc(cluster, "n1", "probe.say", {"event": "probe.msg", "data": {"hello": "once"}})
    for name in ("n2", "n3"):
        poll_until(lambda name=name: heard(cluster, name, "probe.msg"), 10, 0.05, name)
    rpc(cluster, "n1", "probe.say", {"event": "probe.other", "data": "fence"})
    for name in ("n2", "n3"):  # per-sender order: the fence comes after the message
        poll_until(lambda name=name: heard(cluster, name, "probe.other"), 10, 0.05, name)
        assert [h["data"] for h in heard(cluster, name, "probe.msg")] == [{"hello": "once"}]
    assert heard(cluster, "n1", "probe.msg") == []  # never to the sender


def test_unsubscribe_stops_delivery(cluster):
    rpc(cluster, "n3", "probe.unsubscribe", {"event": "probe.msg"})
    before = len(heard(cluster, "n3", "probe.msg"))
    rpc(cluster, "n1", "probe.say", {"event": "probe.msg", "data": "after"})
    rpc(cluster, "n1", "probe.say", {"event": "probe.other", "data": "fence 2"})
    for name in ("n2", "n3"):  # each node's fence: what n1 said before it has arrived
        poll_until(lambda name=name: len(heard(cluster, name, "probe.other")) >= 2, 10, 0.05,
                   f"fence on {name}")
    assert len(heard(cluster, "n3", "probe.msg")) == before
    assert heard(cluster, "n2", "probe.msg")[-1]["data"] == "after"


def test_a_room_message_reaches_a_client_on_another_node(cluster):
    a, c = cluster["daemons"]["n1"], cluster["daemons"]["n3"]

    async def scenario():
        ws_a = await Ws.connect(a.url, token=a.tokens["alice"])
        ws_c = await Ws.connect(c.url, token=c.tokens["bob"])
        await ws_a.call("room.join", {"room": "lobby"})
        await ws_c.call("room.join", {"room": "lobby"})
        said = await ws_a.call("room.say", {"room": "lobby", "message": "hello from n1"})
        assert "error" not in said, said
        message = await ws_c.until("room.message")
        await ws_a.aclose()
        await ws_c.aclose()
        return message

    message = run(scenario())
    assert message["message"] == "hello from n1"
    assert message["user"] == "alice"


def test_room_membership_is_the_whole_cluster(cluster):
    """Who is in a room, as every node sees it: the join reply and room.users list the
    members of every node; room.joined / room.left come from wherever they happen."""
    a, b = cluster["daemons"]["n1"], cluster["daemons"]["n2"]

    async def scenario():
        ws_a = await Ws.connect(a.url, token=a.tokens["alice"])
        ws_b = await Ws.connect(b.url, token=b.tokens["bob"])
        try:
            first = (await ws_a.call("room.join", {"room": "hall"}))["result"]
            # bob's node learns of alice's membership over the bus: wait for it there
            deadline = asyncio.get_running_loop().time() + 10
            while True:
                second = (await ws_b.call("room.join", {"room": "hall"}))["result"]
                if second["users"] == ["alice", "bob"] or \
                        asyncio.get_running_loop().time() > deadline:
                    break
                await ws_b.call("room.leave", {"room": "hall"})
            joined = await ws_a.until("room.joined")
            users = await ws_a.until("room.users")
            while users["users"] != ["alice", "bob"]:
                users = await ws_a.until("room.users")
            await ws_b.call("room.leave", {"room": "hall"})
            left = await ws_a.until("room.left")
            after = await ws_a.until("room.users")
            while after["users"] != ["alice"]:
                after = await ws_a.until("room.users")
            return first, second, joined, left, after
        finally:
            await ws_a.aclose()
            await ws_b.aclose()

    first, second, joined, left, after = run(scenario())
    assert first["users"] == ["alice"]
    assert second["users"] == ["alice", "bob"]
    assert (joined["user"], left["user"]) == ("bob", "bob")
    assert after["users"] == ["alice"]


def test_a_ten_megabyte_payload_arrives_intact(cluster):
    import hashlib

    size = 10 * 1024 * 1024
    rpc(cluster, "n2", "probe.say", {"event": "probe.big", "data": size})
    got = poll_until(lambda: heard(cluster, "n3", "probe.big"), 20, 0.1, "big payload")
    assert got[0]["data"] == {"len": size,
                              "sha256": hashlib.sha256(b"x" * size).hexdigest()}


def test_garbage_on_the_cluster_port_does_not_hurt(cluster):
    port = cluster["nodes"][0]["port"]
    for junk in (b"\xff" * 64, b"GET / HTTP/1.1\r\n\r\n", bytes(range(256)) * 100):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(junk)
    rpc(cluster, "n1", "probe.say", {"event": "probe.other", "data": "still fine"})
    poll_until(lambda: any(h["data"] == "still fine" for h in heard(cluster, "n2",
                                                                     "probe.other")), 10, 0.05)


def assert_stranger_refused(cluster, name, database_url, **settings):
    """A node ``name`` on ``database_url`` cannot speak to the cluster: n1 logs the
    refusal and never hears it, while the cluster's own messages keep flowing."""
    stranger_nodes = [cluster["nodes"][0], {"hostname": name, "address": "127.0.0.1",
                                            "port": cluster["spare_port"]}]
    path = probe_settings(cluster["work"], name, stranger_nodes, database_url, **settings)
    tokens = prepare_database(path, cluster["env"])
    stranger = DaemonProcess(path, cluster["env"])
    n1 = cluster["daemons"]["n1"]
    refusals = n1.output.count("refused")
    try:
        stranger.start()
        stranger.tokens = tokens
        rpc({"daemons": {name: stranger}}, name, "probe.say",
            {"event": "probe.other", "data": f"from {name}"})
        poll_until(lambda: n1.output.count("refused") > refusals, 10, 0.05,
                   "n1 logs the refusal")
        rpc(cluster, "n2", "probe.say", {"event": "probe.other", "data": f"fence {name}"})
        poll_until(lambda: any(h["data"] == f"fence {name}"
                               for h in heard(cluster, "n1", "probe.other")), 10)
        assert not any(h["data"] == f"from {name}"
                       for h in heard(cluster, "n1", "probe.other"))
    finally:
        stranger.cli("zephserver-stop")
        stranger.close()


def test_a_peer_with_a_wrong_key_is_refused(cluster):
    assert_stranger_refused(cluster, "n9", cluster["pg"].database("stranger"),
                            secret="not the cluster's secret!!")


def test_a_node_of_another_database_is_refused_even_with_the_secret(cluster):
    """The cluster keys come from CLUSTER_SECRET and the database's id: a node started on
    another database (another cluster) cannot join, whatever secret it knows."""
    assert_stranger_refused(cluster, "n8", cluster["pg"].database("elsewhere"))


def test_kill9_node_down_then_up_and_buffered_messages_arrive_in_order(cluster):
    daemons = cluster["daemons"]
    daemons["n2"].kill(signal.SIGKILL)
    daemons["n2"].wait_exit()
    for name in ("n1", "n3"):
        poll_until(lambda name=name: any(h["data"] == {"node": "n2"}
                                         for h in heard(cluster, name, "cluster.node_down")),
                   5, 0.05, f"{name} sees n2 down")
    for i in range(5):
        rpc(cluster, "n1", "probe.say", {"event": "probe.msg", "data": f"while down {i}"})
    daemons["n2"].close()
    restarted = DaemonProcess(cluster["paths"]["n2"], cluster["env"]).start()
    restarted.tokens = daemons["n2"].tokens
    daemons["n2"] = restarted
    for name in ("n1", "n3"):
        poll_until(lambda name=name: sum(1 for h in heard(cluster, name, "cluster.node_up")
                                         if h["data"] == {"node": "n2"}) >= 2, 10, 0.05,
                   f"{name} sees n2 up again")
    expected = [f"while down {i}" for i in range(5)]
    got = poll_until(lambda: [h["data"] for h in heard(cluster, "n2", "probe.msg")] == expected
                     and expected, 10, 0.05, "the buffered messages, once, in order")
    assert got == expected
    # n1's messages prove n2 heard n1; n3 may not have been heard from yet: wait for it
    poll_until(lambda: all(f"peer {n}: up" in restarted.cli("zephserver-status").stdout
                           for n in ("n1", "n3")), 10, 0.1, "n2 sees n1 and n3 up")


def test_status_shows_the_peers(cluster):
    out = cluster["daemons"]["n1"].cli("zephserver-status").stdout
    assert "peer n2:" in out
    assert "last seen" in out


def test_the_cluster_loop_is_a_supervised_service(cluster):
    """Shown in the status with the other services; restarted (as after a crash), it
    comes back, and what is said then is delivered once, in order."""
    n1 = cluster["daemons"]["n1"]
    status = json.loads(n1.cli("zephserver-status", "--json").stdout)
    assert {s["name"]: s["state"] for s in status["services"]}["cluster"] == "RUNNING"
    before = len(heard(cluster, "n2", "probe.other"))
    result = n1.cli("zephserver-command", "restart-service", "cluster")
    assert result.returncode == 0, result.stderr
    for i in range(3):
        rpc(cluster, "n1", "probe.say", {"event": "probe.other", "data": f"after {i}"})
    expected = [f"after {i}" for i in range(3)]
    got = poll_until(lambda: [h["data"] for h in heard(cluster, "n2", "probe.other")]
                     [before:] == expected, 10, 0.05, "the messages after the restart")
    assert got
    status = json.loads(n1.cli("zephserver-status", "--json").stdout)
    assert {s["name"]: s["state"] for s in status["services"]}["cluster"] == "RUNNING"
