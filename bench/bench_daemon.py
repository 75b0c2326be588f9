"""Foundation benchmarks (issue 2), each printed beside a floor measured in the same run.

- start -> ready (status answers) and stop -> exit with 20 trivial services (median of 7);
  floor: a bare `python -c pass` start, and a python start that imports zephserver's deps.
- crash -> RUNNING again with the first backoff step 0 (median, p99 of 200);
  floor: a thread waking on an Event.
- control `status` round trip p50/p99 over 1,000 calls; floor: a bare UNIX-socket echo.
- daemon idle CPU over 10 s with 20 services.
"""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time

from _common import REPO, median, pct, report

from tests.support.daemon import (
    DaemonProcess,
    child_env,
    run_cli,
    script,
    short_tmpdir,
    write_settings,
)

TWENTY = [f"tests.support.services/Trivial{i}" for i in range(20)]


def time_cmd(argv: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, env=child_env(), cwd=REPO)
    return time.perf_counter() - t


def bench_start_stop(runs: int = 7) -> None:
    work = short_tmpdir("zb")
    settings = write_settings(work, SERVICE_LIST=TWENTY)
    starts, stops = [], []
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            d = DaemonProcess(settings).start()
            starts.append(time.perf_counter() - t0)
            t1 = time.perf_counter()
            run_cli("zephserver-stop", "--settings", str(settings))
            d.wait_exit(10)
            stops.append(time.perf_counter() - t1)
            d.close()
        floor = median([time_cmd([sys.executable, "-c", "pass"]) for _ in range(runs)])
        imports = median([time_cmd([sys.executable, "-c", "import zephserver.infra.bootstrap, "
                                    "tests.support.services"]) for _ in range(runs)])
        report("start->ready, 20 services (median s)", median(starts), "s",
               "python -c pass", floor, "< 0.5 s")
        report("start->ready, 20 services (median s)", median(starts), "s",
               "python importing the daemon's modules", imports)
        report("stop->exit, 20 services (median s)", median(stops), "s",
               "python -c pass", floor, "< 0.5 s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_restart(n: int = 200) -> None:
    from zephserver.config import settings_from_values
    from zephserver.infra.service import Service
    from zephserver.infra.service_manager import ServiceManager
    from zephserver.states import ServiceState

    crash_at = [0.0]
    go = threading.Event()

    class Bomb(Service):
        name = "bomb"

        def main(self):
            go.wait()
            go.clear()
            crash_at[0] = time.perf_counter()
            raise RuntimeError("boom")

    import tests.support.services as mod
    mod.Bomb = Bomb
    import logging
    logging.disable(logging.CRITICAL)
    work = short_tmpdir("zb")
    manager = ServiceManager(settings_from_values(
        DATA_DIR=str(work), SERVICE_LIST=["tests.support.services/Bomb"],
        SERVICE_BACKOFF_INITIAL=0, SERVICE_MIN_UPTIME=0, SERVICE_MAX_RETRIES=10**9))
    manager.start()
    runner = manager.runner("bomb")
    samples = []
    try:
        manager.wait_started(5)
        for _ in range(n):
            with manager.cond:
                while runner.state is not ServiceState.RUNNING:
                    manager.cond.wait()
                before = runner.tracker.restarts
            go.set()
            with manager.cond:
                while not (runner.state is ServiceState.RUNNING
                           and runner.tracker.restarts > before):
                    manager.cond.wait()
                samples.append(time.perf_counter() - crash_at[0])
    finally:
        go.set()
        manager.stop()
        logging.disable(logging.NOTSET)
        shutil.rmtree(work, ignore_errors=True)
    # floor: another thread waking on an Event
    floor = []
    for _ in range(n):
        ev, woke = threading.Event(), [0.0]

        def waiter(ev=ev, woke=woke):
            ev.wait()
            woke[0] = time.perf_counter()

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.0005)
        t0 = time.perf_counter()
        ev.set()
        t.join()
        floor.append(woke[0] - t0)
    report("crash->RUNNING, backoff 0 (median ms)", median(samples) * 1e3, "ms",
           "thread wake on Event", median(floor) * 1e3, "< 10 ms")
    report("crash->RUNNING, backoff 0 (p99 ms)", pct(samples, 99) * 1e3, "ms",
           "thread wake on Event p99", pct(floor, 99) * 1e3)


def bench_control(n: int = 1000) -> None:
    from zephserver.infra.control_protocol import ControlClient

    work = short_tmpdir("zb")
    settings = write_settings(work, SERVICE_LIST=TWENTY)
    d = DaemonProcess(settings).start()
    try:
        client = ControlClient(str(work / "var" / "zephserver.sock")).connect()
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            client.call("status")
            samples.append(time.perf_counter() - t)
        client.close()
        # floor: bare UNIX socket echo with a 4-byte length frame of similar size
        path = str(work / "echo.sock")
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(path)
        srv.listen(1)

        def echo():
            conn, _ = srv.accept()
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.close()

        threading.Thread(target=echo, daemon=True).start()
        c = socket.socket(socket.AF_UNIX)
        c.connect(path)
        payload = b"x" * 2500
        floor = []
        for _ in range(n):
            t = time.perf_counter()
            c.sendall(payload)
            got = 0
            while got < len(payload):
                got += len(c.recv(65536))
            floor.append(time.perf_counter() - t)
        c.close()
        srv.close()
        report("control status round trip p50", median(samples) * 1e3, "ms",
               "bare UNIX echo p50", median(floor) * 1e3, "< 2 ms")
        report("control status round trip p99", pct(samples, 99) * 1e3, "ms",
               "bare UNIX echo p99", pct(floor, 99) * 1e3)

        import psutil
        proc = psutil.Process(d.pid)
        time.sleep(1.0)  # let boot settle before sampling idle CPU
        c0 = proc.cpu_times()
        t0 = time.monotonic()
        time.sleep(10)
        c1 = proc.cpu_times()
        elapsed = time.monotonic() - t0
        cpu = ((c1.user - c0.user) + (c1.system - c0.system)) / elapsed * 100
        sleeper = subprocess.Popen(["sleep", "12"])
        sp = psutil.Process(sleeper.pid)
        s0 = sp.cpu_times()
        time.sleep(10)
        s1 = sp.cpu_times()
        sleeper.kill()
        floor_cpu = ((s1.user - s0.user) + (s1.system - s0.system)) / 10 * 100
        print(f"daemon idle CPU, 20 services, 10 s: {cpu:.3f} % of a core "
              f"| baseline sleep(1): {floor_cpu:.3f} % | goal < 0.5 %", flush=True)
        print(f"daemon RSS, 20 services: {proc.memory_info().rss / 2**20:.1f} MiB", flush=True)
    finally:
        run_cli("zephserver-stop", "--settings", str(settings))
        d.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.chdir(REPO)
    assert os.path.exists(script("zephserver-start")), "run `make` first"
    bench_start_stop()
    bench_restart()
    bench_control()
