"""The queue's scheduling policy: a pure function of the queue, what runs, and capacity.

Order is priority (high first) then submission (FIFO). Jobs that do not fit are passed
over so smaller jobs behind them can use idle resources (backfill). To keep a big job
from starving behind a stream of small ones, a job that has waited longer than
``reserve_after`` gets a reservation: the resources it needs are held back from every
job behind it, so as running jobs end it is guaranteed to fit.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Demand:
    cores: int = 0
    memory: int = 0
    licenses: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, resources: Mapping) -> "Demand":
        return cls(int(resources.get("cores", 0)), int(resources.get("memory", 0)),
                   {k: int(v) for k, v in (resources.get("licenses") or {}).items() if v})


@dataclass
class Pool:
    """Amounts of each resource (capacity, used or free)."""

    cores: int = 0
    memory: int = 0
    licenses: dict[str, int] = field(default_factory=dict)

    def copy(self) -> "Pool":
        return Pool(self.cores, self.memory, dict(self.licenses))

    def take(self, d: Demand) -> None:
        self.cores -= d.cores
        self.memory -= d.memory
        for k, v in d.licenses.items():
            self.licenses[k] = self.licenses.get(k, 0) - v

    def shortfall(self, d: Demand) -> list[str]:
        """What is missing for ``d`` ('2 cores', '1 lsdyna licence'); empty if it fits."""
        out = []
        if d.cores > self.cores:
            out.append(f"{d.cores - max(self.cores, 0)} core(s)")
        if d.memory > self.memory:
            out.append(f"{d.memory - max(self.memory, 0)} MiB memory")
        for k, v in d.licenses.items():
            have = self.licenses.get(k, 0)
            if v > have:
                out.append(f"{v - max(have, 0)} {k} licence(s)")
        return out

    def to_json(self) -> dict:
        return {"cores": self.cores, "memory": self.memory, "licenses": dict(self.licenses)}


@dataclass(frozen=True)
class Waiting:
    id: int
    owner: int
    demand: Demand
    priority: int
    seq: float
    queued_at: float  # seconds (clock of the caller)
    app: str = ""  # (where it may run: the app's ``nodes``)


@dataclass(frozen=True)
class Running:
    owner: int
    demand: Demand
    here: bool = True  # False: on another node (only its licences are taken from here)


@dataclass(frozen=True)
class Limits:
    running: int = 0  # jobs per user running at once (0 = no limit)
    cores: int = 0  # cores per user at once (0 = no limit)


@dataclass
class Plan:
    start: list[int]
    reasons: dict[int, str]  # why each job still waits
    reserved: list[int]
    free: Pool


def queue_order(jobs: Iterable[Waiting]) -> list[Waiting]:
    return sorted(jobs, key=lambda j: (-j.priority, j.seq, j.id))


def plan(queue: Iterable[Waiting], running: Iterable[Running], capacity: Pool,
         limits: Limits, now: float, reserve_after: float) -> Plan:
    free = capacity.copy()
    per_user: dict[int, list[int]] = {}  # owner -> [jobs, cores]
    for r in running:
        free.take(r.demand if r.here else Demand(licenses=r.demand.licenses))
        usage = per_user.setdefault(r.owner, [0, 0])
        usage[0] += 1
        usage[1] += r.demand.cores
    start: list[int] = []
    reasons: dict[int, str] = {}
    reserved: list[int] = []
    ordered = queue_order(queue)
    # With no core left, no job that needs one can start: the rest only get a reason
    # (cheaply), unless some job needs no core at all.
    all_need_cores = all(job.demand.cores > 0 for job in ordered)
    for i, job in enumerate(ordered):
        if all_need_cores and free.cores <= 0:
            for rest in ordered[i:]:
                reasons.setdefault(rest.id, f"waiting for {rest.demand.cores} core(s)")
            break
        usage = per_user.setdefault(job.owner, [0, 0])
        if limits.running and usage[0] >= limits.running:
            reasons[job.id] = f"your limit of {limits.running} running job(s) is reached"
            continue
        if limits.cores and usage[1] + job.demand.cores > limits.cores:
            reasons[job.id] = f"your limit of {limits.cores} core(s) would be exceeded"
            continue
        missing = free.shortfall(job.demand)
        if not missing:
            start.append(job.id)
            free.take(job.demand)
            usage[0] += 1
            usage[1] += job.demand.cores
            continue
        if now - job.queued_at >= reserve_after:
            # Hold what it needs back from everything behind it.
            reserved.append(job.id)
            free.take(job.demand)
            reasons[job.id] = f"reserved; waiting for {', '.join(missing)}"
        else:
            reasons[job.id] = f"waiting for {', '.join(missing)}"
    return Plan(start, reasons, reserved, free)
