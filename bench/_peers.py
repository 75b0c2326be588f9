"""circus and supervisord, each supervising N `sleep` processes, for the benchmarks to
measure beside zephserver in the same run. They live in a virtualenv of their own
(bench/peers.txt), made on first use under ~/.cache; PEERS=0 skips them."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = Path(os.environ.get("PEERS_VENV", Path.home() / ".cache" / "zephserver-bench-peers"))


def available() -> bool:
    """Whether the peers are installed (installing them now if need be)."""
    if os.environ.get("PEERS") == "0":
        return False
    stamp = VENV / ".installed"
    if stamp.exists() and stamp.read_text() == (HERE / "peers.txt").read_text():
        return True
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet", "-r",
                        str(HERE / "peers.txt")], check=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"(peers not installed: {exc}; PEERS=0 skips them)", flush=True)
        return False
    stamp.write_text((HERE / "peers.txt").read_text())
    return True


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _wait_children(pid: int, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(_children(pid)) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the peer started {len(_children(pid))} of {n} processes")
        time.sleep(0.05)


@contextmanager
def circusd(n: int) -> Iterator[int]:
    """circusd supervising ``n`` sleeps; yields its pid once all run."""
    with _supervising("zpc", "circus.ini", lambda work: (
            f"[circus]\nendpoint = ipc://{work}/ctl\npubsub_endpoint = ipc://{work}/pub\n"
            f"statsd = False\n\n[watcher:sleepers]\ncmd = sleep 1000\n"
            f"numprocesses = {n}\nwarmup_delay = 0\n"), ["circusd"], n) as pid:
        yield pid


@contextmanager
def supervisord(n: int) -> Iterator[int]:
    """supervisord supervising ``n`` sleeps; yields its pid once all run."""
    with _supervising("zps", "supervisord.conf", lambda work: (
            f"[supervisord]\nnodaemon=true\nlogfile={work}/s.log\npidfile={work}/s.pid\n"
            f"[unix_http_server]\nfile={work}/s.sock\n"
            f"[program:sleepers]\ncommand=sleep 1000\nnumprocs={n}\n"
            f"process_name=%(program_name)s_%(process_num)d\nstartsecs=0\n"),
            ["supervisord", "-c"], n) as pid:
        yield pid


@contextmanager
def _supervising(prefix: str, name: str, config: Callable[[Path], str], command: list[str],
                 n: int) -> Iterator[int]:
    """The peer ``command`` run on a config file ``name`` holding ``config(its folder)``,
    until it has ``n`` children; stopped (and what it left killed) afterwards."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    path = work / name
    path.write_text(config(work))
    proc = subprocess.Popen([str(VENV / "bin" / command[0]), *command[1:], str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_children(proc.pid, n)
        yield proc.pid
    finally:
        _stop(proc, work)


def _stop(proc: subprocess.Popen, work: Path) -> None:
    children = _children(proc.pid)
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid in children:  # what it did not stop
        with suppress(ProcessLookupError):
            os.kill(pid, 9)
    shutil.rmtree(work, ignore_errors=True)
