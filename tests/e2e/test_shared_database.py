"""One database for the cluster (DATABASE_URL): three real daemons on one real
PostgreSQL share users, tokens, login sessions and one job id space; and the start-up
faults of a database are clean errors."""

import shutil
import sqlite3
import subprocess

import pytest

from tests.support.cluster import node_settings, prepare_database, start_nodes
from tests.support.daemon import child_env, run_cli, script, short_tmpdir, write_settings
from tests.support.jobs import kill_jobs_under
from tests.support.postgres import Postgres, free_port
from tests.support.sessions import free_port_range
from tests.support.web import Ws, admin, login, run

pytestmark = pytest.mark.e2e

APPS = {"nap": {"argv": ["/bin/sh", "-c", "echo started; exec sleep 600"],
                "resources": {"cores": 0}, "grace": 1}}


@pytest.fixture(scope="module")
def pg():
    with Postgres() as server:
        yield server


@pytest.fixture(scope="module")
def cluster(pg):
    work = short_tmpdir("zd")
    low, _ = free_port_range(3, 32000)
    nodes = [{"hostname": f"n{i}", "address": "127.0.0.1", "port": low + i - 1}
             for i in (1, 2, 3)]
    url = pg.database("shared")
    env = child_env()
    paths = {n["hostname"]: node_settings(work, n["hostname"], nodes, url, APPS=APPS)
             for n in nodes}
    daemons: dict = {}
    try:
        tokens = prepare_database(paths["n1"], env)  # once, for every node
        start_nodes(paths, env, tokens, daemons)
        yield daemons
    finally:
        for d in daemons.values():
            d.cli("zephserver-stop")
            d.close()
        kill_jobs_under(work)
        shutil.rmtree(work, ignore_errors=True)


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
    assert (first["node"], second["node"]) == ("n1", "n2")
    seen = run(call(cluster["n3"], "jobs.get", {"id": first["id"]}, token=token))["result"]
    assert (seen["id"], seen["node"]) == (first["id"], "n1")
    listed = run(call(cluster["n3"], "jobs.list", {}, token=token))["result"]["jobs"]
    assert {first["id"], second["id"]} <= {j["id"] for j in listed}
    # what needs the process is the owning node's: a clear answer, never -32603
    refused = run(call(cluster["n3"], "jobs.cancel", {"id": first["id"]}, token=token))
    assert refused["error"]["code"] == -32006
    assert "node n1" in refused["error"]["message"]
    for daemon, job in ((cluster["n1"], first), (cluster["n2"], second)):
        done = run(call(daemon, "jobs.cancel", {"id": job["id"]}, token=token))
        assert "result" in done, done
    # another user's job stays another user's, whatever the node
    other = run(call(cluster["n2"], "jobs.get", {"id": first["id"]},
                     token=cluster["n1"].tokens["bob"]))
    assert other["error"]["code"] == -32002


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


def test_the_embedded_sqlite_is_migrated_at_start_and_kept_aside_first(tmp_path):
    """A fresh DATA_DIR starts without `migrate`; a database that holds data is copied
    aside before migrations are applied to it."""
    settings = write_settings(tmp_path, APPS=APPS)
    first = subprocess.Popen([script("zephserver-start"), "--settings", str(settings)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=child_env())
    try:
        lines = []
        for line in first.stdout:
            lines.append(line)
            if line.startswith("zephserver ready on"):
                break
        out = "".join(lines)
        assert "migration(s) applied" in out, out
        assert "Traceback" not in out
    finally:
        run_cli("zephserver-stop", "--settings", str(settings))
        first.wait(30)
        first.stdout.close()
    # data, then a schema one step behind: the next start migrates, keeping a copy
    admin(settings, "adduser", "carol", env=child_env(
        ZEPHSERVER_PASSWORD="carol-pw-123"))
    admin(settings, "migrate", "zephweb", "0001", "-v0")
    result = subprocess.Popen([script("zephserver-start"), "--settings", str(settings)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=child_env())
    try:
        lines = []
        for line in result.stdout:
            lines.append(line)
            if line.startswith("zephserver ready on"):
                break
        out = "".join(lines)
        assert "is kept as" in out, out
        copy = out.split("is kept as ", 1)[1].split(")", 1)[0]
        with sqlite3.connect(copy) as db:
            users = [r[0] for r in db.execute("select username from auth_user")]
        assert users == ["carol"]
    finally:
        run_cli("zephserver-stop", "--settings", str(settings))
        result.wait(30)
        result.stdout.close()
