import os
import queue
import signal
import sys
import textwrap
import time

import pytest

from tests.support.poll import poll_until
from zephserver.launch.process import Reaper, SpawnError, process_start_time, spawn

pytestmark = pytest.mark.integration


@pytest.fixture
def reaper():
    r = Reaper()
    yield r
    r.close()


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def start(tmp_path, reaper, code):
    exits: queue.Queue = queue.Queue()
    job = spawn(py(code), str(tmp_path), dict(os.environ), str(tmp_path / "log"))
    reaper.watch(job.pid, lambda pid, rc: exits.put((pid, rc)), job.popen)
    return job, exits


def test_exit_code_and_output_are_recorded(tmp_path, reaper):
    """A job's exit code reaches the callback and its output, newline or not, is in the log."""
    job, exits = start(tmp_path, reaper, """
        import sys
        print("line one", flush=True)
        sys.stderr.write("no newline at the end")
        sys.exit(3)
    """)
    assert exits.get(timeout=10) == (job.pid, 3)
    assert (tmp_path / "log").read_text() == "line one\nno newline at the end"
    assert job.popen.returncode == 3


def test_new_session_and_start_time(tmp_path, reaper):
    """The job leads its own session; its start time identifies it while it runs."""
    job, exits = start(tmp_path, reaper, "import time; time.sleep(30)")
    assert os.getsid(job.pid) == job.pid
    assert job.start_time == process_start_time(job.pid) is not None
    reaper.stop_process(job.pid, grace=5)
    assert exits.get(timeout=10) == (job.pid, -signal.SIGTERM)
    assert process_start_time(job.pid) is None


def test_missing_program_and_directory_are_clear_errors(tmp_path):
    """A program or directory that does not exist is a SpawnError naming it."""
    with pytest.raises(SpawnError, match="program not found: /no/such/prog"):
        spawn(["/no/such/prog"], str(tmp_path), {}, str(tmp_path / "log"))
    with pytest.raises(SpawnError, match="not found"):
        spawn([sys.executable, "-c", "pass"], str(tmp_path / "absent"), {},
              str(tmp_path / "log"))


def test_sigterm_ignored_means_sigkill_after_grace(tmp_path, reaper):
    """A program ignoring SIGTERM is killed once the grace period is over."""
    job, exits = start(tmp_path, reaper, """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
    """)
    poll_until(lambda: "ready" in (tmp_path / "log").read_text(), 10, what="ready")
    started = time.monotonic()
    reaper.stop_process(job.pid, grace=0.3)
    assert exits.get(timeout=10) == (job.pid, -signal.SIGKILL)
    assert 0.3 <= time.monotonic() - started < 5


def test_grandchildren_die_with_a_stopped_job(tmp_path, reaper):
    """Stopping a job kills everything it forked, even a grandchild ignoring SIGTERM."""
    job, exits = start(tmp_path, reaper, f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        open({str(tmp_path / "grandchild")!r}, "w").write(str(child.pid))
        time.sleep(60)
    """)
    pid_file = tmp_path / "grandchild"
    grandchild = int(poll_until(lambda: pid_file.exists() and pid_file.read_text(), 10,
                                what="grandchild pid"))
    reaper.stop_process(job.pid, grace=5)
    assert exits.get(timeout=10)[1] == -signal.SIGTERM
    poll_until(lambda: not alive(grandchild) or _is_zombie(grandchild), 5,
               what="grandchild gone")


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_many_short_jobs_leave_no_zombie(tmp_path, reaper):
    """200 short jobs are all reaped: every callback has a code and no zombie is left."""
    exits: queue.Queue = queue.Queue()
    pids = []
    for i in range(200):
        job = spawn(["/bin/true"], str(tmp_path), {}, str(tmp_path / f"log{i}"))
        reaper.watch(job.pid, lambda pid, rc: exits.put((pid, rc)), job.popen)
        pids.append(job.pid)
    results = dict(exits.get(timeout=20) for _ in pids)
    assert set(results) == set(pids)
    assert set(results.values()) == {0}
    assert not any(_is_zombie(p) and alive(p) for p in pids)


def test_watching_a_process_that_is_not_our_child(tmp_path, reaper):
    """A re-adopted pid (not our child) is watched too; its code is unknown (None)."""
    import subprocess

    # sh starts sleep in the background and exits: sleep is reparented away from us.
    out = subprocess.run(["sh", "-c", "sleep 0.3 >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True)
    orphan = int(out.stdout)
    exits: queue.Queue = queue.Queue()
    reaper.watch(orphan, lambda pid, rc: exits.put((pid, rc)))
    assert exits.get(timeout=10) == (orphan, None)
