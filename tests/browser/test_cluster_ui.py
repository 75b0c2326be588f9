"""The web UI of a cluster in a real browser: two real daemons on one real PostgreSQL.
The nodes view shows each node's state and the jobs on it, the job table shows where a
job runs, and a page whose node dies moves to the other node by itself."""

import concurrent.futures
import signal

import pytest

from tests.support.cluster import node_settings, prepare_database, start_nodes, stop_nodes
from tests.support.daemon import child_env, short_tmpdir
from tests.support.postgres import Postgres
from tests.support.sessions import free_port_range
from tests.support.web import Ws, run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def cluster():
    work = short_tmpdir("zc")
    low, _ = free_port_range(4, 26000)
    nodes = [{"hostname": f"n{i}", "address": "127.0.0.1", "port": low + i - 1,
              "url": f"http://127.0.0.1:{low + 1 + i}"} for i in (1, 2)]
    apps = {"nap": {"argv": ["sleep", "600"], "grace": 1, "resources": {"cores": 1},
                    "nodes": ["n2"]}}
    daemons: dict = {}
    with Postgres() as pg:
        url = pg.database("ui")
        env = child_env()
        paths = {n["hostname"]: node_settings(
            work, n["hostname"], nodes, url, APPS=apps, PORT_ZEPH=low + 1 + i,
            DJANGO_SETTINGS_MODULE="tests.support.django_test_settings",
            RESOURCES={"cores": 2, "memory": 2048, "licenses": {"dyna": 3}})
            for i, n in enumerate(nodes, start=1)}
        try:
            tokens = prepare_database(paths["n1"], env)
            start_nodes(paths, env, tokens, daemons)
            yield daemons
        finally:
            stop_nodes(daemons, work)


def submit(node, app):
    """(on a thread of its own: Playwright's sync API holds this thread's event loop)"""
    async def go():
        ws = await Ws.connect(node.url, token=node.tokens["alice"])
        try:
            return (await ws.call("jobs.submit", {"app": app}))["result"]["id"]
        finally:
            await ws.aclose()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: run(go())).result(30)


def test_nodes_view_job_node_and_moving_to_another_node(cluster, page_for):
    n1 = cluster["n1"]
    page = page_for(n1)
    page.wait_for_selector("#conn.connected:has-text('connected to n1')")
    # the page carries every node's URL (it can move even before it first connects)
    assert cluster["n2"].url in page.get_attribute("#page", "data-nodes")
    job_id = submit(n1, "nap")  # asked of n1, runs on n2 (its app's nodes)
    page.goto(n1.url + "/#/nodes")
    page.wait_for_selector("#nodes tr[data-node=n1][data-state=up]")
    row = page.wait_for_selector(f"#nodes tr[data-node=n2][data-state=up] td.jobs "
                                 f"a:has-text('{job_id}')")
    assert row is not None
    n2_row = page.inner_text("#nodes tr[data-node=n2]")
    assert "1 / 2" in n2_row, n2_row  # its cores in use
    assert "dyna 0 / 3" in n2_row, n2_row
    assert "2 of 2 nodes up" in page.inner_text("#nodes-note")
    page.goto(n1.url + "/#/jobs")
    page.wait_for_selector(f"#jobs tr[data-id='{job_id}'][data-state=RUNNING] "
                           "td.node:has-text('n2')")
    # n1 dies: the open page moves to n2 by itself and keeps working
    n1.kill(signal.SIGKILL)
    n1.wait_exit()
    page.wait_for_selector("#conn.connected:has-text('connected to n2')", timeout=20000)
    row = f"#jobs tr[data-id='{job_id}']"
    page.wait_for_selector(f"{row}[data-state=RUNNING]")
    page.click(f"{row} button:has-text('Cancel')")
    page.wait_for_selector(f"{row}[data-state=CANCELLED]")
    page.goto(cluster["n2"].url + "/#/nodes")  # (n1's pages are gone with it)
    page.wait_for_selector("#nodes tr[data-node=n1][data-state=unreachable]")
