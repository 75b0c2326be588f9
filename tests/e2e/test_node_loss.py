"""A node lost: three real daemons on one real PostgreSQL, n2's daemon killed (kill -9)
while its job runs on. Within NODE_LOST_AFTER the others say so on the job ("node n2 not
responding since ..."); after NODE_DOWN_AFTER it is LOST. n2 restarted before that
re-adopts its job; restarted after, it stops what the cluster gave up."""

import os
import signal
import zipfile

import pytest

from tests.support.cluster import (
    marker,
    node_settings,
    prepare_database,
    start_nodes,
    stop_nodes,
)
from tests.support.cluster import rpc as call
from tests.support.daemon import DaemonProcess, child_env, short_tmpdir
from tests.support.jobs import pids_of
from tests.support.poll import poll_until
from tests.support.postgres import Postgres
from tests.support.sessions import free_port_range, rest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

LOST_AFTER, DOWN_AFTER = 2.0, 8.0
# A requeue job stamps each run to a shared file: its node, pid, start, and end (on TERM;
# none if it was killed first). Starting, a run first says "overlap" if an earlier run
# of the same job is still alive: the jobs themselves check that none runs twice.
RUN = ('for p in $$(grep "^$$1 .* start " "$$3" | cut -d" " -f3); do '
       'kill -0 "$$p" 2>/dev/null && echo "$$1 $$2 $$$$ overlap $$p" >> "$$3"; done; '
       'echo "$$1 $$2 $$$$ start $$(date +%s.%N)" >> "$$3"; '
       'trap \'echo "$$1 $$2 $$$$ end $$(date +%s.%N)" >> "$$3"; exit 143\' TERM; '
       'sleep "$$4" & wait')


def apps(stamps, ports) -> dict:
    return {"viz": {"kind": "session", "argv": ["/bin/sh", "-c", "echo ready; exec sleep $mark"],
                    "ready_line": "ready", "grace": 1, "resources": {"cores": 0},
                    "port_range": list(ports),
                    "params": {"mark": {"type": "str", "regexp": r"[0-9.]+"}}},
            "nap": {"argv": ["sleep", "$mark"], "grace": 1, "resources": {"cores": 1},
                    "params": {"mark": {"type": "str", "regexp": r"[0-9.]+"}}},
            "again": {"argv": ["/bin/sh", "-c", RUN, "run", "$job_id", "$node", str(stamps),
                               "$mark"], "requeue": True, "grace": 1,
                      "resources": {"cores": 1},
                      "params": {"mark": {"type": "str", "regexp": r"[0-9.]+"}}}}


@pytest.fixture(scope="module")
def cluster():
    work = short_tmpdir("zl")
    low, _ = free_port_range(3, 23000)
    ports = free_port_range(3, 25000)
    nodes = [{"hostname": f"n{i}", "address": "127.0.0.1", "port": low + i - 1}
             for i in (1, 2, 3)]
    files = work / "files"
    files.mkdir()
    with zipfile.ZipFile(files / "keep.zip", "w") as archive:
        archive.writestr("Procfile", "web: exec sleep $MARK\n")
    daemons: dict = {}
    with Postgres() as pg:
        url = pg.database("loss")
        env = child_env()
        paths = {n["hostname"]: node_settings(
            work, n["hostname"], nodes, url, APPS=apps(work / "stamps.txt", ports),
            LAUNCHER_PROXY_FILE=str(work / f"{n['hostname']}.map"),
            AGENT_FILE_ROOTS=[str(files)],
            NODE_LOST_AFTER=LOST_AFTER, JOB_ROOTS=[str(work)],
            NODE_DOWN_AFTER=DOWN_AFTER, RESOURCES={"cores": 1, "memory": 1024,
                                                   "licenses": {}})
            for n in nodes}
        try:
            tokens = prepare_database(paths["n1"], env)
            start_nodes(paths, env, tokens, daemons)
            daemons["paths"], daemons["env"] = paths, env
            daemons["stamps"] = work / "stamps.txt"
            daemons["work"] = work
            daemons["archive"] = f"file://{files}/keep.zip"
            daemons["db"] = url
            yield daemons
        finally:
            for key in ("paths", "env", "stamps", "work", "archive", "db"):
                daemons.pop(key, None)  # (not there if a node failed to start)
            stop_nodes(daemons, work)


def job_of(node, job_id):
    return call(node, "jobs.get", {"id": job_id})["result"]


def running_on_n2(cluster, mark, app="nap"):
    job = call(cluster["n2"], "jobs.submit", {"app": app, "params": {"mark": mark}})
    job_id = job["result"]["id"]
    running = poll_until(lambda: (j := job_of(cluster["n2"], job_id))["state"] == "RUNNING"
                         and j, 20, what="the job running")
    assert running["node"] == "n2", running  # submitted there, with room there
    poll_until(lambda: pids_of(mark), 10, what="its process")
    return job_id


def kill_n2(cluster):
    cluster["n2"].kill(signal.SIGKILL)
    cluster["n2"].wait_exit()
    cluster["n2"].close()  # (its jobs run on: each in a session of its own)


def take_n2_away(cluster, how):
    """kill -9 of n2's daemon, or SIGSTOP; its daemon object (to bring it back)."""
    daemon = cluster["n2"]
    if how == "killed":
        kill_n2(cluster)
    else:
        os.kill(daemon.pid, signal.SIGSTOP)
    return daemon


def bring_n2_back(cluster, how, daemon):
    if how == "killed":
        restart_n2(cluster)
    else:
        os.kill(daemon.pid, signal.SIGCONT)


def n2_answers(cluster):
    poll_until(lambda: call(cluster["n2"], "ping", {}).get("result") is not None, 20,
               what="n2 answering again")


def restart_n2(cluster):
    again = DaemonProcess(cluster["paths"]["n2"], cluster["env"]).start()
    again.tokens = cluster["n1"].tokens
    cluster["n2"] = again
    return again


def test_a_lost_nodes_job_says_so_and_is_readopted_when_it_comes_back(cluster):
    mark = marker()
    job_id = running_on_n2(cluster, mark)
    kill_n2(cluster)
    told = poll_until(lambda: (j := job_of(cluster["n1"], job_id))["state_reason"]
                      .startswith("node n2 not responding since") and j,
                      LOST_AFTER + 5, what="the others saying n2 does not respond")
    assert told["state"] == "RUNNING", told  # it may still be computing there
    assert pids_of(mark)
    restart_n2(cluster)  # before NODE_DOWN_AFTER
    back = poll_until(lambda: (j := job_of(cluster["n1"], job_id))["state_reason"]
                      == "running (this node is back)" and j, 15, what="n2 back")
    assert (back["state"], back["node"]) == ("RUNNING", "n2"), back
    assert "result" in call(cluster["n3"], "jobs.cancel", {"id": job_id})
    poll_until(lambda: not pids_of(mark), 10, what="the process stopped on cancel")
    assert job_of(cluster["n1"], job_id)["state"] == "CANCELLED"


def test_a_job_of_a_node_down_too_long_is_lost_and_stopped_when_the_node_returns(cluster):
    mark = marker()
    job_id = running_on_n2(cluster, mark)
    kill_n2(cluster)
    lost = poll_until(lambda: (j := job_of(cluster["n3"], job_id))["state"] == "LOST" and j,
                      DOWN_AFTER + 5, what="the job LOST after NODE_DOWN_AFTER")
    assert lost["state_reason"].startswith("node n2 down: not heard from since"), lost
    assert pids_of(mark)  # the machine still runs it: its daemon is gone, not the job
    restart_n2(cluster)
    poll_until(lambda: not pids_of(mark), 15, what="n2 stopping what the cluster gave up")
    stopped = job_of(cluster["n1"], job_id)
    assert stopped["state"] == "LOST", stopped
    assert "stopped when node n2 came back" in stopped["state_reason"], stopped


def test_a_lost_nodes_sessions_end_and_leave_every_proxy_map(cluster):
    """A session on n2, listed in every node's proxy map: n2 killed, the session is LOST
    within NODE_LOST_AFTER and unlisted everywhere; n2 back stops its process."""
    mark = marker()
    status, body, _ = rest("POST", cluster["n2"].url + "/paraview",
                           cluster["n2"].tokens["alice"], {"application": "viz",
                                                           "mark": mark})
    assert status == 200, body
    assert job_of(cluster["n1"], int(body["id"]))["node"] == "n2"
    entry = f"{body['id']} localhost:{body['port']}"

    def listed(node):
        path = cluster["work"] / f"{node}.map"
        return path.exists() and entry in path.read_text().splitlines()

    poll_until(lambda: listed("n1") and listed("n3"), 10, what="the session in every map")
    kill_n2(cluster)
    session = poll_until(lambda: (j := job_of(cluster["n1"], int(body["id"])))["state"]
                         == "LOST" and j, LOST_AFTER + 5, what="the session LOST")
    assert session["state_reason"].startswith("node n2 lost"), session
    poll_until(lambda: not listed("n1") and not listed("n3"), 5,
               what="the session gone from the other nodes' proxy maps")
    assert pids_of(mark)  # (its daemon died, not its process)
    restart_n2(cluster)
    poll_until(lambda: not pids_of(mark), 15, what="n2 stopping the session it lost")
    assert not listed("n2")


def runs_of(cluster, job_id):
    """Each run of a requeue job, from its stamps: node, start, end (None: killed before
    it could say), and the earlier runs it found alive when it started."""
    runs: dict = {}
    for line in cluster["stamps"].read_text().splitlines():
        words = line.split()
        if len(words) < 4 or int(words[0]) != job_id:
            continue
        node, pid, what, value = words[1], words[2], words[3], words[4:]
        run_ = runs.setdefault(pid, {"node": node, "start": None, "end": None,
                                     "overlap": []})
        if what == "overlap":
            run_["overlap"] += value
        elif value:  # (an end cut short by SIGKILL has no time: unknown)
            run_[what] = float(value[0])
    return sorted((r for r in runs.values() if r["start"] is not None),
                  key=lambda r: r["start"])


@pytest.mark.parametrize("how", ["killed", "paused"])
def test_a_requeue_job_of_a_lost_node_runs_again_elsewhere_and_never_twice(cluster, how):
    """kill -9 (or SIGSTOP) of n2's daemon while its requeue: True job runs: the job is
    stopped on n2 (it is held to the daemon's lease) before it runs again on another
    node as attempt 2; the two runs never overlap. n2 back (restarted, or SIGCONT) keeps
    its hands off it."""
    mark = marker()
    job_id = running_on_n2(cluster, mark, "again")
    daemon = take_n2_away(cluster, how)
    try:
        moved = poll_until(lambda: (j := job_of(cluster["n1"], job_id))["state"] == "RUNNING"
                           and j["node"] != "n2" and j, LOST_AFTER + 8,
                           what="the job running again elsewhere")
        assert moved["restarts"] == 1, moved  # attempt 2
        assert "attempt 2" in moved["state_reason"] or moved["state_reason"] == "running"
        poll_until(lambda: len(runs_of(cluster, job_id)) == 2, 10, what="the second run")
        first, second = runs_of(cluster, job_id)
        assert (first["node"], second["node"]) == ("n2", moved["node"])
        assert second["overlap"] == [], second  # the n2 run was gone when it started
        if first["end"] is not None:  # (it had time to say so, after its TERM)
            assert first["end"] < second["start"], (first, second)
    finally:
        bring_n2_back(cluster, how, daemon)
    # n2 back: it reconciles and leaves the job where it runs now
    n2_answers(cluster)
    still = job_of(cluster["n2"], job_id)
    assert (still["state"], still["node"]) == ("RUNNING", moved["node"]), still
    assert len(runs_of(cluster, job_id)) == 2
    assert "result" in call(cluster["n1"], "jobs.cancel", {"id": job_id})
    poll_until(lambda: not pids_of(mark), 10, what="every run of it gone")


@pytest.mark.parametrize("how", ["killed", "paused"])
def test_a_lost_nodes_agent_processes_run_again_elsewhere(cluster, how):
    """An agent process placed on n2 (``runs_on``): n2 killed (its process dies with it)
    or paused (its process runs on, frozen out): another node takes the process and
    runs it from its source again. n2 back leaves it there, and stops its own copy."""
    mark = marker()
    token = cluster["n1"].tokens["alice"]
    poll_until(lambda: call(cluster["n1"], "resources.status", {})["result"]["total"]
               ["capacity"]["cores"] == 3, 20, what="every node up (seen from n1)")
    status, made, _ = rest("POST", cluster["n1"].url + "/agent/create-process", token, {
        "app": "keep", "node": how, "process_type": "web", "runs_on": "n2",
        "source_url": cluster["archive"], "env": {"MARK": mark}})
    assert status == 201, made
    slug = made["slug"]

    def shown(node="n1"):
        return rest("GET", f"{cluster[node].url}/agent/process-status/{slug}", token)[1]

    poll_until(lambda: shown()["state"] == "running" and pids_of(mark), 20,
               what="the process running on n2")
    assert shown()["runs_on"] == "n2"
    daemon = take_n2_away(cluster, how)
    try:
        moved = poll_until(lambda: (p := shown())["runs_on"] != "n2" and
                           p["state"] == "running" and p, LOST_AFTER + 8,
                           what="the process running again on another node")
        assert moved["state_reason"] == "running", moved
        if how == "killed":  # (its copy on n2 died with n2's daemon; the new one execs)
            poll_until(lambda: len(pids_of(mark)) == 1, 5, what="its one copy")
    finally:
        bring_n2_back(cluster, how, daemon)
    n2_answers(cluster)
    poll_until(lambda: shown("n2")["runs_on"] == moved["runs_on"] and
               len(pids_of(mark)) == 1, 15, what="one copy left (n2's stopped)")
    if how == "paused":  # (its copy ran on, frozen with its daemon, until it woke)
        assert f"process {slug} (job {made['id']}): the cluster moved it" in \
            cluster["n2"].output
    status, _, _ = rest("POST", f"{cluster['n3'].url}/agent/delete-process/{slug}", token, {})
    assert status == 200
    poll_until(lambda: not pids_of(mark), 10, what="the process deleted")


def test_a_job_a_lost_node_claimed_but_never_started_runs_elsewhere(cluster):
    """Every node full; a job waits. n2 claims it (its record: STARTING on n2, no process
    yet; written here as n2 would have) and dies before starting it: within
    NODE_LOST_AFTER + 5 s the node that declares n2 lost puts it back in the queue, and
    it runs on a node with room."""
    import psycopg

    marks = {name: marker() for name in ("n1", "n2", "n3")}
    blockers = {}
    for name, mark in marks.items():
        job_id = call(cluster[name], "jobs.submit", {"app": "nap", "params": {
            "mark": mark}})["result"]["id"]
        blockers[name] = poll_until(lambda job_id=job_id, name=name: (
            j := job_of(cluster[name], job_id))["state"] == "RUNNING" and j, 20,
            what=f"{name} full")
        assert blockers[name]["node"] == name, blockers[name]
    mark = marker()
    waiting = call(cluster["n1"], "jobs.submit", {"app": "nap", "params": {"mark": mark}}
                   )["result"]["id"]
    assert job_of(cluster["n1"], waiting)["state"] == "QUEUED"
    kill_n2(cluster)
    with psycopg.connect(cluster["db"], autocommit=True) as db:
        claimed = db.execute("UPDATE zephweb_job SET state = 'STARTING', node = 'n2', "
                             "state_reason = 'starting' WHERE id = %s AND state = 'QUEUED' "
                             "AND node = ''", [waiting]).rowcount
    assert claimed == 1
    try:
        assert "result" in call(cluster["n1"], "jobs.cancel", {"id": blockers["n1"]["id"]})
        ran = poll_until(lambda: (j := job_of(cluster["n3"], waiting))["state"] == "RUNNING"
                         and j, LOST_AFTER + 5, what="the job n2 claimed running elsewhere")
        assert ran["node"] == "n1", ran
        poll_until(lambda: pids_of(mark), 5, what="its process")
    finally:
        restart_n2(cluster)
    for job_id in (waiting, blockers["n2"]["id"], blockers["n3"]["id"]):
        call(cluster["n1"], "jobs.cancel", {"id": job_id})
    for m in (mark, marks["n2"], marks["n3"]):
        poll_until(lambda m=m: not pids_of(m), 15, what="stopped")
