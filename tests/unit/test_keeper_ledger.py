"""The keeper's ledger (launch.keeper.Ledger): what it writes, in the keeper's own code
run here on a real file, and how a daemon reads it back."""

import os

import pytest

from zephserver.launch import keeper

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def kept(tmp_path):
    """A keeper of ``tmp_path`` (not listening: its ledger is all that is used here)."""
    made = []

    def make():
        k = keeper.Keeper(str(tmp_path / "keeper.sock"))
        k.open_ledger()
        made.append(k)
        return k
    yield make
    for k in made:
        os.close(k._ledger_fd)


def reader(tmp_path) -> keeper.Ledger:
    return keeper.Ledger(str(tmp_path / keeper.LEDGER))


def test_a_start_then_an_end_then_forgotten(kept, tmp_path):
    k, daemon = kept(), reader(tmp_path)
    k._note(["s job-1 100 5000\n", "s job-2 101 -\n"])
    assert daemon.read() == {"job-1": (100, 5000, None), "job-2": (101, None, None)}
    k._note(["e job-1 100 3\n"])
    assert daemon.read()["job-1"] == (100, 5000, 3)  # (only what was appended is read)
    k._forget(["job-1", "job-7"])  # (one it never had: nothing written for it)
    assert daemon.read() == {"job-2": (101, None, None)}
    assert (tmp_path / keeper.LEDGER).read_text().count("\nd ") == 1


def test_a_job_run_again_is_its_last_run_and_an_end_of_another_pid_is_not_its(kept,
                                                                               tmp_path):
    k = kept()
    k._note(["s job-1 100 5000\n", "e job-1 100 0\n", "d job-1\n", "s job-1 200 6000\n",
             "e job-1 100 9\n"])
    assert reader(tmp_path).read() == {"job-1": (200, 6000, None)}


def test_a_torn_last_line_is_skipped_and_the_next_keeper_starts_a_line_of_its_own(
        kept, tmp_path):
    (tmp_path / keeper.LEDGER).write_bytes(b"s job-1 100 5000\ns job-2 10")  # (killed)
    daemon = reader(tmp_path)
    assert daemon.read() == {"job-1": (100, 5000, None)}
    k = kept()
    assert k.ledger.entries == {"job-1": (100, 5000, None)}
    k._note(["s job-3 102 5002\n"])
    assert daemon.read() == {"job-1": (100, 5000, None), "job-3": (102, 5002, None)}


def test_once_mostly_forgotten_it_is_written_again_with_what_is_still_needed(
        kept, tmp_path, monkeypatch):
    monkeypatch.setattr(keeper, "COMPACT_AFTER", 4096)
    k, daemon = kept(), reader(tmp_path)
    path = tmp_path / keeper.LEDGER
    k._note(["s job-0 99 4999\n"])  # still running
    for i in range(1, 200):
        k._note([f"s job-{i} {1000 + i} {7000 + i}\n", f"e job-{i} {1000 + i} 0\n"])
    daemon.read()
    before = os.stat(path).st_ino
    k._forget([f"job-{i}" for i in range(1, 199)])
    assert os.stat(path).st_ino != before  # a new file
    assert path.read_text() == "s job-0 99 4999\ns job-199 1199 7199\ne job-199 1199 0\n"
    want = {"job-0": (99, 4999, None), "job-199": (1199, 7199, 0)}
    assert daemon.read() == want  # (read from its start again)
    k._note(["e job-0 99 1\n"])  # appended to the new one
    assert daemon.read()["job-0"] == (99, 4999, 1)
    assert kept().ledger.entries == {**want, "job-0": (99, 4999, 1)}  # a next keeper's


def test_no_ledger_yet_is_no_record(tmp_path):
    assert reader(tmp_path).read() == {}
