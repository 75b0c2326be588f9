"""Fifty session POSTs at once for five ports: five sessions, each on its own port,
forty-five clear refusals, and every port free again once the sessions are stopped."""

import threading
import time

import pytest

from tests.reliability.conftest import scale
from tests.support.daemon import child_env, short_tmpdir, write_settings
from tests.support.jobs import stop_site
from tests.support.poll import poll_until
from tests.support.sessions import free_port_range, rest
from tests.support.web import start_with_users

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PORTS = 5
POSTS = scale(50, 200)


@pytest.fixture
def server():
    work = short_tmpdir("zp")
    low, high = free_port_range(PORTS, 26500)
    apps = {"viz": {"kind": "session", "argv": ["/bin/sh", "-c", "echo ready; exec sleep 600"],
                    "ready_line": "ready", "grace": 1, "port_range": [low, high],
                    "resources": {"cores": 0}}}
    daemon = start_with_users(write_settings(
        work, APPS=apps, LAUNCHER_ENDPOINT="/paraview", LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="tests.support.django_test_settings"), child_env())
    daemon.ports = set(range(low, high + 1))
    yield daemon
    stop_site(daemon, work)


def post_all(server, count: int) -> list[tuple[int, dict, dict]]:
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def one(i: int) -> None:
        who = ("alice", "bob")[i % 2]
        barrier.wait()
        results[i] = (*rest("POST", server.url + "/paraview", server.tokens[who],
                            {"application": "viz"}), who)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_fifty_posts_for_five_ports(server, figure):
    started = time.monotonic()
    results = post_all(server, POSTS)
    took = time.monotonic() - started
    won = [(body, who) for status, body, _, who in results if status == 200]
    refused = [body for status, body, _, _ in results if status != 200]
    ports = [body["port"] for body, _ in won]
    assert len(won) == PORTS, results
    assert sorted(ports) == sorted(server.ports)  # each port handed out once
    assert all("no free port" in body["error"] for body in refused), refused
    for body, who in won:
        status, _, _ = rest("DELETE", f"{server.url}/paraview/{body['id']}",
                            server.tokens[who])
        assert status == 200

    def all_free_again():
        again = post_all(server, PORTS)
        if [s for s, _, _, _ in again] == [200] * PORTS:
            return again
        for status, body, _, who in again:  # not yet: give back what was taken
            if status == 200:
                rest("DELETE", f"{server.url}/paraview/{body['id']}", server.tokens[who])
        return None

    again = poll_until(all_free_again, 20, what="the five ports free again")
    assert sorted(body["port"] for _, body, _, _ in again) == sorted(server.ports)
    figure(f"{POSTS} concurrent session POSTs for {PORTS} ports in {took:.2f} s: "
           f"{len(won)} sessions on distinct ports, {len(refused)} refused 'no free port', "
           f"0 ports handed out twice; all {PORTS} free again after the stops")
