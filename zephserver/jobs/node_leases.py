"""Node loss in a cluster: leases in the database, and what the others do when a node
goes silent (DESIGN.md, "A cluster is one system").

Each node renews its lease (a row with the database's own clock, so no two machines'
clocks are compared) every ``NODE_LOST_AFTER / 6`` seconds. A node whose lease is older
than NODE_LOST_AFTER is declared lost by exactly one of the others: the conditional
UPDATE that sets ``lost_at`` succeeds for one node only (the database decides). That node,
in the same transaction:

- puts the lost node's claimed-but-not-started jobs back in the cluster's queue;
- ends its sessions (LOST: their clients' node is gone);
- marks its other running jobs "node N not responding since T": they may still be
  computing on a machine whose daemon died, so they stay RUNNING until NODE_DOWN_AFTER,
  and then become LOST.

A node that comes back (restarted, or resumed after a pause or a partition) reconciles
before it claims anything: what it still runs that the cluster gave up (LOST) is stopped
(TERM, grace, KILL) and recorded; what is still its own is re-adopted and says so.
"""

import datetime
import logging
import os
import time
from typing import Any

from zephserver.jobs.cluster_queue import QUEUED_KINDS
from zephserver.jobs.transition import now, transition
from zephserver.launch.leash import BEAT_FILE, leash
from zephserver.launch.states import TERMINAL, JobState

log = logging.getLogger("zephserver.jobs.nodes")
J = JobState
RENEWALS_PER_LEASE = 6  # renewals within NODE_LOST_AFTER


def _db_now() -> Any:
    from django.db.models.functions import Now

    return Now()


class NodeLeases:
    """Mixed into the job manager (it provides node, cluster, change, enqueue, ...)."""

    node: str
    cluster: Any
    lost_after: float
    down_after: float
    data_dir: str
    _active: dict
    _renewed_mono = 0.0  # monotonic time of our last lease renewal

    def leash_for(self, app: Any) -> list[str]:
        """What holds a job of ``app`` to this node's lease: a requeue app's, in a
        cluster (launch.leash); nothing otherwise."""
        if not (self.cluster.enabled and getattr(app, "requeue", False)):
            return []
        return leash(os.path.join(self.data_dir, BEAT_FILE), self.lost_after)

    def _beat(self) -> None:
        """The lease was renewed: what requeue jobs' leashes look at."""
        self._renewed_mono = time.monotonic()
        path = os.path.join(self.data_dir, BEAT_FILE)
        try:
            with open(path, "a"):
                os.utime(path)
        except OSError as exc:
            log.error("cannot touch %s: %s (requeue jobs stop when it gets old)", path,
                      exc.strerror)

    def moved_away(self, job: Any) -> bool:
        """Whether the cluster gave ``job`` to another node, or gave it up (LOST), while
        this node was away: then what ends here is not its end, and nothing is written."""
        from zephserver.web.models import Job

        if time.monotonic() - self._renewed_mono < self.lost_after / 2:
            return False  # our lease is fresh: nobody may have given our jobs away
        node, state = Job.objects.filter(pk=job.pk).values_list("node", "state").first() \
            or ("", J.LOST)
        if node == self.node and state != J.LOST:
            return False
        log.warning("job %d: its process here ended, but the cluster had %s: nothing "
                    "recorded", job.pk, "given it up (LOST)" if node == self.node else
                    f"given it to {node or 'the queue'}", extra={"job": job.pk})
        return True

    def _capacity_json(self) -> dict:
        """This node's capacity, beside its lease: where a job too big for the node it
        was submitted on may still fit."""
        return self.scheduler.capacity().to_json()  # type: ignore[attr-defined]

    def start_leases(self) -> list[Any]:
        """At start, once running jobs are re-adopted (cluster only): our lease, and a
        reconciliation first if the cluster gave this node up while it was away. The
        jobs being stopped are returned (their groups stay until they have stopped)."""
        from zephserver.web.models import NodeLease

        lease, made = NodeLease.objects.get_or_create(node=self.node,
                                                      defaults={"renewed": now()})
        stopping = []
        if not made and lease.lost_at is not None:
            stopping = self._stop_given_up(lease.lost_at)
            self._back_from_lost(lease.lost_at)
        NodeLease.objects.filter(node=self.node).update(renewed=_db_now(), lost_at=None,
                                                        capacity=self._capacity_json())
        self._beat()
        self.after(self.lost_after / RENEWALS_PER_LEASE, self._lease_tick)  # type: ignore[attr-defined]
        return stopping

    def _lease_tick(self) -> None:
        """Renew ours; declare lost who fell silent; give up who stayed silent. (In a
        savepoint: a database error here spoils nothing else of the batch.)"""
        from django.db import DatabaseError, transaction

        from zephserver.web.models import NodeLease

        try:
            with transaction.atomic():
                lost_at = (NodeLease.objects.filter(node=self.node)
                           .values_list("lost_at", flat=True).first())
                if lost_at is not None:  # given up while away (paused, cut off)
                    self._back_from_lost(lost_at)
                NodeLease.objects.filter(node=self.node).update(
                    renewed=_db_now(), lost_at=None, capacity=self._capacity_json())
                self._beat()
                self._declare_lost()
                self._give_up_down()
        except DatabaseError as exc:
            log.error("node lease: the database did not answer (%s); tried again in %gs",
                      exc, self.lost_after / RENEWALS_PER_LEASE)
        finally:
            self.after(self.lost_after / RENEWALS_PER_LEASE, self._lease_tick)  # type: ignore[attr-defined]

    def _declare_lost(self) -> None:
        from zephserver.web.models import NodeLease

        silent_since = _db_now() - datetime.timedelta(seconds=self.lost_after)
        for lease in (NodeLease.objects.filter(lost_at__isnull=True, renewed__lt=silent_since)
                      .exclude(node=self.node)):
            # exactly one node acts: the one whose conditional UPDATE took the row
            if NodeLease.objects.filter(node=lease.node, lost_at__isnull=True,
                                        renewed=lease.renewed).update(lost_at=_db_now()):
                self._node_lost(lease.node, lease.renewed)

    def _node_lost(self, node: str, since: Any) -> None:
        from zephserver.web.models import Job

        log.warning("node %s lost: not heard from since %s (NODE_LOST_AFTER %gs)", node,
                    since.isoformat(timespec="seconds"), self.lost_after)
        self._take_processes(node)
        jobs = Job.objects.select_related("owner").filter(
            node=node, state__in=[J.STARTING, J.RUNNING]).exclude(kind="service")
        for job in jobs.select_for_update(skip_locked=True):
            if job.state == J.STARTING and job.pid is None and job.kind in QUEUED_KINDS \
                    and not (job.extra or {}).get("external"):
                self.change(job, J.QUEUED, f"re-queued: node {node} was lost before it "  # type: ignore[attr-defined]
                            "started the job", node="", queued_at=now())
                self.enqueue(job)  # type: ignore[attr-defined]
                self._needs_plan = True
            elif job.kind == "session":
                self.change(job, J.LOST, f"node {node} lost (not heard from since "  # type: ignore[attr-defined]
                            f"{since.isoformat(timespec='seconds')})")
            elif getattr(self.apps.get(job.app), "requeue", False):  # type: ignore[attr-defined]
                # its leash stopped it on the lost node before now: a new attempt
                attempt = job.restarts + 2
                self.change(job, J.QUEUED, f"re-queued: node {node} lost (attempt "  # type: ignore[attr-defined]
                            f"{attempt})", node="", queued_at=now(), pid=None,
                            start_time=None, restarts=job.restarts + 1)
                self.enqueue(job)  # type: ignore[attr-defined]
                self._needs_plan = True
            else:
                transition(job, None, f"node {node} not responding since "
                           f"{since.isoformat(timespec='seconds')}", self.publish)  # type: ignore[attr-defined]

    def _take_processes(self, node: str) -> None:
        """The lost node's agent processes restart until deleted: this node takes them
        (its agent sets them up again from their source and starts them, once this
        batch is committed)."""
        from zephserver.web.models import Job

        taken = 0
        for job in (Job.objects.select_for_update(skip_locked=True)
                    .filter(kind="service", node=node).exclude(state__in=list(TERMINAL))):
            if job.extra.get("deleted"):
                continue
            running = job.state == J.RUNNING  # (its process died with its node, or is fenced)
            transition(job, J.BACKOFF if running else None, f"node {node} lost: starting "
                       f"again on {self.node}", self.publish,  # type: ignore[attr-defined]
                       extra={"phase": "backoff"} if running else None, node=self.node,
                       pid=None)
            taken += 1
        if taken:
            log.warning("node %s lost: %d agent process(es) start again here", node, taken)
            self.after(0.01, self._tell_agent)  # type: ignore[attr-defined]  # (after the commit)

    def _tell_agent(self) -> None:
        import contextlib

        from zephserver.errors import ServiceUnavailable

        with contextlib.suppress(ServiceUnavailable):  # (a node without the agent)
            agent = self.ctx.get("agent")  # type: ignore[attr-defined]
            agent.post(agent.adopt)

    def _give_up_down(self) -> None:
        """Jobs of a node silent for NODE_DOWN_AFTER become LOST (whoever sees it first;
        a row another node is changing is skipped and seen at the next tick)."""
        from zephserver.web.models import Job, NodeLease

        down = list(NodeLease.objects.filter(
            lost_at__isnull=False,
            renewed__lt=_db_now() - datetime.timedelta(seconds=self.down_after))
            .exclude(node=self.node).values_list("node", "renewed"))
        for node, since in down:
            jobs = Job.objects.select_related("owner").filter(
                node=node, state__in=[J.STARTING, J.RUNNING]).exclude(kind="service")
            for job in jobs.select_for_update(skip_locked=True):
                self.change(job, J.LOST, f"node {node} down: not heard from since "  # type: ignore[attr-defined]
                            f"{since.isoformat(timespec='seconds')} (NODE_DOWN_AFTER "
                            f"{self.down_after:g}s)")

    def _stop_given_up(self, lost_at: Any) -> list[Any]:
        """At start: jobs of this node the cluster made LOST while it was away, whose
        process still runs here, are stopped (TERM, grace, KILL) and say so."""
        from zephserver.web.models import Job

        gone = Job.objects.select_related("owner").filter(
            node=self.node, state=J.LOST, finished__gte=lost_at).exclude(kind="service")
        stopping = []
        for job in gone:
            executor = self.executor_for(job)  # type: ignore[attr-defined]
            if job.pid is None or not executor.alive(job):
                continue
            app = self.apps.get(job.app)  # type: ignore[attr-defined]
            log.warning("job %d: given up by the cluster while this node was away; "
                        "stopping what still runs here", job.pk, extra={"job": job.pk})
            executor.watch(job, lambda code: None)
            executor.stop(job, app.grace if app is not None else 10.0)
            transition(job, None, f"{job.state_reason}; its process was stopped when node "
                       f"{self.node} came back", self.publish)  # type: ignore[attr-defined]
            stopping.append(job)
        return stopping

    def _back_from_lost(self, lost_at: Any) -> None:
        """The cluster gave this node up at ``lost_at``: stop what it moved or gave up
        (still running here), and say the rest is ours again."""
        from zephserver.web.models import Job

        log.warning("this node was declared lost at %s: reconciling before it claims "
                    "anything", lost_at.isoformat(timespec="seconds"))
        records = {pk: rest for pk, *rest in Job.objects.filter(pk__in=list(self._active))
                   .values_list("id", "state", "node", "state_reason")}  # (one query)
        for job_id, active in list(self._active.items()):
            record = records.get(job_id)
            if record is None or record[0] == J.LOST or record[1] != self.node:
                log.warning("job %d: given up or moved by the cluster while this node was "
                            "away; stopping what still runs here", job_id,
                            extra={"job": job_id})
                if not active.launching:  # (a launching one is killed once started)
                    self.executor_for(active.job).stop(active.job, 0.0 if active.app is None  # type: ignore[attr-defined]
                                                       else active.app.grace)
                del self._active[job_id]
            elif record[2].startswith("node "):  # (the others wrote it: not in memory)
                transition(active.job, None, "running (this node is back)", self.publish)  # type: ignore[attr-defined]
