"""Setting up an agent process's unpacked source: its Procfile command, and a
virtualenv filled by pip when it has a requirements.txt. Runs on the agent's worker
threads; a step's output goes to the process's log; a cancel (the process deleted)
stops a running step at once. Failures are SourceError with the smartmob failure
state (``no procfile``, ``unknown process type``, ``pip install failure``...)."""

import os
import signal
import subprocess
import sys
import threading

from zephserver.launch.output import read_range
from zephserver.launch.process import describe_exit, signal_group
from zephserver.launch.procfile import ProcfileError, parse_procfile
from zephserver.launch.sources import Cancelled, SourceError

STEP_POLL = 0.1  # seconds between looks at a cancel while a step runs


def procfile_command(source: str, process_type: str) -> str:
    """The command of ``process_type`` in the source's Procfile."""
    path = os.path.join(source, "Procfile")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise SourceError("no procfile", "the archive has no Procfile at its root") \
            from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError("no procfile", f"the Procfile cannot be read: {exc}") from None
    try:
        commands = parse_procfile(text)
    except ProcfileError as exc:
        raise SourceError("no procfile", str(exc)) from None
    if process_type not in commands:
        raise SourceError("unknown process type", f"the Procfile has no process type "
                          f"{process_type!r} (it has {', '.join(sorted(commands))})")
    return commands[process_type]


def make_venv(venv: str, source: str, log_path: str, cancel: threading.Event) -> None:
    """A virtualenv without pip of its own (seconds saved), filled by our pip."""
    run_step([sys.executable, "-m", "venv", "--without-pip", venv], source, log_path,
             cancel, "virtual environment failure")
    run_step([sys.executable, "-m", "pip", "--python", os.path.join(venv, "bin", "python"),
              "install", "--quiet", "--disable-pip-version-check", "-r", "requirements.txt"],
             source, log_path, cancel, "pip install failure")


def run_step(argv: list[str], cwd: str, log_path: str, cancel: threading.Event,
             failure: str) -> None:
    with open(log_path, "ab") as out:
        out.write(f"[zephserver] {' '.join(argv[1:4])} ...\n".encode())
        out.flush()
        child = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=out, start_new_session=True)
    while True:
        try:
            code = child.wait(STEP_POLL)
            break
        except subprocess.TimeoutExpired:
            if cancel.is_set():
                signal_group(child.pid, signal.SIGKILL)
                child.wait()
                raise Cancelled() from None
    if code != 0:
        size = os.path.getsize(log_path)
        tail = read_range(log_path, max(0, size - 1500), 1500).decode("utf-8", "replace")
        raise SourceError(failure, f"{describe_exit(code)}: {tail.strip()[-1200:]}")
