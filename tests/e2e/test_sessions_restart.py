"""Sessions from a wslink launcher file survive kill -9 of the daemon: re-adopted, same
ports, proxy map unchanged."""

import os
import shutil
import signal

import pytest

from tests.e2e.test_sessions import _rpc, start_server
from tests.support.daemon import DaemonProcess, short_tmpdir
from tests.support.jobs import is_zombie_or_gone, kill_jobs_under
from tests.support.poll import poll_until
from tests.support.sessions import free_port_range, rest
from zephserver.launch.ports import bind_free

pytestmark = pytest.mark.e2e

LAUNCHER_FILE = """{
    // =====================================
    // A wslink launcher file, taken as is
    // =====================================
    "configuration": {
        "host" : "localhost",
        "port" : 9999,                          // ours is PORT_ZEPH: reported
        "endpoint": "visualizer",
        "content": "/srv/www",                  /* not served by us: reported */
        "proxy_file" : "%(work)s/proxy.map",
        "sessionURL" : "ws://${host}:${port}/ws",
        "timeout" : 20,
        "log_dir" : "%(work)s/viz-logs",
        "fields" : ["file", "updir"],
        "sanitize": {
            "file": {"type": "inList", "list": ["a.vtk", "b.vtk"], "default": "a.vtk"}
        }
    },
    "sessionData" : { "updir": "/Home" },
    "resources" : [ { "host" : "localhost", "port_range" : [%(low)d, %(high)d] } ],
    "properties" : { "shell": "/bin/sh" },
    "apps" : {
        "cone" : {
            "cmd" : [ "${shell}", "-c", "echo Starting factory; exec sleep 600", "cone",
                      "--port", "$port", "--file", "${file}", "--authKey", "${secret}" ],
            "ready_line" : "Starting factory"
        }
    }
}
"""


def details(daemon, session_id):
    ok, view, error = _rpc(daemon, "sessions.get", {"id": int(session_id)})
    assert ok, error
    return view


def test_kill9_with_five_live_sessions_then_restart():
    work = short_tmpdir()
    low, high = free_port_range(6)
    config = work / "launcher.json"
    config.write_text(LAUNCHER_FILE % {"work": work, "low": low, "high": high})
    daemon = start_server(work, apps={}, LAUNCHER_CONFIG=str(config), LAUNCHER_PROXY_FILE=None)
    try:
        out = daemon.output
        assert "configuration.content: not supported" in out
        assert "configuration.port 9999" in out
        url = daemon.url + "/visualizer"
        token = daemon.tokens["alice"]
        sessions = []
        for i in range(5):
            status, body, _ = rest("POST", url, token, {"application": "cone",
                                                        "file": "ab"[i % 2] + ".vtk"})
            assert status == 200, body
            assert body["updir"] == "/Home"
            assert body["secret"]
            assert "port" not in body  # not among the file's fields
            sessions.append(body)
        assert rest("POST", url, token, {"application": "cone", "file": "c.vtk"})[0] == 400
        # the REST answers show the file's fields only: the job is read over JSON-RPC
        jobs = {s["id"]: details(daemon, s["id"])["job"] for s in sessions}
        ports = sorted(int(job["port"]) for job in jobs.values())
        assert ports == list(range(low, low + 5))
        proxy = (work / "proxy.map").read_text()
        assert proxy == "".join(f"{s['id']} localhost:{jobs[s['id']]['port']}\n"
                                for s in sessions)
        logs = sorted(os.listdir(work / "viz-logs"))
        assert logs == sorted(f"{s['id']}.txt" for s in sessions)
        pids = {i: job["pid"] for i, job in jobs.items()}

        daemon.kill(signal.SIGKILL)
        daemon.wait_exit()
        assert not any(is_zombie_or_gone(pid) for pid in pids.values())
        daemon.close()
        daemon = DaemonProcess(daemon.settings, daemon.env).start()
        daemon.tokens = {"alice": token}
        url = daemon.url + "/visualizer"
        for s in sessions:
            status, body, _ = rest("GET", f"{url}/{s['id']}", token)
            assert status == 200, body
            assert body == s  # the same answer as before the restart
            view = details(daemon, s["id"])
            assert (view["state"], view["job"]["pid"], view["job"]["port"]) == \
                ("RUNNING", pids[s["id"]], jobs[s["id"]]["port"])
        assert (work / "proxy.map").read_text() == proxy
        # the five ports are still reserved: a new session gets the sixth
        status, sixth, _ = rest("POST", url, token, {"application": "cone"})
        assert status == 200, sixth
        assert int(details(daemon, sixth["id"])["job"]["port"]) == high
        status, refused, _ = rest("POST", url, token, {"application": "cone"})
        assert status == 503, refused
        for s in [*sessions, sixth]:
            assert rest("DELETE", f"{url}/{s['id']}", token)[0] == 200
        poll_until(lambda: all(bind_free(p) for p in range(low, high + 1)), 10,
                   what="every port free")
        poll_until(lambda: (work / "proxy.map").read_text() == "", 10, what="empty proxy map")
        assert all(is_zombie_or_gone(pid) for pid in pids.values())
    finally:
        daemon.cli("zephserver-stop")
        daemon.close()
        kill_jobs_under(work)
        print(daemon.output[-4000:])
        shutil.rmtree(work, ignore_errors=True)
