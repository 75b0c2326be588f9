"""Run the real daemon as a child process through its installed console scripts."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from tests.support.poll import poll_until

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def script(name: str) -> str:
    return str(BIN / name)


def short_tmpdir(prefix: str = "zt", parent: str = "/tmp") -> Path:
    """A directory with a short path (UNIX socket paths are limited to 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def write_settings(directory: Path, name: str = "settings.py", **values: Any) -> Path:
    values.setdefault("DATA_DIR", str(directory / "var"))
    # The suite runs as root and its apps run as the daemon does, on purpose (the run-as
    # tests name their accounts).
    values.setdefault("RUN_AS", "root")
    values.setdefault("PORT_ZEPH", 0)
    path = directory / name
    path.write_text("".join(f"{k} = {v!r}\n" for k, v in values.items()))
    return path


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def fresh_interpreter(code: str, timeout: float, **env: str) -> dict:
    """Run ``code`` in a new interpreter whose environment holds none of the settings
    zephserver/interpreter.py chooses (``env`` adds the operator's own); the JSON it
    prints."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("PYTHONMALLOC", "GLIBC_TUNABLES", "PYTHONOPTIMIZE")}
    clean.update(env, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=clean, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def run_cli(*args: str, env: dict | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a console script (``zephserver-status``...) to completion."""
    return subprocess.run([script(args[0]), *args[1:]], capture_output=True, text=True,
                          env=env or child_env(), timeout=timeout, cwd=REPO)


class DaemonProcess:
    """``zephserver-start --settings F`` in its own session, its output collected."""

    def __init__(self, settings: Path, env: dict | None = None,
                 prefix: list[str] | None = None) -> None:
        self.settings = settings
        self.env = env or child_env()
        self.prefix = prefix or []  # (e.g. a network namespace's nsenter)
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    def start(self, wait: bool = True, timeout: float = 30) -> "DaemonProcess":
        self.proc = subprocess.Popen(
            [*self.prefix, script("zephserver-start"), "--settings", str(self.settings)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env,
            cwd=REPO, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True, name="test-daemon-out")
        self._reader.start()
        if wait:
            self.wait_ready(timeout)
        return self

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("zephserver ready on "):
                self._ready.set()

    @property
    def url(self) -> str:
        line = next(x for x in self.lines if x.startswith("zephserver ready on "))
        return line.split()[3]  # "zephserver ready on URL[ (degraded: ...)]"

    def wait_ready(self, timeout: float = 30) -> None:
        if not self._ready.wait(timeout):
            raise AssertionError(f"daemon not ready after {timeout}s:\n{self.output}")

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_mib(self) -> float:
        """The daemon's resident memory now."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def cli(self, name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return run_cli(name, "--settings", str(self.settings), *args, env=self.env,
                       timeout=timeout)

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(5)
        return code

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def close(self) -> None:
        """Teardown: kill the whole process group if anything is left."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def wait_pid_gone(pid: int, timeout: float = 10) -> None:
    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    poll_until(gone, timeout, what=f"pid {pid} to exit")
