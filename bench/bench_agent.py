"""Process agent benchmark (issue 6), each figure beside a floor measured in the same run.

1. Restart latency: kill -9 of a supervised child until the new pid has exec'd its
   program, p50/p99 over 50 kills (first backoff step 0). Floor: posix_spawn of the same
   shell command until its program has exec'd.
2. Console: a process printing as fast as it can; lines/s reaching one attached console,
   and the process's own speed with 0 and with 5 consoles attached.
3. Daemon RSS and idle CPU with 100 supervised `sleep` processes.

    python bench/bench_agent.py      (LINES=3000000 by default)
"""

import json
import os
import shutil
import signal
import sys
import time

from _common import REPO, cpu_seconds, median, pct, rss_mib, start_daemon

from tests.support.archives import ArchiveServer, make_zip
from tests.support.console import RawConsole
from tests.support.daemon import run_cli, short_tmpdir, write_settings
from tests.support.sessions import rest

LINES = int(os.environ.get("LINES", "3000000"))
KILLS = 50
PRODUCER = """
import os, sys, time
while not os.path.exists("go"):
    time.sleep(0.005)
n = int(sys.argv[1])
write = sys.stdout.write
t = time.perf_counter()
for i in range(n):
    write(f"line {i:9d} of the flood, as a program prints its log\\n")
sys.stdout.flush()
print(f"RATE {n / (time.perf_counter() - t):.0f}", flush=True)
time.sleep(600)
"""
PROCFILE = f"""sleeper: echo $$ > pid.txt; exec sleep 600
flood: exec "$PY" producer.py {LINES}
"""


def wait_exec(pidfile: str, old: int | None, deadline: float) -> int:
    """Busy-wait until pidfile names a new pid whose program is sleep."""
    while time.monotonic() < deadline:
        try:
            with open(pidfile) as f:
                pid = int(f.read().strip() or 0)
            if pid and pid != old and os.readlink(f"/proc/{pid}/exe").endswith("sleep"):
                return pid
        except (OSError, ValueError):
            pass
        time.sleep(0.0002)
    raise TimeoutError("no restart")


def floor_exec(tmp: str) -> float:
    pidfile = os.path.join(tmp, "floor.pid")
    t = time.perf_counter()
    pid = os.posix_spawn("/bin/sh", ["/bin/sh", "-c", f"echo $$ > {pidfile}; exec sleep 600"],
                         os.environ, setsid=True)
    wait_exec(pidfile, None, time.monotonic() + 10)
    elapsed = (time.perf_counter() - t) * 1e3
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.unlink(pidfile)
    return elapsed


def create(url: str, token: str, archives: ArchiveServer, node: str, ptype: str) -> dict:
    status, doc, _ = rest("POST", url + "/agent/create-process", token, {
        "app": "bench", "node": node, "process_type": ptype,
        "source_url": archives.url + "/app.zip", "env": {"PY": sys.executable}})
    assert status == 201, doc
    return doc


def wait_running(url: str, token: str, slug: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _, doc, _ = rest("GET", f"{url}/agent/process-status/{slug}", token)
        if doc.get("state") == "running":
            return doc
        time.sleep(0.01)
    raise TimeoutError(slug)


def bench_restart(url: str, token: str, archives: ArchiveServer, agent_dir: str,
                  tmp: str) -> None:
    floor = [floor_exec(tmp) for _ in range(KILLS)]
    doc = wait_running(url, token, create(url, token, archives, "restart", "sleeper")["slug"])
    pidfile = os.path.join(agent_dir, str(doc["id"]), "source", "pid.txt")
    pid = wait_exec(pidfile, None, time.monotonic() + 10)
    samples = []
    for _ in range(KILLS):
        time.sleep(0.06)  # longer than AGENT_MIN_UPTIME: each kill meets the first step
        t = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        pid = wait_exec(pidfile, pid, time.monotonic() + 10)
        samples.append((time.perf_counter() - t) * 1e3)
    print(f"restart after kill -9, {KILLS} kills: p50 {median(samples):.2f} ms, p99 "
          f"{pct(samples, 99):.2f} ms | baseline spawn until exec'd: p50 {median(floor):.2f} "
          f"ms, p99 {pct(floor, 99):.2f} ms | ratio p50 {median(samples) / median(floor):.2f}"
          f" | goal p50 < 20 ms (circus 50-600 ms, supervisord ~1 s)", flush=True)
    rest("POST", f"{url}/agent/delete-process/{doc['slug']}", token, {})


def flood_run(url: str, token: str, archives: ArchiveServer, agent_dir: str,
              node: str, consoles: int, count: bool = False) -> tuple[float, list]:
    doc = wait_running(url, token, create(url, token, archives, node, "flood")["slug"])
    readers = [RawConsole(doc["attach"], token, count) for _ in range(consoles)]
    time.sleep(0.3)  # attached, replay received
    for r in readers:
        r.lines = r.skipped = 0
        r.first = 0.0
    source = os.path.join(agent_dir, str(doc["id"]), "source")
    log = os.path.join(agent_dir, str(doc["id"]), "output.log")
    open(os.path.join(source, "go"), "w").close()
    rate = None
    deadline = time.monotonic() + 120
    while rate is None and time.monotonic() < deadline:
        time.sleep(0.05)
        rate = last_rate(log)
    time.sleep(1.0)  # what the consoles still had on the way
    rest("POST", f"{url}/agent/delete-process/{doc['slug']}", token, {})
    for r in readers:
        r.close()
    return rate or 0.0, readers


def last_rate(log: str) -> float | None:
    with open(log, "rb") as f:
        f.seek(max(0, os.path.getsize(log) - 200))
        for line in f.read().splitlines():
            if line.startswith(b"RATE"):
                return float(line.split()[1])
    return None


def bench_console(url: str, token: str, archives: ArchiveServer, agent_dir: str) -> None:
    rates0, rates5 = [], []
    for i in range(3):  # alternate: this machine's speed drifts
        rates0.append(flood_run(url, token, archives, agent_dir, f"c0-{i}", 0)[0])
        rates5.append(flood_run(url, token, archives, agent_dir, f"c5-{i}", 5)[0])
    rate1, (one,) = flood_run(url, token, archives, agent_dir, "c1", 1, count=True)
    took = one.last - one.first
    print(f"console: one console received {one.lines:,} of {LINES:,} lines at "
          f"{one.lines / took / 1e6:.2f} M lines/s ({one.skipped:,} bytes skipped ahead; the "
          f"process printed at {rate1 / 1e6:.2f} M lines/s) | process alone "
          f"{median(rates0) / 1e6:.2f} M lines/s, with 5 consoles "
          f"{median(rates5) / 1e6:.2f} M lines/s | cost of 5 consoles "
          f"{(1 - median(rates5) / median(rates0)) * 100:.1f}% | goal < 10%", flush=True)


def bench_idle(url: str, token: str, archives: ArchiveServer, pid: int) -> None:
    docs = [create(url, token, archives, f"idle{i}", "sleeper") for i in range(100)]
    for doc in docs:
        wait_running(url, token, doc["slug"])
    time.sleep(1)
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(10)
    cpu = (cpu_seconds(pid) - c0) / (time.monotonic() - t0) * 100
    print(f"100 supervised sleep processes: daemon RSS {rss_mib(pid):.1f} MiB, idle CPU "
          f"{cpu:.2f}% of a core | goal < 80 MiB, < 0.5% (circus 31 MiB / 1.4%, supervisord "
          f"27 MiB / 0.1%)", flush=True)
    for doc in docs:
        rest("POST", f"{url}/agent/delete-process/{doc['slug']}", token, {})


def main() -> None:
    os.chdir(REPO)
    work = short_tmpdir("zb")
    archive_dir = work / "archives"
    archive_dir.mkdir()
    make_zip(archive_dir / "app.zip", {"Procfile": PROCFILE, "producer.py": PRODUCER})
    archives = ArchiveServer(archive_dir)
    settings = write_settings(work, LOG_LEVEL="WARNING", AGENT_BACKOFF_INITIAL=0.0,
                              AGENT_MIN_UPTIME=0.05, WS_MAX_IN_FLIGHT=256)
    daemon, token = start_daemon(settings, staff=True)
    pid = json.loads(daemon.cli("zephserver-status", "--json").stdout)["pid"]
    agent_dir = str(work / "var" / "agent")
    try:
        bench_idle(daemon.url, token, archives, pid)  # first: a fresh daemon's memory
        bench_restart(daemon.url, token, archives, agent_dir, str(work))
        bench_console(daemon.url, token, archives, agent_dir)
    finally:
        run_cli("zephserver-stop", "--settings", str(settings))
        daemon.close()
        archives.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
