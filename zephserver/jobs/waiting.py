"""The waiting queue: QUEUED jobs in scheduling order, and HELD ones beside them.

Kept light (a queue of 100,000 jobs must not hold 100,000 model objects): an entry is a
``launch.scheduler.Waiting`` (id, owner, demand, priority, seq, queued time), the record
is read when the job starts or is shown. Order: priority (high first), then ``seq`` (the
submission time; ``move`` reassigns it), then id. Pure bookkeeping, no I/O: the caller
persists what ``move`` changed.
"""

import bisect
import dataclasses
from typing import Any

from zephserver.launch.scheduler import Demand, Waiting


def order_key(w: Waiting) -> tuple:
    return (-w.priority, w.seq, w.id)


def entry_for(job: Any, demand: Demand) -> Waiting:
    """The queue entry of a job record that needs ``demand`` of this node."""
    queued = job.queued_at or job.created
    return Waiting(job.pk, job.owner_id, demand, job.priority, job.seq, queued.timestamp(),
                   job.app)


class WaitingQueue:
    def __init__(self) -> None:
        self._entries: dict[int, Waiting] = {}
        self._held: set[int] = set()
        self._order: list[Waiting] = []  # QUEUED entries in scheduling order
        self._reasons: dict[int, str] = {}  # why a QUEUED job waits (from the last plan)

    def __contains__(self, job_id: int) -> bool:
        return job_id in self._entries

    def entries(self) -> list[Waiting]:
        """Every entry, QUEUED and HELD."""
        return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def ordered(self) -> list[Waiting]:
        """QUEUED entries in scheduling order (the caller must not change the list)."""
        return self._order

    @property
    def queued(self) -> int:
        return len(self._order)

    @property
    def held(self) -> int:
        return len(self._held)

    def add(self, entry: Waiting, held: bool = False) -> None:
        self._entries[entry.id] = entry
        if held:
            self._held.add(entry.id)
        else:
            bisect.insort(self._order, entry, key=order_key)

    def remove(self, job_id: int) -> Waiting | None:
        """Take a job out (it starts, is cancelled or changes); its entry, if it was in."""
        entry = self._entries.pop(job_id, None)
        self._reasons.pop(job_id, None)
        if entry is None or job_id in self._held:
            self._held.discard(job_id)
            return entry
        key = order_key(entry)
        i = bisect.bisect_left(self._order, key, key=order_key)
        while i < len(self._order) and order_key(self._order[i]) == key:
            if self._order[i].id == job_id:
                del self._order[i]
                break
            i += 1
        return entry

    def clear(self) -> None:
        self._entries.clear()
        self._held.clear()
        self._order.clear()
        self._reasons.clear()

    def position(self, job_id: int) -> int | None:
        """0 for the next to start; None if not QUEUED."""
        return next((i for i, w in enumerate(self._order) if w.id == job_id), None)

    def reason(self, job_id: int) -> str | None:
        return self._reasons.get(job_id)

    def set_reasons(self, reasons: dict[int, str]) -> None:
        self._reasons = dict(reasons)

    def note(self, job_id: int, reason: str) -> None:
        self._reasons[job_id] = reason

    def listing(self, owner: int | None) -> list[tuple[int | None, int]]:
        """(position, job id) of the QUEUED jobs in order, then (None, id) of the HELD
        ones; ``owner``: only theirs (None: everyone's)."""
        out: list[tuple[int | None, int]] = [
            (position, w.id) for position, w in enumerate(self._order)
            if owner is None or w.owner == owner]
        out += [(None, i) for i in sorted(self._held)
                if owner is None or self._entries[i].owner == owner]
        return out

    def move(self, job_id: int, position: int, among_owner: int | None
             ) -> list[tuple[int, float]]:
        """Put QUEUED ``job_id`` at ``position`` among the jobs of its priority (those of
        ``among_owner`` only, when given: others keep their places). The jobs involved
        swap their ``seq`` values; the (id, seq) pairs that changed are returned."""
        me = self._entries[job_id]
        peers = [w for w in self._order if w.priority == me.priority
                 and (among_owner is None or w.owner == among_owner)]
        slots = [w.seq for w in peers]
        ids = [w.id for w in peers if w.id != job_id]
        ids.insert(min(position, len(ids)), job_id)
        entries = {w.id: w for w in peers}
        for peer_id in entries:
            self.remove(peer_id)
        changed = []
        for peer_id, seq in zip(ids, slots, strict=True):
            entry = entries[peer_id]
            if entry.seq != seq:
                changed.append((peer_id, seq))
                entry = dataclasses.replace(entry, seq=seq)
            self.add(entry)
        return changed
