"""Following job log files: the program writes its own log (so output survives the
daemon); readers follow it from a byte offset.

One thread ("zeph-output") waits on inotify (a write to a log file wakes it; no poll
tick) and, for every follower of that file, reads what is new in large chunks and hands
it over with its byte offset. A follower whose consumer is behind (``ready()`` false) is
simply not fed until it catches up: the file is the buffer, so nothing is lost, nothing
is duplicated, and a slow consumer never slows the program or other followers.
"""

import logging
import os
import threading
from collections.abc import Callable

from zephserver.launch.inotify import PathWatch
from zephserver.launch.wakeup import WakeableSelector

log = logging.getLogger(__name__)

RETRY = 0.02  # seconds between retries while some follower's consumer is behind
SKIM_LAG = 256 << 10  # unread bytes past which a follower that can skim is asked to


def read_range(path: str, offset: int, limit: int) -> bytes:
    """Bytes ``[offset, offset+limit)`` of ``path`` (short or empty past the end)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return b""
    try:
        return os.pread(fd, limit, offset)
    finally:
        os.close(fd)


def utf8_cut(data: bytes) -> int:
    """Length of the longest prefix of ``data`` that does not end inside a UTF-8 sequence."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        byte = data[n - back]
        if byte < 0x80:
            return n  # ASCII: complete
        if byte >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return n if back >= need else n - back
    return n  # continuation bytes only, or invalid: deliver as is


def valid_utf8(data: bytes) -> bytes:
    """``data`` as valid UTF-8 (what WebSocket text frames must be): a log's stray bytes
    become U+FFFD; valid text (the usual case) is returned as is, after one C-speed check."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace").encode()
    return data


class Follower:
    """One reader of one file: ``deliver(offset, data)`` gets every byte once, in order.

    ``ready()`` says whether the consumer can take more now; ``done()`` is called after the
    last byte once the writer has finished (``Tail.finish``).
    """

    def __init__(self, path: str, offset: int, deliver: Callable[[int, bytes], None],
                 ready: Callable[[], bool] = lambda: True,
                 done: Callable[[int], None] | None = None,
                 max_lag: int | None = None,
                 skipped: Callable[[int], None] | None = None,
                 skim: Callable[[int, int, int], bool] | None = None) -> None:
        self.path = path
        self.offset = offset
        self.deliver = deliver
        self.ready = ready
        self.done = done
        # A follower that may miss output (a live console): when more than ``max_lag``
        # bytes wait, it jumps to the end of the file without reading them and
        # ``skipped(n)`` says how many it missed.
        self.max_lag = max_lag
        self.skipped = skipped
        # A follower that needs only what the end of a long stretch says (a progress
        # parser): when more than SKIM_LAG bytes wait, ``skim(fd, offset, end)`` may take
        # in [offset, end) its own way, reading little of it, and return True; the
        # follower then goes on from ``end``.
        self.skim = skim
        self.final = False  # the writer finished: deliver the tail, then call done()
        self.closed = False


class Tail:
    def __init__(self, chunk: int = 1 << 20) -> None:
        self.chunk = chunk
        self._lock = threading.Lock()
        self._followers: dict[str, list[Follower]] = {}
        self._dirty: set[str] = set()
        self._stopping = False
        self._watch = PathWatch()
        self._selector = WakeableSelector()
        self._selector.register(self._watch.fd, "inotify")
        self._thread = threading.Thread(target=self._run, name="zeph-output", daemon=True)
        self._thread.start()

    # -- API (any thread) -----------------------------------------------------------------

    def follow(self, follower: Follower) -> Follower:
        with self._lock:
            followers = self._followers.setdefault(follower.path, [])
            followers.append(follower)
            self._watch.add(follower.path)
            self._dirty.add(follower.path)  # deliver what is already there
        self._wake()
        return follower

    def unfollow(self, follower: Follower) -> None:
        follower.closed = True
        with self._lock:
            followers = self._followers.get(follower.path, [])
            if follower in followers:
                followers.remove(follower)
            if not followers:
                self._forget(follower.path)

    def ready_again(self, follower: Follower) -> None:
        """``follower``'s consumer has room again: feed it now, not at the next retry."""
        with self._lock:
            if follower.path not in self._followers:
                return
            self._dirty.add(follower.path)
        self._wake()

    def recheck(self, paths: list[str]) -> None:
        """Look at ``paths`` again now: files written on other machines (a shared
        filesystem, a Slurm job's log) send no inotify events here, and may have grown."""
        with self._lock:
            found = [p for p in paths if p in self._followers]
            for path in found:
                self._watch.add(path)  # (made after it was first followed)
            self._dirty.update(found)
        if found:
            self._wake()

    def finish(self, path: str) -> None:
        """The writer of ``path`` is gone: deliver the rest (a last line without a newline
        included) to every follower, call their ``done``, and stop following the file."""
        with self._lock:
            followers = self._followers.get(path)
            if not followers:
                return  # nobody follows it: nothing to flush, no thread to wake
            for f in followers:
                f.final = True
            self._dirty.add(path)
        self._wake()

    def close(self) -> None:
        self._stopping = True
        self._wake()
        self._thread.join(5)
        self._selector.close()
        self._watch.close()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"files": len(self._followers),
                    "followers": sum(len(v) for v in self._followers.values())}

    # -- the thread -----------------------------------------------------------------------

    def _forget(self, path: str) -> None:
        self._followers.pop(path, None)
        self._dirty.discard(path)
        self._watch.remove(path)

    def _wake(self) -> None:
        self._selector.wake()

    def _run(self) -> None:
        behind: list[Follower] = []  # consumers that could not take more: tried again soon
        resting = False  # inotify not waited on: the next pass comes at the retry
        while not self._stopping:
            for _, what in self._selector.select(RETRY if behind else None):
                if what == "inotify":
                    self._read_events()
            if resting:  # what was written meanwhile is in inotify's queue
                self._selector.register(self._watch.fd, "inotify")
                resting = False
                self._read_events()
            with self._lock:
                paths, self._dirty = self._dirty, set()
                work = [f for p in paths for f in self._followers.get(p, ())]
            taken = set(map(id, work))
            work += [f for f in behind if id(f) not in taken]
            behind = []
            for f in work:
                try:
                    if self._pump(f):
                        behind.append(f)
                except Exception:
                    log.exception("output follower of %s failed; dropped", f.path)
                    self.unfollow(f)
            if behind:
                # Until the retry, writes wake nobody: with followers waiting (a progress
                # parser reads once a JOB_PROGRESS_INTERVAL), a pass on every write of a
                # hundred busy jobs took half a core. Other followers wait for the retry
                # too (RETRY at most); an explicit wake-up (a new follower, a job's end,
                # a consumer ready again) still comes at once.
                self._selector.unregister(self._watch.fd)
                resting = True

    def _read_events(self) -> None:
        with self._lock:
            changed = self._watch.changed()
            self._dirty |= set(self._followers) if changed is None else changed

    def _pump(self, f: Follower) -> bool:
        """Feed ``f`` what is new; True if it stopped because its consumer is behind."""
        if f.closed:
            return False
        # Read the flag once, before reading: if the writer finishes while we read, finish()
        # marks the file again and the next pass reads to the true end before done().
        final = f.final
        if not f.ready():
            return True
        try:
            fd = os.open(f.path, os.O_RDONLY)
        except FileNotFoundError:
            fd = None
        try:
            while fd is not None:
                if not f.ready():
                    return True
                if f.max_lag is not None or f.skim is not None:
                    end = os.fstat(fd).st_size
                    lag = end - f.offset
                    if f.max_lag is not None and lag > f.max_lag:
                        f.offset += lag
                        if f.skipped is not None:
                            f.skipped(lag)
                    elif f.skim is not None and lag > SKIM_LAG and f.skim(fd, f.offset, end):
                        f.offset = end
                data = os.pread(fd, self.chunk, f.offset)
                if not data:
                    break
                # Cut inside a multi-byte character only at the very end of the output.
                n = len(data) if final and len(data) < self.chunk else utf8_cut(data)
                if n == 0:
                    break
                f.deliver(f.offset, data[:n])
                f.offset += n
                if n < len(data) and len(data) < self.chunk:
                    break  # the rest of a character is still being written
        finally:
            if fd is not None:
                os.close(fd)
        if final and not f.closed:
            self.unfollow(f)
            if f.done is not None:
                f.done(f.offset)
        return False
