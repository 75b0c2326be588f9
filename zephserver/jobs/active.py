"""A job the manager watches: it has a process (STARTING or RUNNING) on this node, or
waits in an executor's own queue (a Slurm job, ``jobs.reports``)."""

from dataclasses import dataclass
from typing import Any

from zephserver.launch.apps import App
from zephserver.launch.scheduler import Demand, Running


def counted(app: App | None) -> bool:
    """Whether jobs of ``app`` take this node's capacity (an app run by another
    scheduler, Slurm, takes none: that scheduler counts)."""
    return app is None or app.executor == "local"


def demand(app: App | None, resources: dict) -> Demand:
    return Demand.of(resources) if counted(app) else Demand()


@dataclass
class Active:
    job: Any
    app: App | None
    stop_by: str = ""
    spawned_at: float = 0.0  # monotonic; 0 for a re-adopted job
    running: Running | None = None  # what it holds, as the queue sees it (made once)
    # Asked of the executor, its process not known yet (the keeper answers meanwhile):
    # it holds its resources, and a stop asked now (end state, reason, by) waits for it.
    launching: bool = False
    stop_when_started: tuple[Any, str, str] | None = None

    def holds(self) -> Running:
        if self.running is None:
            self.running = Running(self.job.owner_id, demand(self.app, self.job.resources))
        return self.running
