"""The output follower (inotify, offsets, backpressure) and the shim, with real files and
real processes."""

import os
import signal
import subprocess
import threading

from tests.support.poll import poll_until
from zephserver.launch import shim
from zephserver.launch.output import Follower, Tail, read_range, utf8_cut


def test_utf8_cut_never_splits_a_character():
    text = "é€😀".encode()
    for n in range(len(text) + 1):
        cut = utf8_cut(text[:n])
        text[:cut].decode()  # never raises
        assert cut in (0, 2, 5, 9)
        assert cut <= n


def test_follower_gets_every_byte_once_with_offsets(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"already there\n")
    got, done = [], threading.Event()
    tail = Tail(chunk=4096)
    try:
        tail.follow(Follower(str(path), 0, lambda off, data: got.append((off, data)),
                             done=lambda end: done.set()))
        with open(path, "ab") as f:
            for i in range(2000):
                f.write(b"line %d\n" % i)
                if i % 100 == 0:
                    f.flush()
            f.write(b"no newline")
        tail.finish(str(path))
        assert done.wait(10)
    finally:
        tail.close()
    offset = 0
    for off, data in got:
        assert off == offset
        offset += len(data)
    assert b"".join(d for _, d in got) == path.read_bytes()
    assert tail.counts() == {"files": 0, "followers": 0}


def test_a_consumer_that_is_behind_waits_without_loss(tmp_path):
    path = tmp_path / "log"
    path.write_bytes(b"x" * 100_000)
    ready = threading.Event()
    got = bytearray()
    fast = bytearray()
    tail = Tail(chunk=10_000)
    try:
        tail.follow(Follower(str(path), 0, lambda off, data: got.extend(data),
                             ready=ready.is_set))
        tail.follow(Follower(str(path), 0, lambda off, data: fast.extend(data)))
        poll_until(lambda: len(fast) == 100_000, 10)  # the slow one does not hold it back
        # While one waits (writes then wake nobody until the retry), what another file
        # gets later still comes, every byte.
        other, later = tmp_path / "other", bytearray()
        other.write_bytes(b"")
        tail.follow(Follower(str(other), 0, lambda off, data: later.extend(data)))
        with open(other, "ab") as f:
            for i in range(50):
                f.write(b"line %d\n" % i)
                f.flush()
        poll_until(lambda: bytes(later) == other.read_bytes(), 10)
        assert got == b""
        ready.set()
        poll_until(lambda: len(got) == 100_000, 10)
    finally:
        tail.close()
    assert read_range(str(path), 99_990, 100) == b"x" * 10
    assert read_range(str(path), 200_000, 100) == b""


def run_shim(tmp_path, argv):
    meta = shim.meta_files(str(tmp_path / "job"))
    os.makedirs(os.path.dirname(meta.pid), exist_ok=True)
    return meta, subprocess.Popen(shim.wrap(argv, meta, str(tmp_path)),
                                  start_new_session=True)


def test_the_files_of_a_job_an_older_daemon_started_are_found(tmp_path):
    """A job started before an upgrade keeps its files where that daemon put them: a
    directory per job beside it, or, older still, the job's own directory."""
    job_dir = tmp_path / "7"
    job_dir.mkdir()
    (job_dir / shim.STATUS_FILE).write_text("3\n")
    assert shim.recorded_status(shim.found_meta(str(job_dir))) == 3
    per_job = tmp_path / shim.META_DIR / "7"
    per_job.mkdir(parents=True)
    (per_job / shim.STATUS_FILE).write_text("4\n")
    assert shim.recorded_status(shim.found_meta(str(job_dir))) == 4
    meta = shim.meta_files(str(job_dir))
    with open(meta.status, "w") as f:  # (a status alone is enough to know the layout)
        f.write("5\n")
    assert shim.found_meta(str(job_dir)) == meta
    assert shim.recorded_status(meta) == 5
    with open(meta.pid, "w") as f:
        f.write("123\n")
    assert shim.found_meta(str(job_dir)) == meta


def test_shim_records_exit_status_and_pid(tmp_path):
    meta, proc = run_shim(tmp_path, ["sh", "-c", "exit 42"])
    assert proc.wait(10) == 42
    assert shim.recorded_status(meta) == 42
    assert shim.recorded_pid(meta) == proc.pid


def test_shim_survives_the_group_sigterm_and_reports_the_programs_status(tmp_path):
    meta, proc = run_shim(tmp_path, ["sleep", "30"])
    poll_until(lambda: shim.recorded_pid(meta) == proc.pid, 10)
    assert shim.is_shim_of(proc.pid, meta)
    # the program runs under the shim (exec'd: before exec the forked shell still has the
    # shim's TERM trap, and a TERM then would only be caught by the kill ladder's SIGKILL)
    poll_until(lambda: any(_cmdline(c).startswith(b"sleep") for c in _children(proc.pid)), 10)
    assert shim.program_started(proc.pid, meta)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(10) == 128 + signal.SIGTERM
    assert shim.recorded_status(meta) == 128 + signal.SIGTERM


def test_program_arguments_never_reach_a_shell(tmp_path):
    marker = tmp_path / "pwned"
    _, proc = run_shim(tmp_path, ["echo", f"$(touch {marker}); touch {marker}"])
    assert proc.wait(10) == 0
    assert not marker.exists()


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""
