"""A progress parser on a real output thread, following a real program's log."""

import subprocess
import sys
import threading
import time
import types

import pytest

from zephserver.jobs import progress
from zephserver.launch import parsers
from zephserver.launch.output import Tail
from zephserver.launch.parsers import RegexParser

pytestmark = pytest.mark.timeout(60)

FLOOD = """
import sys
n = int(sys.argv[1])
write = sys.stdout.write
for i in range(1, n + 1):
    write(f"step {i} of {n} " + "x" * 60 + "\\n")
"""
SPEC = {"progress": r"step (?P<value>\d+) of (?P<total>\d+)"}


def test_a_job_printing_flat_out_is_skimmed_not_read(tmp_path, monkeypatch):
    """With reports every 0.2 s, the parser reads only when one is due and skims what
    came meanwhile: it ends at 100 % having fed itself a small part of the 40 MB log, and
    reports no more often than the interval allows."""
    fed, skims = [], []

    class Watched(RegexParser):  # the real parser, its work counted
        def feed(self, chunk, now, started):
            fed.append(len(chunk))
            super().feed(chunk, now, started)

        def skim(self, read, lo, hi, now, started, block=64 << 10):
            took = super().skim(read, lo, hi, now, started, block)
            skims.append(took)
            return took

    monkeypatch.setattr(parsers, "make_parser", lambda spec: Watched(spec))  # (loaded on use)
    log = tmp_path / "job.log"
    reports, done = [], threading.Event()
    job = types.SimpleNamespace(pk=7, started=None, log_path=str(log))

    def report(job_id, snapshot):
        reports.append(snapshot)
        if snapshot["percent"] == 100.0:
            done.set()

    tail = Tail()
    started = time.monotonic()
    try:
        with open(log, "wb") as out:
            writer = subprocess.Popen([sys.executable, "-c", FLOOD, "500000"], stdout=out)
            tail.follow(progress.progress_follower(job, SPEC, lambda: 0.2, report))
            writer.wait(30)
        tail.finish(str(log))
        assert done.wait(20), reports[-3:]
        took = time.monotonic() - started
    finally:
        tail.close()
    size = log.stat().st_size
    assert reports[-1]["percent"] == 100.0
    assert any(skims), skims
    assert sum(fed) < size / 4, (sum(fed), size)
    assert len(reports) <= took / 0.2 + 2, (len(reports), took)
    assert tail.counts() == {"files": 0, "followers": 0}
