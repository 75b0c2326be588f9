"""One queue for the cluster: three real daemons on one real PostgreSQL. A job waits once
for every node and starts on one with room; licences are counted across the cluster; a
job is claimed in the database, so none starts twice, even when every node plans at the
same instant. Each job writes its id, node and start/end times to a shared file: what
the tests check comes from the jobs themselves."""

import asyncio
import collections

import pytest

from tests.support.cluster import node_settings, prepare_database, start_nodes, stop_nodes
from tests.support.daemon import child_env, short_tmpdir
from tests.support.poll import poll_until
from tests.support.postgres import Postgres
from tests.support.sessions import free_port_range
from tests.support.web import Ws, run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

# (an APPS template: $$ is a literal $ for the shell)
STAMP = ('echo "$$1 $$2 start $$(date +%s.%N)" >> "$$3"; sleep "$$4"; '
         'echo "$$1 $$2 end $$(date +%s.%N)" >> "$$3"')


def apps(stamps) -> dict:
    argv = ["/bin/sh", "-c", STAMP, "stamp", "$job_id", "$node", str(stamps), "$secs"]
    secs = {"secs": {"type": "float", "default": 0, "min": 0, "max": 60}}
    return {"core": {"argv": argv, "params": secs, "resources": {"cores": 1}, "grace": 1},
            "licensed": {"argv": argv, "params": secs, "grace": 1,
                         "resources": {"cores": 0, "licenses": {"dyna": 1}}},
            "free": {"argv": argv, "params": secs, "resources": {"cores": 0}, "grace": 1},
            # more memory than n1 and n2 have: only n3 (8 GiB) can run it
            "big": {"argv": argv, "params": secs, "resources": {"cores": 0, "memory": 6000},
                    "grace": 1},
            "huge": {"argv": argv, "params": secs, "grace": 1,
                     "resources": {"cores": 0, "memory": 9000}},
            # only where asked: a label of n3's, and a node by name
            "on_gpu": {"argv": argv, "params": secs, "resources": {"cores": 0},
                       "nodes": ["gpu"]},
            "on_n2": {"argv": argv, "params": secs, "resources": {"cores": 0},
                      "nodes": ["n2"]}}


@pytest.fixture(scope="module")
def cluster():
    work = short_tmpdir("zq")
    stamps = work / "stamps.txt"
    low, _ = free_port_range(3, 22000)
    nodes = [{"hostname": f"n{i}", "address": "127.0.0.1", "port": low + i - 1,
              **({"labels": ["gpu"]} if i == 3 else {})} for i in (1, 2, 3)]
    daemons: dict = {}
    with Postgres() as pg:
        url = pg.database("queue")
        env = child_env()
        paths = {n["hostname"]: node_settings(
            work, n["hostname"], nodes, url, APPS=apps(stamps), QUEUE_TICK=0.5,
            WS_MAX_IN_FLIGHT=200, WS_MAX_BATCH=200,
            JOB_ROOTS=[str(work)],
            RESOURCES={"cores": 2, "memory": 8192 if n["hostname"] == "n3" else 4096,
                       "licenses": {"dyna": 4}})
            for n in nodes}
        try:
            tokens = prepare_database(paths["n1"], env)
            start_nodes(paths, env, tokens, daemons)
            daemons["n1"].stamps = stamps
            daemons["n1"].pg = pg
            yield daemons
        finally:
            stop_nodes(daemons, work)


async def submit_batch(node, app: str, count: int, secs: float) -> list[int]:
    """``count`` jobs of ``app`` in one JSON-RPC batch through ``node``: their ids."""
    ws = await Ws.connect(node.url, token=node.tokens["alice"])
    try:
        await ws.send([{"jsonrpc": "2.0", "id": i, "method": "jobs.submit",
                        "params": {"app": app, "params": {"secs": secs}}}
                       for i in range(count)])
        while True:
            reply = await ws.recv(60)
            if isinstance(reply, list):
                break
        assert all("result" in r for r in reply), reply
        return [r["result"]["id"] for r in reply]
    finally:
        await ws.aclose()


async def wait_all_ended(node, ids: list[int], timeout: float = 60) -> list[dict]:
    ws = await Ws.connect(node.url, token=node.tokens["alice"])
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while True:
            jobs = [(await ws.call("jobs.get", {"id": i}))["result"] for i in ids]
            if all(j["state"] in ("SUCCEEDED", "FAILED", "CANCELLED", "LOST", "TIMED_OUT")
                   for j in jobs):
                return jobs
            assert asyncio.get_running_loop().time() < deadline, [
                (j["id"], j["state"], j["node"], j["state_reason"]) for j in jobs
                if j["state"] != "SUCCEEDED"][:5]
            await asyncio.sleep(0.1)
    finally:
        await ws.aclose()


def stamps_of(cluster, ids: list[int]) -> dict[int, dict]:
    """Each job's node and start/end, from what the jobs wrote; every start once."""
    found: dict[int, dict] = {}
    starts = collections.Counter()
    wanted = set(ids)
    for line in cluster["n1"].stamps.read_text().splitlines():
        job_id, node, what, when = line.split()
        if int(job_id) in wanted:
            entry = found.setdefault(int(job_id), {"node": node})
            entry[what] = float(when)
            starts[int(job_id)] += what == "start"
    assert set(found) == wanted, wanted - set(found)
    assert set(starts.values()) == {1}, [i for i, n in starts.items() if n != 1]
    return found


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_jobs_submitted_on_one_node_run_on_every_node(cluster):
    """30 one-core jobs submitted on n1, 2 cores per node: all three nodes run them at
    once, never more than their cores each."""
    ids = run(submit_batch(cluster["n1"], "core", 30, 1.0))
    jobs = run(wait_all_ended(cluster["n1"], ids))
    assert {j["state"] for j in jobs} == {"SUCCEEDED"}, jobs
    stamps = stamps_of(cluster, ids)
    by_node = collections.defaultdict(list)
    for s in stamps.values():
        by_node[s["node"]].append((s["start"], s["end"]))
    assert sorted(by_node) == ["n1", "n2", "n3"], dict(by_node)
    assert {j["node"] for j in jobs} == {"n1", "n2", "n3"}
    for node, spans in by_node.items():
        assert most_at_once(spans) <= 2, (node, spans)  # its 2 cores
    assert most_at_once([(s["start"], s["end"]) for s in stamps.values()]) >= 5


def test_licences_are_counted_across_the_cluster(cluster):
    """4 licences for the cluster, 12 jobs needing one each, submitted through every
    node: never 5 holders at once, whatever the nodes (from the jobs' own times)."""
    async def through_all():
        return [i for ids in await asyncio.gather(*[
            submit_batch(cluster[n], "licensed", 4, 0.6) for n in ("n1", "n2", "n3")])
            for i in ids]

    ids = run(through_all())
    jobs = run(wait_all_ended(cluster["n1"], ids))
    assert {j["state"] for j in jobs} == {"SUCCEEDED"}, jobs
    spans = [(s["start"], s["end"]) for s in stamps_of(cluster, ids).values()]
    assert most_at_once(spans) <= 4, sorted(spans)
    assert most_at_once(spans) >= 3  # they did run side by side


def test_no_job_starts_twice_when_every_node_plans_at_once(cluster):
    """100 jobs submitted concurrently through three nodes: each starts exactly once."""
    async def through_all():
        return [i for ids in await asyncio.gather(*[
            submit_batch(cluster[n], "free", count, 0)
            for n, count in (("n1", 34), ("n2", 33), ("n3", 33))]) for i in ids]

    ids = run(through_all())
    assert len(set(ids)) == 100
    jobs = run(wait_all_ended(cluster["n2"], ids))
    assert {j["state"] for j in jobs} == {"SUCCEEDED"}, [
        (j["id"], j["node"], j["state"], j["state_reason"]) for j in jobs
        if j["state"] != "SUCCEEDED"]
    stamps = stamps_of(cluster, ids)  # (every start once)
    assert {s["node"] for s in stamps.values()} <= {"n1", "n2", "n3"}


def test_an_app_runs_only_on_the_nodes_it_names(cluster):
    """``nodes``: a label (n3's "gpu") or a node's name; submitted on n1 all the same."""
    ids = run(submit_batch(cluster["n1"], "on_gpu", 3, 0))
    ids += run(submit_batch(cluster["n1"], "on_n2", 3, 0))
    jobs = run(wait_all_ended(cluster["n1"], ids))
    assert [j["state"] for j in jobs] == ["SUCCEEDED"] * 6, jobs
    assert [j["node"] for j in jobs] == ["n3"] * 3 + ["n2"] * 3, jobs


def test_a_job_too_big_for_the_node_asked_runs_on_one_big_enough(cluster):
    """Submitted on n1 (4 GiB), a 6,000 MiB job is accepted and runs on n3 (8 GiB);
    one that no node could ever hold is refused at once, saying so."""
    ids = run(submit_batch(cluster["n1"], "big", 2, 0))
    jobs = run(wait_all_ended(cluster["n1"], ids))
    assert [(j["state"], j["node"]) for j in jobs] == [("SUCCEEDED", "n3")] * 2, jobs

    async def refused():
        ws = await Ws.connect(cluster["n2"].url, token=cluster["n2"].tokens["alice"])
        try:
            return await ws.call("jobs.submit", {"app": "huge", "params": {"secs": 0}})
        finally:
            await ws.aclose()
    error = run(refused())["error"]
    assert error["code"] == -32602, error
    assert "needs 9000 memory" in error["message"], error
    assert "nor does any node of the cluster" in error["message"], error


def test_postgres_restarted_during_placement_loses_and_doubles_nothing(cluster):
    """60 short one-core jobs (six run at once in the cluster); PostgreSQL stopped in the
    middle of their placement, and started again: every job runs exactly once and ends
    SUCCEEDED (exits seen meanwhile are recorded once the database is back)."""
    pg = cluster["n1"].pg
    ids = run(submit_batch(cluster["n1"], "core", 60, 0.2))
    first = stamps_of_started(cluster, ids)
    poll_until(lambda: len(first()) >= 6, 20, what="the first jobs started")
    pg.stop()
    try:
        during = len(first())
    finally:
        pg.start_again()
    jobs = run(wait_all_ended(cluster["n3"], ids, timeout=90))
    assert {j["state"] for j in jobs} == {"SUCCEEDED"}, [
        (j["id"], j["state"], j["state_reason"]) for j in jobs if j["state"] != "SUCCEEDED"]
    stamps = stamps_of(cluster, ids)  # (every start once)
    assert during < len(ids), "the restart came after every job had started"
    assert {s["node"] for s in stamps.values()} == {"n1", "n2", "n3"}


def stamps_of_started(cluster, ids):
    """A function: the jobs of ``ids`` that have written their start stamp so far."""
    wanted = {str(i) for i in ids}

    def started():
        return {line.split()[0] for line in cluster["n1"].stamps.read_text().splitlines()
                if line.split()[0] in wanted and " start " in line}
    return started
