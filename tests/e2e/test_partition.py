"""A real network partition: three daemons, each in a network namespace of its own,
joined by a bridge, on one real PostgreSQL (tests.support.netns). n2's link is taken
down for longer than NODE_LOST_AFTER, then up again. Cut off, n2 can reach neither the
database nor its peers: its requeue job is stopped by its leash and runs again on
another node (never both at once: the runs check it themselves); its other job says
"not responding". Back, n2 re-adopts that job, keeps its hands off the moved one, and
records nothing of it."""

import time

import pytest

from tests.e2e.test_node_loss import RUN, runs_of
from tests.support.cluster import marker, prepare_database, stop_nodes, wait_meshed
from tests.support.cluster import result_of as call
from tests.support.daemon import DaemonProcess, child_env, short_tmpdir, write_settings
from tests.support.jobs import pids_of
from tests.support.netns import Network
from tests.support.poll import poll_until
from tests.support.postgres import Postgres

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

LOST_AFTER, DOWN_AFTER = 2.0, 60.0
NAMES = ["n1", "n2", "n3"]
HTTP, BUS = 5558, 5600


@pytest.fixture(scope="module")
def cluster():
    work = short_tmpdir("zn")
    stamps = work / "stamps.txt"
    mark = {"mark": {"type": "str", "regexp": r"[0-9.]+"}}
    apps = {"nap": {"argv": ["sleep", "$mark"], "grace": 1, "resources": {"cores": 0},
                    "params": mark},
            "again": {"argv": ["/bin/sh", "-c", RUN, "run", "$job_id", "$node", str(stamps),
                               "$mark"], "requeue": True, "grace": 1,
                      "resources": {"cores": 0}, "params": mark}}
    daemons: dict = {}
    with Network(NAMES) as net, Postgres(address=net.host_address) as pg:
        nodes = [{"hostname": n, "address": net.address(n), "port": BUS,
                  "url": f"http://{net.address(n)}:{HTTP}"} for n in NAMES]
        url = pg.database("partition")
        env = child_env()
        paths = {n: write_settings(
            work, f"{n}.py", DATA_DIR=str(work / n), NODE_NAME=n,
            DJANGO_SETTINGS_MODULE="tests.support.django_test_settings",
            CLUSTER_SERVER_LIST=nodes, CLUSTER_SECRET="a shared secret for the partition",
            CLUSTER_HEARTBEAT=0.2, CLUSTER_HEARTBEAT_TIMEOUT=1.0, CLUSTER_RETRY=0.2,
            DATABASE_URL=url, BIND_ADDRESS=net.address(n), PORT_ZEPH=HTTP,
            NODE_LOST_AFTER=LOST_AFTER, NODE_DOWN_AFTER=DOWN_AFTER, JOB_ROOTS=[str(work)],
            APPS=apps, RESOURCES={"cores": 2, "memory": 1024, "licenses": {}})
            for n in NAMES}
        try:
            tokens = prepare_database(paths["n1"], env)
            for n in NAMES:
                daemon = DaemonProcess(paths[n], env, prefix=net.prefix(n))
                daemons[n] = daemon
                daemon.start()
                daemon.tokens = tokens
            wait_meshed([daemons[n] for n in NAMES])
            daemons["n1"].net, daemons["n1"].stamps = net, stamps
            yield daemons
        finally:
            stop_nodes(daemons, work)


def job_of(node, job_id):
    return call(node, "jobs.get", {"id": job_id})


def running_on_n2(cluster, app, mark):
    job_id = call(cluster["n2"], "jobs.submit", {"app": app, "params": {"mark": mark}})["id"]
    job = poll_until(lambda: (j := job_of(cluster["n2"], job_id))["state"] == "RUNNING"
                     and j, 20, what=f"{app} running")
    assert job["node"] == "n2", job
    return job_id


def test_a_partitioned_node_never_runs_a_job_twice_and_rejoins(cluster):
    n1, n3 = cluster["n1"], cluster["n3"]
    net, stamps = n1.net, {"stamps": n1.stamps}
    stays, moves = marker(), marker()
    nap = running_on_n2(cluster, "nap", stays)
    again = running_on_n2(cluster, "again", moves)
    poll_until(lambda: len(runs_of(stamps, again)) == 1, 10, what="the requeue run")
    net.cut("n2")
    cut_at = time.monotonic()
    try:
        moved = poll_until(lambda: (j := job_of(n1, again))["state"] == "RUNNING" and
                           j["node"] != "n2" and j, LOST_AFTER + 10,
                           what="the requeue job running again elsewhere")
        assert moved["restarts"] == 1, moved
        told = job_of(n3, nap)
        assert told["state"] == "RUNNING", told
        assert told["state_reason"].startswith("node n2 not responding since"), told
        assert pids_of(stays)  # still computing on n2, cut off
        poll_until(lambda: len(runs_of(stamps, again)) == 2, 10, what="the second run")
        # cut for longer than NODE_LOST_AFTER (and its leash's limit), then back
        poll_until(lambda: time.monotonic() - cut_at > LOST_AFTER * 2, 10,
                   what="a partition longer than NODE_LOST_AFTER")
    finally:
        net.mend("n2")
    back = poll_until(lambda: (j := job_of(n1, nap))["state_reason"] ==
                      "running (this node is back)" and j, 30, what="n2 re-adopting its job")
    assert (back["state"], back["node"]) == ("RUNNING", "n2"), back
    first, second = runs_of(stamps, again)
    assert (first["node"], second["node"]) == ("n2", moved["node"])
    assert second["overlap"] == [], second  # n2's run was gone when it started
    if first["end"] is not None:
        assert first["end"] < second["start"], (first, second)
    still = job_of(cluster["n2"], again)
    assert (still["state"], still["node"], still["restarts"]) == \
        ("RUNNING", moved["node"], 1), still
    assert len(runs_of(stamps, again)) == 2
    for job_id, mark in ((nap, stays), (again, moves)):
        call(n3, "jobs.cancel", {"id": job_id})
        poll_until(lambda mark=mark: not pids_of(mark), 10, what="stopped")
