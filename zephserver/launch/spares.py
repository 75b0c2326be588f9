"""Job directories made ahead of need, so a launch renames one instead of making it.

Making a directory or a file costs 30 us on a quiet disk, but not everywhere: ext4
without a journal (this project's machines) does not reuse an inode freed in the last
30 s, and skips each one, so after a burst of jobs had ended and their files been
removed, every new file or directory took 0.4-1.1 ms (perf: ``recently_deleted`` was 40 %
of the keeper's CPU). A rename allocates nothing: 25 us. A burst of 100 jobs spent
longer making their directories than spawning their programs.

So a pool of spare directories waits under ``JOBS_DIR/.zeph-spare``, each with the
empty file a job gets (``FILES``: its log; the keeper records the job's pid and status
in its ledger, not in files). The keeper renames one into place just before a spawn
(``launch.keeper``), and makes the directory itself only when none was given or the
rename failed. A job from a spare makes no file and its end removes none.

A short-lived thread refills the pool once takes have stopped for QUIET seconds. Not
sooner: during a stream of short jobs, refilling at once when the pool ran low made the
same files on the daemon's CPU instead of the keeper's (3 alternating passes: the
daemon's CPU a job 1.3-1.9 ms with it, 0.8-1.6 without). Spares outlive the daemon: the next
start adopts them, and removes what does not look like one.
"""

import collections
import contextlib
import itertools
import logging
import os
import shutil
import threading
import time

log = logging.getLogger(__name__)

SPARE_DIR = ".zeph-spare"
LOG_NAME = "output.log"
# Each spare's empty files (the log): a launch from a spare then makes no file at all.
FILES = ((LOG_NAME, 0o640),)  # (as the keeper's)
WANT = 128  # spares kept: a burst of this many jobs makes no directory
QUIET = 0.2  # seconds without a take before the pool is refilled


class SpareDirs:
    """A pool of empty job directories under ``jobs_dir``. ``take`` from any thread."""

    def __init__(self, jobs_dir: str, want: int = WANT, quiet: float = QUIET) -> None:
        self.root = os.path.join(jobs_dir, SPARE_DIR)
        self.want, self.quiet = want, quiet
        self._ready: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()
        self._names = itertools.count()
        self._last_take = 0.0  # monotonic
        self._filler: threading.Thread | None = None
        self._closed = threading.Event()

    def start(self) -> None:
        """Adopt the spares an earlier run left, then fill the pool (in the background)."""
        try:
            os.makedirs(self.root, exist_ok=True)
            entries = list(os.scandir(self.root))
        except OSError as exc:
            log.warning("spare job directories: none (%s: %s)", self.root, exc.strerror)
            return
        for entry in entries:
            if _is_spare(entry):
                self._ready.append(entry.path)
            else:  # (half made when a daemon stopped, or not ours)
                _remove(entry)
        self._fill_soon()

    def close(self) -> None:
        """Stop filling; the spares stay for the next start."""
        self._closed.set()
        filler = self._filler
        if filler is not None:
            filler.join(5)

    def __len__(self) -> int:
        return len(self._ready)

    def take(self) -> str | None:
        """A spare directory's path, now no longer the pool's; None if there is none."""
        with self._lock:
            self._last_take = time.monotonic()
            spare = self._ready.popleft() if self._ready else None
        self._fill_soon()
        return spare

    # -- filling --------------------------------------------------------------------------

    def _fill_soon(self) -> None:
        with self._lock:
            if self._closed.is_set() or len(self._ready) >= self.want or (
                    self._filler is not None and self._filler.is_alive()):
                return
            self._filler = threading.Thread(target=self._fill, name="zeph-spare-dirs",
                                            daemon=True)
            self._filler.start()

    def _fill(self) -> None:
        """Wait for takes to stop, then make spares until there are enough."""
        while not self._closed.is_set():
            with self._lock:
                wait = self._last_take + self.quiet - time.monotonic()
                if wait <= 0 and len(self._ready) >= self.want:
                    self._filler = None
                    return
            if wait > 0:
                self._closed.wait(wait)
                continue
            spare = self._make()
            if spare is None:  # (logged) the disk refuses: again after the next take
                with self._lock:
                    self._filler = None
                return
            with self._lock:
                self._ready.append(spare)

    def _make(self) -> str | None:
        while True:
            path = os.path.join(self.root, f"{os.getpid()}-{next(self._names)}")
            try:
                os.mkdir(path)
                break
            except FileExistsError:  # (an earlier run's, of the same pid)
                continue
            except OSError as exc:
                log.warning("spare job directories: cannot make one in %s: %s", self.root,
                            exc.strerror)
                return None
        try:
            for name, mode in FILES:
                os.close(os.open(os.path.join(path, name),
                                 os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode))
        except OSError as exc:
            log.warning("spare job directories: cannot make one in %s: %s", self.root,
                        exc.strerror)
            with contextlib.suppress(OSError):
                shutil.rmtree(path)
            return None
        return path


def _is_spare(entry: os.DirEntry) -> bool:
    """A directory holding only its empty files."""
    try:
        if not entry.is_dir(follow_symlinks=False):
            return False
        inside = list(os.scandir(entry.path))
        return sorted(e.name for e in inside) == sorted(name for name, _ in FILES) and all(
            e.is_file(follow_symlinks=False) and e.stat(follow_symlinks=False).st_size == 0
            for e in inside)
    except OSError:
        return False


def _remove(entry: os.DirEntry) -> None:
    with contextlib.suppress(OSError):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
