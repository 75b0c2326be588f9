"""Operations end to end: /healthz, /readyz and /metrics on a real daemon, scraped by a
real Prometheus; JSON logs that carry their ids; a rotated log file followed."""

import json
import os
import shutil
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import child_env, short_tmpdir, write_settings
from tests.support.jobs import job_apps, kill_jobs_under, submit, wait_job
from tests.support.poll import poll_until
from tests.support.postgres import free_port
from tests.support.prometheus import Prometheus
from tests.support.web import Ws, run, start_with_users
from zephserver import defaults, metrics

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
CLUSTER_ONLY = {"zephserver_cluster_peers_up", "zephserver_cluster_peer_up",
                "zephserver_cluster_messages_buffered", "zephserver_cluster_messages_lost"}


def get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}
                                     if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def start(work, **settings):
    values = {"APPS": job_apps(work), "DJANGO_SETTINGS_MODULE":
              "tests.support.django_test_settings", "JOB_PROGRESS_INTERVAL": 0.0,
              "TASKS_PATH": {**defaults.TASKS_PATH,
                             "boom": "tests.support.tasks/BoomTask"}, **settings}
    return start_with_users(write_settings(work, **values), child_env())


@pytest.fixture(scope="module")
def server():
    work = short_tmpdir()
    daemon = start(work, LOG_FORMAT="json")
    daemon.work = work
    yield daemon
    daemon.cli("zephserver-stop")
    daemon.close()
    kill_jobs_under(work)
    shutil.rmtree(work, ignore_errors=True)


def samples(text: str) -> dict[str, list]:
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def value(found: dict[str, list], name: str, **labels: str) -> float:
    return sum(s.value for s in found.get(name, [])
               if all(s.labels.get(k) == v for k, v in labels.items()))


def test_health_and_readiness_need_no_login(server):
    status, body = get(server.url + "/healthz")
    assert status == 200
    assert json.loads(body)["status"] == "alive"
    status, body = get(server.url + "/readyz")
    assert (status, json.loads(body)["problems"]) == (200, [])


def test_metrics_after_a_job_name_every_family(server):
    async def scenario():
        ws = await Ws.connect(server.url, token=server.tokens["alice"])
        job = await submit(ws, "echo", text="metrics")
        done = await wait_job(ws, job["id"], {"SUCCEEDED"})
        boom = await ws.call("boom", {})
        await ws.aclose()
        return done, boom
    job, boom = run(scenario())
    assert boom["error"]["code"] == -32603
    status, text = get(server.url + "/metrics")
    assert status == 200
    found = samples(text)
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    for name, kind, _ in metrics.catalogue():
        if name not in CLUSTER_ONLY:
            assert families.get(name) == kind, name
    assert value(found, "zephserver_jobs", app="echo", state="SUCCEEDED") >= 1
    assert value(found, "zephserver_spawns_total", app="echo") >= 1
    assert value(found, "zephserver_job_exits_total", kind="batch", outcome="succeeded") >= 1
    assert value(found, "zephserver_submit_to_running_seconds_count") >= 1
    assert value(found, "zephserver_queue_wait_seconds_count") >= 1
    assert value(found, "zephserver_rpc_requests_total", method="jobs.submit",
                 outcome="ok") >= 1
    assert value(found, "zephserver_rpc_requests_total", method="boom",
                 outcome="-32603") == 1
    assert value(found, "zephserver_rpc_duration_seconds_count", method="jobs.submit") >= 1
    assert value(found, "zephserver_service_state", service="jobs", state="RUNNING") == 1
    assert value(found, "zephserver_log_bytes_written_total", log="daemon") > 0
    assert value(found, "zephserver_log_bytes_written_total", log="jobs") >= len("metrics\n")
    assert value(found, "process_resident_memory_bytes") > 0

    # The JSON log: every line parses; the job's lines carry its id and the node, the
    # failed request's line its connection and JSON-RPC ids.
    lines = [json.loads(line) for line in
             (server.work / "var" / "zephserver.log").read_text().splitlines()]
    assert all(line["node"] for line in lines)
    assert any(line.get("job") == job["id"] and "SUCCEEDED" in line["message"]
               for line in lines)
    failed = next(line for line in lines if line["message"].startswith("task boom failed"))
    assert failed["method"] == "boom"
    assert failed["conn"]
    assert failed["rpc_id"] is not None
    assert "ValueError" in failed["exc"]


def test_a_rotated_log_file_is_reopened(server):
    log = server.work / "var" / "zephserver.log"
    os.rename(log, log.with_suffix(".log.1"))  # as logrotate does (no copytruncate)

    async def scenario():
        ws = await Ws.connect(server.url, token=server.tokens["alice"])
        job = await submit(ws, "echo", text="rotated")
        await wait_job(ws, job["id"], {"SUCCEEDED"})
        await ws.aclose()
        return job
    job = run(scenario())
    written = poll_until(lambda: log.exists() and log.read_text(), 10, what="a new log file")
    assert any(json.loads(line).get("job") == job["id"] for line in written.splitlines())


def test_a_real_prometheus_scrapes_the_daemon(server):
    with Prometheus(server.url.removeprefix("http://")) as prometheus:
        try:
            found = poll_until(lambda: prometheus.query('zephserver_service_state{service='
                                                        '"jobs",state="RUNNING"}'),
                               30, 0.2, "a zephserver series in Prometheus")
        except AssertionError:
            print(prometheus.output())
            raise
    assert found[0]["value"][1] == "1"


def test_a_fatal_service_makes_readyz_503(workdir):
    settings = {"SERVICE_LIST": [*defaults.SERVICE_LIST, "tests.support.services/Crasher"],
                "SERVICE_MAX_RETRIES": 0}
    daemon = start(workdir, **settings)
    try:
        status, body = get(daemon.url + "/readyz")
        assert status == 503
        assert json.loads(body)["problems"] == ["service crasher is FATAL"]
        assert get(daemon.url + "/healthz")[0] == 200
    finally:
        daemon.cli("zephserver-stop")
        daemon.close()


def test_on_an_address_of_their_own_and_behind_a_staff_token(workdir):
    port = free_port()
    daemon = start(workdir, OPS_ADDRESS=f"127.0.0.1:{port}", OPS_REQUIRE_TOKEN=True)
    try:
        ops = f"http://127.0.0.1:{port}"
        assert get(ops + "/metrics")[0] == 401
        assert get(ops + "/readyz", daemon.tokens["alice"])[0] == 401
        status, text = get(ops + "/metrics", daemon.tokens["boss"])
        assert status == 200
        assert "zephserver_service_state" in text
        assert get(ops + "/healthz", daemon.tokens["boss"])[0] == 200
        assert get(daemon.url + "/metrics")[0] == 404  # not on PORT_ZEPH then
    finally:
        daemon.cli("zephserver-stop")
        daemon.close()
