"""Job directories made ahead of need (zephserver.launch.spares), on a real disk."""

import logging
import os
import stat
import threading

import pytest

from tests.support.poll import poll_until
from zephserver.launch.shim import PID_FILE, STATUS_FILE
from zephserver.launch.spares import LOG_NAME, SPARE_DIR, SpareDirs

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def pool(tmp_path):
    made = []

    def make(want=4, quiet=0.01):
        spares = SpareDirs(str(tmp_path), want=want, quiet=quiet)
        made.append(spares)
        return spares
    yield make
    for spares in made:
        spares.close()


def is_pristine(path: str) -> bool:
    """Only its empty log (the keeper records pids and statuses in its ledger)."""
    names = sorted(os.listdir(path))
    return names == [LOG_NAME] and os.stat(os.path.join(path, LOG_NAME)).st_size == 0


def test_it_fills_itself_with_empty_directories_each_holding_an_empty_log(pool, tmp_path):
    spares = pool(want=5)
    spares.start()
    poll_until(lambda: len(spares) == 5, what="five spares")
    taken = [spares.take() for _ in range(5)]
    assert len(set(taken)) == 5
    for path in taken:
        assert os.path.dirname(path) == str(tmp_path / SPARE_DIR)
        assert is_pristine(path)
        mode = stat.S_IMODE(os.stat(os.path.join(path, LOG_NAME)).st_mode)
        assert mode & 0o137 == 0  # at most rw-r----- (the keeper's log mode)


def test_takes_empty_it_then_it_is_filled_again_once_they_stop(pool, tmp_path):
    spares = pool(want=3)
    spares.start()
    poll_until(lambda: len(spares) == 3, what="three spares")
    taken = [spares.take() for _ in range(4)]
    assert taken[3] is None  # (more than it held: the caller makes its own)
    poll_until(lambda: len(spares) == 3, what="the pool filled again")
    assert not set(taken[:3]) & {spares.take() for _ in range(3)}


def test_a_new_start_adopts_what_an_earlier_run_left_and_removes_what_is_not_a_spare(
        pool, tmp_path):
    first = pool(want=3)
    first.start()
    poll_until(lambda: len(first) == 3, what="three spares")
    first.close()
    root = tmp_path / SPARE_DIR
    left = sorted(str(p) for p in root.iterdir())
    (root / "written").mkdir()
    (root / "written" / LOG_NAME).write_text("output\n")
    (root / "extra").mkdir()
    for name in (LOG_NAME, "other"):
        (root / "extra" / name).touch()
    (root / "older").mkdir()  # an older daemon's, with the pid and status files it had
    for name in (LOG_NAME, PID_FILE, STATUS_FILE):
        (root / "older" / name).touch()
    (root / "stray-file").touch()
    second = pool(want=3)
    second.start()
    adopted = sorted(second.take() for _ in range(3))
    assert adopted == left
    assert not (root / "written").exists()
    assert not (root / "extra").exists()
    assert not (root / "older").exists()
    assert not (root / "stray-file").exists()


def test_where_it_cannot_make_any_it_says_so_and_has_none(tmp_path, caplog):
    (tmp_path / "file").touch()  # JOBS_DIR is a file: nothing can go under it
    spares = SpareDirs(str(tmp_path / "file"), want=3, quiet=0.01)
    with caplog.at_level(logging.WARNING, logger="zephserver.launch.spares"):
        spares.start()
        assert spares.take() is None
    spares.close()
    assert "spare job directories: none" in caplog.text


def test_once_closed_it_makes_no_more(pool, tmp_path):
    spares = pool(want=2)
    spares.start()
    poll_until(lambda: len(spares) == 2, what="two spares")
    spares.close()
    assert spares.take() is not None
    assert spares.take() is not None
    assert len(spares) == 0
    assert not [t for t in threading.enumerate() if t.name == "zeph-spare-dirs"]
