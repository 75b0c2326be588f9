"""The agent's processes in a cluster (DESIGN.md, "A cluster is one system").

- **Placement.** A process is created on the node named by the request's ``runs_on``,
  or else on the node (up, not lost) that runs the fewest agent processes (this one on a
  tie); a create asked of another node is forwarded there (``agent.create``).
- **A lost node's processes start again elsewhere.** They "restart until deleted", so
  the node that declares a node lost takes its live processes (their records name it
  now) and its agent sets each up from its ``source_url`` again and starts it.
- **Fencing.** A process's node keeps it only while its lease is fresh: when the lease
  beat (the job manager touches ``DATA_DIR/lease.beat`` at each renewal) is older than
  half of NODE_LOST_AFTER, the agent stops its processes (SIGTERM, then its grace) and
  starts none until the beat is fresh again. Then, and before any restart, it asks the
  database whether a process is still its own; one the cluster moved is dropped here
  (nothing written). A daemon frozen whole (SIGSTOP) cannot do this: its processes run
  on until it wakes and drops them (requeue batch jobs carry a watcher of their own for
  that: launch.leash).
"""

import dataclasses
import logging
import os
import time
from typing import Any

from zephserver.errors import RpcCode, RpcError
from zephserver.launch.leash import BEAT_FILE
from zephserver.launch.states import TERMINAL, JobState
from zephserver.task.base import UserInfo

log = logging.getLogger("zephserver.service.agent")

J = JobState
FENCE_CHECK = 1.0  # seconds between looks at the lease beat's age


def agent_error(code: RpcCode, message: str, field_name: str | None = None) -> RpcError:
    return RpcError(code, message, {"field": field_name} if field_name else None)


class AgentCluster:
    """Mixed into the agent service (it provides node, cluster, _procs, _set, ...)."""

    node: str
    cluster: Any
    call_timeout_s: float
    _procs: dict
    fenced = False  # the lease is stale: nothing starts here

    def start_cluster(self, settings: Any) -> None:
        self.beat_path = os.path.join(os.path.abspath(settings.DATA_DIR), BEAT_FILE)
        self.lost_after = settings.NODE_LOST_AFTER
        self._last_tick = time.monotonic()
        self.cluster.calls.handle("agent.create", self._serve_create)
        self.after(FENCE_CHECK, self._fence_tick)  # type: ignore[attr-defined]

    # -- the processes of the other nodes (from the shared database) ----------------------

    def _elsewhere(self, slug: str | None, user: UserInfo, own: bool = False) -> list[Any]:
        """Processes of the other nodes, not deleted (``slug``: that one), that ``user``
        may see (``own``: theirs only, staff too); the user's own first."""
        if not self.cluster.enabled:
            return []
        from zephserver.web.models import Job

        jobs = Job.objects.select_related("owner").filter(kind="service").exclude(
            node=self.node).exclude(state__in=[s for s in TERMINAL if s != J.FAILED])
        if slug is not None:
            jobs = jobs.filter(name=slug)
        if own or not user.is_staff:
            jobs = jobs.filter(owner_id=user.id)
        found = [job for job in jobs.order_by("id") if not job.extra.get("deleted")]
        return sorted(found, key=lambda job: job.owner_id != user.id)

    def _serve_delete(self, params: dict) -> dict:  # a cluster worker thread
        self.delete(UserInfo(**params["user"]), params["slug"], audited=False)
        return {}

    def _elsewhere_or_raise(self, exc: RpcError, user: UserInfo, slug: str) -> Any:
        """Not found here (``exc``): the record of ``slug`` on another node, or ``exc``."""
        remote = self._elsewhere(slug, user) if exc.code == RpcCode.NOT_FOUND else []
        if not remote:
            raise exc
        return remote[0]

    # -- placement ------------------------------------------------------------------------

    def place(self, runs_on: str | None, user: UserInfo, slug: str) -> str:
        """The node a new process ``slug`` of ``user`` goes to."""
        if not self.cluster.enabled:
            if runs_on not in (None, self.node):
                raise agent_error(RpcCode.INVALID_PARAMS, f"'runs_on': no node {runs_on!r} (this "
                           f"daemon is node {self.node}, not in a cluster)", "runs_on")
            return self.node
        if self.call(lambda: (user.id, slug) in self._procs):  # type: ignore[attr-defined]
            raise agent_error(RpcCode.CONFLICT, f"a process {slug!r} already exists (on node "
                       f"{self.node})", "node")
        if runs_on is not None:
            if runs_on != self.node and runs_on not in self.cluster.peers:
                raise agent_error(RpcCode.INVALID_PARAMS, f"'runs_on': no node {runs_on!r} in the "
                           "cluster", "runs_on")
            return runs_on
        from django.db.models import Count

        from zephserver.web.models import Job, NodeLease

        alive = {self.node} | {p for p in self.cluster.peers if self.cluster.is_up(p)}
        alive &= set(NodeLease.objects.filter(lost_at__isnull=True)
                     .values_list("node", flat=True)) | {self.node}
        counts = dict(Job.objects.filter(kind="service", node__in=alive)
                      .exclude(state__in=list(TERMINAL)).values_list("node")
                      .annotate(n=Count("id")).order_by())
        return min(sorted(alive), key=lambda n: (counts.get(n, 0), n != self.node))

    def create_on(self, node: str, user: UserInfo, fields: dict,
                  request_id: str | None) -> dict:
        """Create the process on ``node`` (another one: through the cluster)."""
        if node == self.node:
            return self.call(self._create, user, fields, request_id)  # type: ignore[attr-defined]
        return self.cluster.calls.call(node, "agent.create", {
            "user": dataclasses.asdict(user), "fields": fields, "request_id": request_id},
            self.call_timeout_s)

    def _serve_create(self, params: dict) -> dict:  # a cluster worker thread
        return self.call(self._create, UserInfo(**params["user"]),  # type: ignore[attr-defined]
                         params["fields"], params["request_id"])

    # -- a lost node's processes, taken here ----------------------------------------------

    def adopt(self) -> None:
        """(agent thread) Processes whose records name this node that it does not run
        yet (the cluster moved them here from a lost node): set up and started here."""
        from zephserver.web.models import Job

        known = {proc.job.pk for proc in self._procs.values()}
        jobs = (Job.objects.select_related("owner").filter(kind="service", node=self.node)
                .exclude(state__in=list(TERMINAL)).exclude(pk__in=known).order_by("id"))
        for job in jobs:
            if job.extra.get("deleted"):
                continue
            job.job_dir = os.path.join(self.dir, str(job.pk))  # type: ignore[attr-defined]
            job.log_path = os.path.join(job.job_dir, "output.log")
            os.makedirs(job.job_dir, exist_ok=True)
            open(job.log_path, "ab").close()
            job.persist("job_dir", "log_path")
            log.info("process %s (job %d) taken over from a lost node", job.name, job.pk,
                     extra={"job": job.pk})
            self._take(job)  # type: ignore[attr-defined]

    # -- is it still ours? ----------------------------------------------------------------

    def moved(self, proc: Any) -> bool:
        """Whether the cluster gave ``proc`` to another node (then it is dropped here,
        and nothing of it is written). Asked before a start and at an exit."""
        if proc.moved:
            return True
        if not self.cluster.enabled:
            return False
        from django.db import DatabaseError

        from zephserver.web.models import Job

        try:
            node = Job.objects.filter(pk=proc.job.pk).values_list("node", flat=True).first()
        except DatabaseError:
            return False  # (the lease says whether we were cut off: the fence acts then)
        if node == self.node:
            return False
        log.warning("process %s (job %d): the cluster moved it to %s; not run here",
                    proc.slug, proc.job.pk, node or "nowhere", extra={"job": proc.job.pk})
        self._procs.pop((proc.job.owner_id, proc.slug), None)
        proc.moved = True
        proc.restart_token += 1
        self._close_consoles(proc)  # type: ignore[attr-defined]
        return True

    # -- fencing --------------------------------------------------------------------------

    def _fence_tick(self) -> None:
        now = time.monotonic()
        woke = now - self._last_tick > self.lost_after / 2  # (paused: SIGSTOP, a hang)
        self._last_tick = now
        try:
            age = time.time() - os.stat(self.beat_path).st_mtime
        except OSError:
            age = 0.0  # not written yet (the job manager starts after us)
        stale = age > self.lost_after / 2
        if stale and not self.fenced:
            self.fenced = True
            log.error("agent: this node's lease is %.0fs old (cut off from the database?): "
                      "its processes are stopped until it is renewed", age)
            for proc in list(self._procs.values()):
                if proc.pid is not None:
                    self._stop_process(proc)  # type: ignore[attr-defined]
        elif not stale and woke:  # back with a fresh lease: are they all still ours?
            for proc in list(self._procs.values()):
                if proc.pid is not None and self.moved(proc):
                    self._stop_process(proc)  # type: ignore[attr-defined]
        if not stale and self.fenced:
            self.fenced = False
            log.warning("agent: the lease is renewed again: processes still this node's "
                        "start again")
            for proc in list(self._procs.values()):
                if proc.pid is None and not proc.preparing and proc.command is not None \
                        and proc.job.state not in TERMINAL:
                    self._start(proc)  # type: ignore[attr-defined]
        self.after(FENCE_CHECK, self._fence_tick)  # type: ignore[attr-defined]
