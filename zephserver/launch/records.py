"""What was recorded of a job's process, for a daemon that was not there to see it (it
restarted, or the process ended before its start was told): by the keeper in its
ledger (``launch.keeper.Ledger``), or by the shim in two files beside the job's
directory (``launch.shim``; where an older keeper wrote them too)."""

import threading
from typing import NamedTuple

from zephserver.launch import keeper, shim


class Recorded(NamedTuple):
    pid: int | None
    start_time: int | None  # the keeper's: its child is the program, started at this time
    status: int | None  # its exit status, once it ended
    kept: bool  # started by the keeper (the shim records its own pid, not its program's)


NOTHING = Recorded(None, None, None, False)


class Records:
    """Records by job: ``of(key, job_dir)``, from any thread."""

    def __init__(self, keeper_socket: str | None) -> None:
        self._ledger = keeper.Ledger(keeper.ledger_path(keeper_socket)) \
            if keeper_socket else None
        self._lock = threading.Lock()  # (the ledger is read on from where it was)

    def of(self, key: str, job_dir: str | None) -> Recorded:
        if self._ledger is not None:
            with self._lock:
                entry = self._ledger.read().get(key)
            if entry is not None:
                return Recorded(*entry, kept=True)
        if not job_dir:
            return NOTHING
        meta = shim.found_meta(job_dir)
        numbers = shim.recorded_numbers(meta.pid)
        return Recorded(numbers[0] if numbers else None,
                        numbers[1] if len(numbers) == 2 else None,
                        shim.recorded_status(meta), len(numbers) == 2)

    def shim_started_program(self, pid: int, job_dir: str) -> bool:
        """Whether the shim ``pid`` (of the job in ``job_dir``) has exec'd the program."""
        return shim.program_started(pid, shim.found_meta(job_dir))

    def is_shim_of(self, pid: int, job_dir: str) -> bool:
        return shim.is_shim_of(pid, shim.found_meta(job_dir))
