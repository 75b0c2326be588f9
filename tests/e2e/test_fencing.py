"""A node stalled while it plans: two real daemons on one real PostgreSQL. n2 claims a
waiting session and then sits in its planning transaction (its app module takes 4 s
there, as a paused or hung node would). PostgreSQL ends that transaction after the idle
limit the daemon's connections carry (NODE_LOST_AFTER / 3), so the cluster's plan lock
and the job's row are free again: n1 starts the session. When n2 wakes, its claim is
found taken and nothing is started there: the session runs once."""


import pytest

from tests.support.cluster import (
    marker,
    node_settings,
    prepare_database,
    start_nodes,
    stop_nodes,
)
from tests.support.cluster import result_of as call
from tests.support.daemon import child_env, short_tmpdir
from tests.support.jobs import pids_of
from tests.support.poll import poll_until
from tests.support.postgres import Postgres
from tests.support.sessions import free_port_range

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

LOST_AFTER = 6.0  # idle limit in a transaction: 2 s; the module stalls n2 for 4 s


@pytest.fixture(scope="module")
def cluster():
    work = short_tmpdir("zf")
    low, _ = free_port_range(2, 27000)
    ports = free_port_range(4, 27100)
    nodes = [{"hostname": f"n{i}", "address": "127.0.0.1", "port": low + i - 1}
             for i in (1, 2)]
    mark = {"mark": {"type": "str", "regexp": r"[0-9.]+"}}
    apps = {"hold": {"argv": ["sleep", "$mark"], "grace": 1, "resources": {"cores": 1},
                     "params": mark},
            "viz": {"kind": "session", "module": "tests.support.slow_prepare",
                    "argv": ["/bin/sh", "-c", "echo ready; exec sleep $mark"],
                    "ready_line": "ready", "grace": 1, "timeout": 20, "params": mark,
                    "resources": {"cores": 1}, "port_range": list(ports)}}
    daemons: dict = {}
    with Postgres() as pg:
        url = pg.database("fencing")
        env = child_env()
        paths = {n["hostname"]: node_settings(
            work, n["hostname"], nodes, url, APPS=apps, NODE_LOST_AFTER=LOST_AFTER,
            JOB_ROOTS=[str(work)], RESOURCES={"cores": 1, "memory": 1024, "licenses": {}})
            for n in nodes}
        try:
            tokens = prepare_database(paths["n1"], env)
            start_nodes(paths, env, tokens, daemons)
            daemons["n1"].work = work
            yield daemons
        finally:
            stop_nodes(daemons, work)


def running_on(node, mark):
    job = call(node, "jobs.submit", {"app": "hold", "params": {"mark": mark}})
    return poll_until(lambda: (j := call(node, "jobs.get", {"id": job["id"]}))["state"]
                      == "RUNNING" and j, 20, what="the blocker running")


def test_a_node_stalled_in_its_plan_loses_its_claim_and_starts_nothing(cluster):
    n1, n2 = cluster["n1"], cluster["n2"]
    work = n1.work
    blockers = [running_on(node, marker()) for node in (n1, n2)]  # both nodes full
    assert [b["node"] for b in blockers] == ["n1", "n2"]
    (work / "n2" / "slow").write_text("")  # n2's preparing stalls
    mark = marker()
    session = call(n1, "sessions.start", {"application": "viz", "queue": True,
                                          "mark": mark})
    assert session["state"] == "QUEUED", session
    session_id = int(session["id"])
    call(n1, "jobs.cancel", {"id": blockers[1]["id"]})  # room on n2: it claims, stalls
    stalled = work / "n2" / "jobs" / str(session_id) / "preparing"
    poll_until(stalled.exists, 20, what="n2 preparing the session (stalled)")
    call(n1, "jobs.cancel", {"id": blockers[0]["id"]})  # room on n1 too
    started = poll_until(lambda: (j := call(n1, "sessions.get", {"id": session_id}))[
        "state"] == "RUNNING" and j, 20, what="the session running on n1")
    assert started["job"]["pid"], started
    job = call(n1, "jobs.get", {"id": session_id})
    assert job["node"] == "n1", job
    # n2 wakes: its batch failed at commit; it writes the batch again (committed before
    # it says so), except its claim, found taken: the record stays n1's, and nothing
    # starts on n2
    poll_until(lambda: "the database takes writes again" in n2.output, 20,
               what="n2 writing its failed batch again")
    job = call(n2, "jobs.get", {"id": session_id})
    assert (job["node"], job["state"]) == ("n1", "RUNNING"), job
    assert f"job {session_id}: claimed here in a batch that failed" in n2.output
    assert len(pids_of(mark)) == 1
    call(n2, "jobs.cancel", {"id": session_id})
    poll_until(lambda: not pids_of(mark), 10, what="the session stopped")
