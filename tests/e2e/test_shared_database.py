"""One database for the cluster (DATABASE_URL): three real daemons on one real
PostgreSQL share users, tokens, login sessions and one job id space; any node serves
any request (what needs the process is forwarded to its node), updates reach
subscribers on every node; and the start-up faults of a database are clean errors."""

import asyncio
import json
import os
import sqlite3
import subprocess
import time
import zipfile

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.support.cluster import node_settings, prepare_database, start_nodes, stop_nodes
from tests.support.daemon import (
    DaemonProcess,
    child_env,
    run_cli,
    script,
    short_tmpdir,
    write_settings,
)
from tests.support.jobs import is_zombie_or_gone, kill_jobs_under
from tests.support.poll import poll_until
from tests.support.postgres import Postgres, free_port
from tests.support.sessions import free_port_range, rest
from tests.support.web import Ws, admin, close_ws, django_shell, login, run

pytestmark = pytest.mark.e2e

APPS = {"nap": {"argv": ["/bin/sh", "-c", "echo started; exec sleep 600"],
                "resources": {"cores": 0}, "grace": 1},
        "count": {"argv": ["/bin/sh", "-c", "seq -f 'line %g of many' 1 20000; "
                           "echo done; exec sleep 600"],
                  "resources": {"cores": 0}, "grace": 1},
        "whole": {"argv": ["/bin/sh", "-c", "exec sleep 600"],  # the node's one core
                  "resources": {"cores": 1}, "grace": 1}}
EXPECTED = "".join(f"line {i} of many\n" for i in range(1, 20001)) + "done\n"


def session_apps(low):
    return {**APPS, "quick": {"kind": "session", "argv": ["/bin/sh", "-c",
                                                         "echo ready; exec sleep 600"],
                              "ready_line": "ready", "port_range": [low, low + 3],
                              "resources": {"cores": 0}, "grace": 1}}


@pytest.fixture(scope="module")
def pg():
    with Postgres() as server:
        yield server


@pytest.fixture(scope="module")
def cluster(pg):
    work = short_tmpdir("zd")
    low, _ = free_port_range(7, 32000)
    nodes = [{"hostname": f"n{i}", "address": "127.0.0.1", "port": low + i - 1}
             for i in (1, 2, 3)]
    url = pg.database("shared")
    env = child_env()
    files = work / "files"
    files.mkdir()
    with zipfile.ZipFile(files / "app.zip", "w") as archive:
        archive.writestr("Procfile", 'web: while true; do echo "tick $$"; sleep 0.05; done')
    paths = {n["hostname"]: node_settings(work, n["hostname"], nodes, url,
                                          APPS=session_apps(low + 3),
                                          AGENT_FILE_ROOTS=[str(files)],
                                          RESOURCES={"cores": 1, "memory": 1024,
                                                     "licenses": {}})
             for n in nodes}
    daemons: dict = {}
    try:
        tokens = prepare_database(paths["n1"], env)  # once, for every node
        start_nodes(paths, env, tokens, daemons)
        daemons["n1"].archive = f"file://{files}/app.zip"
        yield daemons
    finally:
        stop_nodes(daemons, work)


async def call(daemon, method, params=None, token=None, session=None):
    ws = await Ws.connect(daemon.url, token=token, session=session)
    try:
        return await ws.call(method, params)
    finally:
        await ws.aclose()


def test_a_token_made_once_works_on_every_node(cluster):
    token = cluster["n1"].tokens["alice"]
    for name, daemon in cluster.items():
        answer = run(call(daemon, "whoami", token=token))
        assert answer["result"]["username"] == "alice", (name, answer)


def test_a_browser_login_on_one_node_is_valid_on_every_node(cluster):
    session = login(cluster["n1"].url, "bob", "bob-pw-123")
    for daemon in cluster.values():
        assert run(call(daemon, "whoami", session=session))["result"]["username"] == "bob"


def test_one_id_space_and_every_record_names_its_node(cluster):
    token = cluster["n1"].tokens["alice"]
    first = run(call(cluster["n1"], "jobs.submit", {"app": "nap"}, token=token))["result"]
    second = run(call(cluster["n2"], "jobs.submit", {"app": "nap"}, token=token))["result"]
    assert second["id"] != first["id"]
    # queued for the whole cluster (no node yet), started where submitted (room there)
    assert (first["node"], second["node"]) == ("", "")
    first = wait_state(cluster["n1"], first["id"], {"RUNNING"}, token)
    second = wait_state(cluster["n2"], second["id"], {"RUNNING"}, token)
    assert (first["node"], second["node"]) == ("n1", "n2")
    seen = run(call(cluster["n3"], "jobs.get", {"id": first["id"]}, token=token))["result"]
    assert (seen["id"], seen["node"]) == (first["id"], "n1")
    listed = run(call(cluster["n3"], "jobs.list", {}, token=token))["result"]["jobs"]
    assert {first["id"], second["id"]} <= {j["id"] for j in listed}
    for daemon, job in ((cluster["n1"], first), (cluster["n2"], second)):
        done = run(call(daemon, "jobs.cancel", {"id": job["id"]}, token=token))
        assert "result" in done, done
    # another user's job stays another user's, whatever the node
    other = run(call(cluster["n2"], "jobs.get", {"id": first["id"]},
                     token=cluster["n1"].tokens["bob"]))
    assert other["error"]["code"] == -32005  # as if it did not exist


def start(settings, timeout=60):
    return subprocess.run([script("zephserver-start"), "--settings", str(settings)],
                          capture_output=True, text=True, timeout=timeout, env=child_env())


def test_an_unreachable_postgresql_at_start_is_a_clean_error(tmp_path):
    url = f"postgresql://zeph:s3cret-pw@127.0.0.1:{free_port()}/zeph"
    settings = write_settings(tmp_path, DATABASE_URL=url)
    result = start(settings)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "unreachable" in out
    assert f"postgresql://zeph:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in out
    assert "s3cret-pw" not in out
    assert "Traceback" not in out


def test_a_pending_migration_on_postgresql_is_exit_6(pg, tmp_path):
    settings = write_settings(tmp_path, DATABASE_URL=pg.database("never_migrated"))
    result = start(settings)
    out = result.stdout + result.stderr
    assert result.returncode == 6, out
    assert "pending migration" in out
    assert "zephserver-admin" in out
    assert "migrate" in out


def test_two_nodes_on_sqlite_are_a_settings_error(tmp_path):
    nodes = [{"hostname": "a", "address": "127.0.0.1", "port": 1},
             {"hostname": "b", "address": "127.0.0.1", "port": 2}]
    settings = write_settings(tmp_path, NODE_NAME="a", CLUSTER_SERVER_LIST=nodes,
                              CLUSTER_SECRET="a secret long enough")
    result = run_cli("zephserver-start", "--settings", str(settings))
    assert result.returncode == 6, result.stderr
    assert "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def start_and_read(settings):
    """Start a daemon in the foreground and stop it once ready; what it printed."""
    daemon = subprocess.Popen([script("zephserver-start"), "--settings", str(settings)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=child_env())
    try:
        lines = []
        for line in daemon.stdout:
            lines.append(line)
            if line.startswith("zephserver ready on"):
                break
        return "".join(lines)
    finally:
        run_cli("zephserver-stop", "--settings", str(settings))
        daemon.wait(30)
        daemon.stdout.close()


def test_the_embedded_sqlite_is_migrated_at_start_and_kept_aside_first(tmp_path):
    """A fresh DATA_DIR starts without `migrate`; a database that holds data is copied
    aside before migrations are applied to it."""
    settings = write_settings(tmp_path, APPS=APPS)
    out = start_and_read(settings)
    assert "migration(s) applied" in out, out
    assert "Traceback" not in out
    # data, then a schema one step behind: the next start migrates, keeping a copy
    admin(settings, "adduser", "carol", env=child_env(ZEPHSERVER_PASSWORD="carol-pw-123"))
    admin(settings, "migrate", "zephweb", "0001", "-v0")
    out = start_and_read(settings)
    assert "is kept as" in out, out
    copy = out.split("is kept as ", 1)[1].split(")", 1)[0]
    with sqlite3.connect(copy) as db:
        users = [r[0] for r in db.execute("select username from auth_user")]
    assert users == ["carol"]


def wait_state(daemon, job_id, states, token, timeout=20):
    def probe():
        job = run(call(daemon, "jobs.get", {"id": job_id}, token=token))["result"]
        return job if job["state"] in states else None
    return poll_until(probe, timeout, 0.05, f"job {job_id} in {states}")


def test_any_node_acts_on_a_job_running_on_another(cluster):
    """Submitted on n1; its output read and its cancel asked through n3: forwarded to
    n1, which owns the process. A subscriber on n2 sees the same updates, in order."""
    token = cluster["n1"].tokens["alice"]

    async def states_of(ws, job_id):
        seen = []
        while not seen or seen[-1] != "CANCELLED":
            note = await ws.until("job.updated", timeout=20)
            if note["id"] == job_id:
                seen.append(note["state"])
        return seen

    async def scenario():
        watcher = await Ws.connect(cluster["n2"].url, token=token)
        local = await Ws.connect(cluster["n1"].url, token=token)
        far = await Ws.connect(cluster["n3"].url, token=token)
        try:
            await watcher.call("jobs.subscribe", {})
            await local.call("jobs.subscribe", {})
            job = (await local.call("jobs.submit", {"app": "nap"}))["result"]
            deadline = time.monotonic() + 20
            output = ""
            while "started" not in output and time.monotonic() < deadline:
                answer = await far.call("jobs.output", {"id": job["id"]})
                assert "result" in answer, answer
                output = answer["result"]["data"]
                await asyncio.sleep(0.05)
            cancelled = await far.call("jobs.cancel", {"id": job["id"]})
            return (job, output, cancelled, await states_of(watcher, job["id"]),
                    await states_of(local, job["id"]))
        finally:
            for ws in (watcher, local, far):
                await ws.aclose()

    job, output, cancelled, remote_states, local_states = run(scenario())
    assert "started" in output  # n1's log bytes, read through n3
    assert cancelled["result"]["id"] == job["id"], cancelled
    assert remote_states == local_states, (remote_states, local_states)
    assert remote_states[-1] == "CANCELLED"
    final = wait_state(cluster["n3"], job["id"], {"CANCELLED"}, token)
    assert final["node"] == "n1"
    assert "cancelled by alice" in final["state_reason"]


async def read_output(ws, job_id, until):
    """The job's output as job.output notifications bring it, until ``until`` is in it;
    each chunk must start where the last ended."""
    text, at = "", None
    while until not in text:
        note = await ws.until("job.output", timeout=20)
        if note["id"] != job_id:
            continue
        assert at is None or note["offset"] == at, (note["offset"], at)
        at = note["next_offset"]
        text += note["data"]
    return text, at


def test_a_job_waiting_for_the_cluster_is_held_released_and_changed_through_any_node(cluster):
    """Every node's one core taken: a fourth job waits for the whole cluster (no node).
    Held through n3, released through n2, changed through n3; when a core frees on any
    node, it starts there, as changed."""
    token = cluster["n1"].tokens["alice"]
    running = [run(call(cluster["n1"], "jobs.submit", {"app": "whole"}, token=token))
               ["result"] for _ in range(3)]
    try:
        running = [wait_state(cluster["n1"], job["id"], {"RUNNING"}, token)
                   for job in running]
        assert sorted(job["node"] for job in running) == ["n1", "n2", "n3"], running
        waiting = run(call(cluster["n1"], "jobs.submit", {"app": "whole"}, token=token))
        waiting = waiting["result"]
        running.append(waiting)
        seen = run(call(cluster["n2"], "jobs.get", {"id": waiting["id"]}, token=token))
        assert (seen["result"]["state"], seen["result"]["node"]) == ("QUEUED", ""), seen
        held = run(call(cluster["n3"], "queue.hold", {"id": waiting["id"]}, token=token))
        assert held["result"]["state"] == "HELD", held
        released = run(call(cluster["n2"], "queue.release", {"id": waiting["id"]},
                            token=token))
        assert released["result"]["state"] == "QUEUED", released
        changed = run(call(cluster["n3"], "jobs.update", {"id": waiting["id"],
                                                          "priority": -3}, token=token))
        assert changed["result"]["priority"] == -3, changed
        freed = running[1]
        run(call(cluster["n2"], "jobs.cancel", {"id": freed["id"]}, token=token))
        started = wait_state(cluster["n3"], waiting["id"], {"RUNNING"}, token)
        assert (started["node"], started["priority"]) == (freed["node"], -3), started
    finally:
        for job in running:
            run(call(cluster["n1"], "jobs.cancel", {"id": job["id"]}, token=token))


def test_output_of_a_job_on_another_node_streams_every_byte_once_and_resumes(cluster):
    token = cluster["n1"].tokens["alice"]

    async def scenario():
        owner = await Ws.connect(cluster["n1"].url, token=token)
        job = (await owner.call("jobs.submit", {"app": "count"}))["result"]
        await owner.aclose()
        far = await Ws.connect(cluster["n2"].url, token=token)
        try:
            answer = await far.call("jobs.subscribe", {"id": job["id"], "offset": 0})
            assert answer["result"]["job"]["node"] == "n1", answer
            whole, end = await read_output(far, job["id"], "done\n")
        finally:
            await far.aclose()
        # a reconnect, resuming from an offset in the middle: the rest, no gap, no repeat
        middle = len(EXPECTED.encode()) // 2
        again = await Ws.connect(cluster["n3"].url, token=token)
        try:
            await again.call("jobs.subscribe", {"id": job["id"], "offset": middle})
            rest, _ = await read_output(again, job["id"], "done\n")
            await again.call("jobs.cancel", {"id": job["id"]})
        finally:
            await again.aclose()
        return whole, end, rest

    whole, end, rest = run(scenario())
    assert whole == EXPECTED
    assert end == len(EXPECTED.encode())
    assert rest == EXPECTED.encode()[len(EXPECTED.encode()) // 2:].decode()


def test_a_session_started_through_one_node_is_read_and_deleted_through_another(cluster):
    token = cluster["n1"].tokens["alice"]
    status, body, _ = rest("POST", cluster["n1"].url + "/paraview", token,
                           {"application": "quick"})
    assert status == 200, body
    status, again, _ = rest("GET", f"{cluster['n2'].url}/paraview/{body['id']}", token)
    assert (status, again["sessionURL"], again["job"]["pid"]) == (
        200, body["sessionURL"], body["job"]["pid"])
    status, stopped, _ = rest("DELETE", f"{cluster['n2'].url}/paraview/{body['id']}", token)
    assert status == 200, stopped
    poll_until(lambda: is_zombie_or_gone(body["job"]["pid"]), 10, 0.05, "the session gone")
    assert rest("GET", f"{cluster['n3'].url}/paraview/{body['id']}", token)[0] == 404


def test_the_status_and_resources_of_the_whole_cluster(cluster):
    token = cluster["n1"].tokens["alice"]
    job = run(call(cluster["n2"], "jobs.submit", {"app": "nap"}, token=token))["result"]
    wait_state(cluster["n2"], job["id"], {"RUNNING"}, token)
    try:
        res = run(call(cluster["n3"], "resources.status", token=token))["result"]
        assert res["node"] == "n3"
        assert [n["node"] for n in res["nodes"]] == ["n3", "n1", "n2"]
        by_node = {n["node"]: n for n in res["nodes"]}
        assert by_node["n2"]["running"] >= 1
        assert res["total"]["running"] == sum(n["running"] for n in res["nodes"])
        assert res["total"]["capacity"]["cores"] == sum(
            n["capacity"]["cores"] for n in res["nodes"])
        out = cluster["n1"].cli("zephserver-status").stdout
        assert "NODE" in out
        line = next(x for x in out.splitlines() if x.startswith("n2 "))
        assert "up" in line
        status = json.loads(cluster["n1"].cli("zephserver-status", "--json").stdout)
        assert {n["node"]: n["jobs_running"] for n in status["nodes"]}["n2"] >= 1
    finally:
        run(call(cluster["n2"], "jobs.cancel", {"id": job["id"]}, token=token))


def test_agent_processes_of_every_node_through_any_node(cluster):
    token = cluster["n1"].tokens["alice"]
    status, made, _ = rest("POST", cluster["n1"].url + "/agent/create-process", token, {
        "app": "far", "node": "web.0", "process_type": "web",
        "source_url": cluster["n1"].archive})
    assert status == 201, made
    slug = made["slug"]
    poll_until(lambda: rest("GET", f"{cluster['n1'].url}/agent/process-status/{slug}",
                            token)[1].get("state") == "running", 20, 0.05, "running")
    # listed and shown through another node, with the node that runs it
    status, listing, _ = rest("GET", cluster["n2"].url + "/agent/list-processes", token)
    mine = [p for p in listing["processes"] if p["slug"] == slug]
    assert [p["runs_on"] for p in mine] == ["n1"], listing
    status, shown, _ = rest("GET", f"{cluster['n3'].url}/agent/process-status/{slug}", token)
    assert (status, shown["state"], shown["runs_on"]) == (200, "running", "n1")
    # the same name through another node is taken
    status, taken, _ = rest("POST", cluster["n2"].url + "/agent/create-process", token, {
        "app": "far", "node": "web.0", "process_type": "web",
        "source_url": cluster["n1"].archive})
    assert status == 409, taken
    assert rest("GET", f"{cluster['n2'].url}/agent/process-status/{slug}",
                cluster["n1"].tokens["bob"])[0] == 404  # another user's: not seen

    async def console_through_n3():
        url = cluster["n3"].url.replace("http", "ws", 1) + f"/agent/attach-console/{slug}"
        conn = await websocket_connect(HTTPRequest(url, headers={
            "Authorization": f"Bearer {token}"}))
        try:
            return [await asyncio.wait_for(conn.read_message(), 10) for _ in range(5)]
        finally:
            await close_ws(conn)

    frames = run(console_through_n3())
    assert all(f and f.startswith("tick ") for f in frames), frames
    # deleted through another node: forwarded to n1, which stops it
    status, _, _ = rest("POST", f"{cluster['n2'].url}/agent/delete-process/{slug}", token, {})
    assert status == 200
    poll_until(lambda: is_zombie_or_gone(shown["pid"]), 10, 0.05, "the process stopped")
    for daemon in cluster.values():
        assert rest("GET", f"{daemon.url}/agent/process-status/{slug}", token)[0] == 404


def test_a_forwarded_request_for_a_job_the_node_does_not_run_is_a_clear_error(cluster):
    """The record names n2, the process is n1's (a record changed behind the cluster's
    back): asked through n3, the request goes to n2, which says so and logs it."""
    token = cluster["n1"].tokens["alice"]
    job = run(call(cluster["n1"], "jobs.submit", {"app": "nap"}, token=token))["result"]
    wait_state(cluster["n1"], job["id"], {"RUNNING"}, token)
    move = f"from zephserver.web.models import Job; Job.objects.filter(pk={job['id']})" \
           ".update(node='n2')"
    django_shell(cluster["n1"].settings, move, child_env())
    try:
        answer = run(call(cluster["n3"], "jobs.cancel", {"id": job["id"]}, token=token))
        assert answer["error"]["code"] == -32006, answer
        assert "no process of it runs on node n2" in answer["error"]["message"]
        poll_until(lambda: "does not run here" in cluster["n2"].output, 10, 0.05,
                   "n2 logs it")
    finally:
        back = move.replace("node='n2'", "node='n1'")
        django_shell(cluster["n1"].settings, back, child_env())
        run(call(cluster["n1"], "jobs.cancel", {"id": job["id"]}, token=token))


def test_zz_a_node_that_is_down_answers_a_clear_error_within_a_second(cluster):
    """(Last in this module: n3 stays down.) A job left running on n3, whose daemon
    stopped: a request that needs its process is -32007 naming n3, at once."""
    token = cluster["n1"].tokens["alice"]
    job = run(call(cluster["n3"], "jobs.submit", {"app": "nap"}, token=token))["result"]
    wait_state(cluster["n3"], job["id"], {"RUNNING"}, token)
    assert cluster["n3"].cli("zephserver-stop").returncode == 0
    poll_until(lambda: "peer n3: down" in cluster["n1"].cli("zephserver-status").stdout, 10,
               0.1, "n1 sees n3 down")
    started = time.monotonic()
    answer = run(call(cluster["n1"], "jobs.cancel", {"id": job["id"]}, token=token))
    took = time.monotonic() - started
    assert answer["error"]["code"] == -32007, answer
    assert "node n3" in answer["error"]["message"]
    assert took < 1.0, took
    # what needs only the database still works; the whole's status says n3 is down
    seen = run(call(cluster["n2"], "jobs.get", {"id": job["id"]}, token=token))["result"]
    assert (seen["state"], seen["node"]) == ("RUNNING", "n3")
    status = json.loads(cluster["n1"].cli("zephserver-status", "--json").stdout)
    n3 = {n["node"]: n for n in status["nodes"]}["n3"]
    assert (n3["state"], n3["jobs_running"]) == ("unreachable", 1)


def test_postgresql_stopped_and_started_again_under_a_running_daemon(tmp_path):
    """While the database is down: what needs it is -32003 naming it, what does not
    (ping) still answers, nothing crashes; once it is back, everything works again."""
    with Postgres() as own:
        url = own.database("outage")
        settings = write_settings(tmp_path, DATABASE_URL=url, APPS=APPS,
                                  DJANGO_SETTINGS_MODULE="tests.support.django_test_settings")
        env = child_env()
        tokens = prepare_database(settings, env)
        daemon = DaemonProcess(settings, env).start()
        token = tokens["alice"]

        async def outage():
            ws = await Ws.connect(daemon.url, token=token)
            try:
                before = await ws.call("jobs.submit", {"app": "nap"})
                own.stop()
                down = [await ws.call("jobs.list", {}), await ws.call("jobs.submit",
                                                                     {"app": "nap"})]
                pong = await ws.call("ping")
                shown = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: daemon.cli("zephserver-status").stdout)
                assert "database: unavailable" in shown, shown
                own.start_again()
                deadline = time.monotonic() + 20
                while True:  # the next request reconnects
                    after = await ws.call("jobs.submit", {"app": "nap"})
                    if "result" in after or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.1)
                listed = await ws.call("jobs.list", {})
                return before, down, pong, after, listed
            finally:
                await ws.aclose()

        try:
            before, down, pong, after, listed = run(outage())
            assert "result" in before, before
            for answer in down:
                assert answer["error"]["code"] == -32003, answer
                assert "database" in answer["error"]["message"]
            assert "result" in pong
            assert "result" in after, after
            assert "database: ok (postgresql://postgres@" in daemon.cli(
                "zephserver-status").stdout
            ids = {j["id"] for j in listed["result"]["jobs"]}
            assert {before["result"]["id"], after["result"]["id"]} <= ids  # nothing lost
            status = json.loads(daemon.cli("zephserver-status", "--json").stdout)
            assert {s["name"]: (s["state"], s["restarts"]) for s in status["services"]} \
                == {s["name"]: ("RUNNING", 0) for s in status["services"]}
            assert "Traceback" not in daemon.output
        finally:
            daemon.cli("zephserver-stop")
            daemon.close()
            kill_jobs_under(tmp_path)


def test_a_transaction_left_idle_is_ended_by_postgresql(pg):
    """A node paused inside a transaction (holding the plan lock) is cut off by the server
    after the idle limit the daemon's connections carry; the lock is free again."""
    import psycopg

    from zephserver.database import django_database

    url = pg.database("idle")
    conf = django_database(url, ".", idle_in_transaction=0.5)
    conninfo = dict(host=conf["HOST"], port=conf["PORT"], user=conf["USER"],
                    dbname=conf["NAME"], **conf["OPTIONS"])
    paused = psycopg.connect(**conninfo)
    paused.execute("SELECT pg_advisory_xact_lock(7)")  # (a transaction begins)
    with psycopg.connect(url, autocommit=True) as other:
        def lock_free():
            return other.execute("SELECT pg_try_advisory_lock(7)").fetchone()[0]
        poll_until(lock_free, 10, what="the paused session's lock released")
    with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
        paused.execute("SELECT 1")
    paused.close()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_cluster_waits_calmly_for_its_database(tmp_path):
    """PostgreSQL stopped under two nodes for 3 s: their timers (lease renewals) cannot
    run without it, and wait with a backoff instead of trying again at once (no busy
    loop, no flood of log lines); once it is back, they work again."""
    work = short_tmpdir("zo")
    low, _ = free_port_range(2, 29000)
    nodes = [{"hostname": f"n{i}", "address": "127.0.0.1", "port": low + i - 1}
             for i in (1, 2)]
    daemons: dict = {}
    with Postgres() as own:
        url = own.database("calm")
        env = child_env()
        paths = {n["hostname"]: node_settings(work, n["hostname"], nodes, url, APPS=APPS,
                                              NODE_LOST_AFTER=1.2)
                 for n in nodes}
        try:
            tokens = prepare_database(paths["n1"], env)
            start_nodes(paths, env, tokens, daemons)
            before = {n: cpu_seconds(d.pid) for n, d in daemons.items()}
            lines = {n: len(d.lines) for n, d in daemons.items()}
            own.stop()
            stopped = time.monotonic()
            poll_until(lambda: time.monotonic() - stopped > 3, 5, 0.1, "a 3 s outage")
            used = {n: cpu_seconds(d.pid) - before[n] for n, d in daemons.items()}
            said = {n: sum("could not begin" in x for x in d.lines[lines[n]:])
                    for n, d in daemons.items()}
            own.start_again()
            assert all(cpu < 1.0 for cpu in used.values()), used  # (a busy loop: ~3 s)
            assert all(count < 30 for count in said.values()), said
            for daemon in daemons.values():
                poll_until(lambda daemon=daemon: "result" in run(call(
                    daemon, "jobs.submit", {"app": "nap"}, token=tokens["alice"])), 20, 0.2,
                    "a submit taken again")
        finally:
            stop_nodes(daemons, work)
