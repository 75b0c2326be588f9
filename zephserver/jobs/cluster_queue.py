"""One queue for the cluster: a batch job waits once for every node and starts on one
that has room (DESIGN.md, "A cluster is one system").

A batch job submitted to a cluster is recorded with no node (``node = ""``). Every node
keeps a copy of the cluster's waiting jobs in its own ``WaitingQueue``: loaded from the
database at start, then kept up to date by the ``jobs.updated`` events every node says
(each carries the queue fields of a batch job, ``queue_fields``). The node where a job is
submitted plans it at once (it starts there when there is room); the others plan it when
they hear it still waits.

Planning is serialised across the cluster by a PostgreSQL transaction-level advisory
lock: under it a node reads what runs on the other nodes (licences and per-user limits
are counted cluster-wide; cores and memory are each node's own), chooses, and claims its
choice with ``SELECT ... FOR UPDATE SKIP LOCKED`` on rows still QUEUED with no node,
setting its own name in the same transaction that makes them STARTING. A job is thus
claimed once, by one node; a copy that was claimed, cancelled or held elsewhere meanwhile
simply drops out of the choosing node's queue.
"""

import logging
from typing import Any

from zephserver.infra.cluster import node_urls
from zephserver.jobs.active import demand
from zephserver.jobs.cluster_sessions import session_fields
from zephserver.launch.scheduler import Running, Waiting
from zephserver.launch.states import JobState

log = logging.getLogger("zephserver.service.job_manager")

J = JobState
PLAN_LOCK = 0x7A657068  # "zeph": the advisory lock every node plans under
QUEUED_KINDS = ("batch", "session")  # kinds that wait in the cluster's queue


def node_places_and_urls(s: Any) -> tuple[set[str], dict[str, set[str]], dict[str, str]]:
    """This node's name and labels (where an app's ``nodes`` may send work), every
    node's (CLUSTER_SERVER_LIST entries), and where clients reach each node."""
    places = {e["hostname"]: {e["hostname"], *e.get("labels", [])}
              for e in s.CLUSTER_SERVER_LIST}
    urls = node_urls(s) if len(s.CLUSTER_SERVER_LIST) >= 2 else {}
    return places.get(s.NODE_NAME, {s.NODE_NAME}), places, urls


def queue_fields(job: Any) -> dict | None:
    """What another node needs to keep its copy of the queue, and its proxy map (None:
    not a kind that waits in the cluster's queue)."""
    if job.kind not in QUEUED_KINDS:
        return None
    queued = job.queued_at or job.created
    fields = {"state": str(job.state), "node": job.node, "app": job.app, "kind": job.kind,
              "resources": job.resources, "priority": job.priority, "seq": job.seq,
              "queued_at": queued.timestamp() if queued else 0.0}
    if job.kind == "session":
        fields.update(session_fields(job))
    return fields


class ClusterQueue:
    """Mixed into the job manager (it provides node, cluster, apps, waiting, post, ...)."""

    node: str
    cluster: Any
    apps: dict
    waiting: Any
    _needs_plan: bool
    _fresh: dict
    places: set[str]  # this node's name and labels (CLUSTER_SERVER_LIST)
    node_places: dict[str, set[str]]  # every node's name and labels

    @property
    def shared_queue(self) -> bool:
        return bool(self.cluster.enabled)

    def node_for_new(self, kind: str) -> str:
        """The node a new job is recorded with: none for a batch job of a cluster (it
        waits for whichever node has room), this one otherwise."""
        return "" if self.shared_queue and kind in QUEUED_KINDS else self.node

    # -- keeping the copy of the queue ----------------------------------------------------

    def heard_update(self, update: dict) -> None:  # the cluster's dispatcher thread
        fields = update.get("queue")
        if fields is not None:
            self.post(self._queue_heard, update["id"], update["owner"], fields)  # type: ignore[attr-defined]

    def _queue_heard(self, job_id: int, owner: int, fields: dict) -> None:
        """Another node changed a batch job: our copy of the queue follows, and what it
        freed (an end, a claim that failed) is planned again."""
        if self.active(job_id) is not None:  # type: ignore[attr-defined]
            return  # ours now: what we hold is what counts
        if fields.get("kind") == "session":
            self.session_heard(job_id, fields)  # type: ignore[attr-defined]
        self.dequeue(job_id)  # type: ignore[attr-defined]
        if fields["node"] == "" and fields["state"] in (J.QUEUED, J.HELD):
            self.waiting.add(Waiting(job_id, owner,
                                     demand(self.apps.get(fields["app"]), fields["resources"]),
                                     fields["priority"], fields["seq"], fields["queued_at"],
                                     fields["app"]),
                             held=fields["state"] == J.HELD)
        self._needs_plan = True

    def load_waiting(self) -> None:
        """The waiting queue as the database has it: the cluster's waiting jobs (no node
        yet) and this node's own (at start; in a cluster, again at each safety tick)."""
        from django.db.models import Q

        from zephserver.web.models import Job

        rows = (Job.objects.filter(Q(node=self.node) | Q(node=""), state__in=[J.QUEUED, J.HELD])
                .exclude(kind="service").exclude(extra__has_key="external")  # (Slurm's)
                .values_list("id", "owner_id", "resources", "priority", "seq", "queued_at",
                             "created", "state", "app"))
        found = set()
        for pk, owner, resources, priority, seq, queued_at, created, state, app in (
                rows.iterator()):
            found.add(pk)
            if pk not in self.waiting:
                self.waiting.add(Waiting(pk, owner, demand(self.apps.get(app), resources),
                                         priority, seq, (queued_at or created).timestamp(),
                                         app), held=state == J.HELD)
        for entry in list(self.waiting.entries()):
            if entry.id not in found and entry.id not in self._fresh:
                self.dequeue(entry.id)  # type: ignore[attr-defined]

    # -- planning across the cluster ------------------------------------------------------

    def for_here(self, ordered: list[Waiting]) -> tuple[list[Waiting], dict[int, str]]:
        """The waiting jobs this node may run (an app's ``nodes``: names or labels), and
        why the others wait."""
        # What depends on the app alone is judged once an app: a plan looks at every
        # waiting job (a few apps, thousands of jobs: a sixth of a short job's manager
        # time went to judging each job's app again).
        barred = {name: self._why_not_here(app) for name, app in self.apps.items()}
        if not self.shared_queue and not any(barred.values()):
            return list(ordered), {}
        mine, elsewhere = [], {}
        for entry in ordered:
            if why := barred.get(entry.app):
                elsewhere[entry.id] = why
            elif self.shared_queue and (too_big := self.scheduler.never_fits(  # type: ignore[attr-defined]
                    {"cores": entry.demand.cores, "memory": entry.demand.memory,
                     "licenses": {}})):
                elsewhere[entry.id] = f"waiting for a bigger node ({too_big[1]})"
            else:
                mine.append(entry)
        return mine, elsewhere

    def _why_not_here(self, app: Any) -> str:
        """Why no job of ``app`` may start on this node now ("": they may)."""
        wanted = getattr(app, "nodes", None)
        if wanted and not set(wanted) & self.places:
            return f"waiting for a node among {', '.join(wanted)}"
        if not self.interactive.may_have_port(app):  # type: ignore[attr-defined]
            return self.interactive.no_port_reason(app)  # type: ignore[attr-defined]
        return ""

    def cluster_never_fits(self, app: Any, needs: dict, refused: Any) -> Any:
        """``refused`` (this node's never_fits), unless another node could hold it."""
        if refused is None or refused[0] not in ("cores", "memory") or not self.shared_queue:
            return refused
        return None if self.fits_some_node(app, needs) else (  # (it waits for that node)
            refused[0], f"{refused[1]}, nor does any node of the cluster")

    def fits_some_node(self, app: Any, needs: dict) -> bool:
        """Whether a node of the cluster (not lost, allowed by the app's ``nodes``) has
        the cores and memory ``needs`` asks for, as its lease last said."""
        from zephserver.web.models import NodeLease

        wanted = set(getattr(app, "nodes", None) or ())
        for node, capacity in (NodeLease.objects.filter(lost_at__isnull=True)
                               .values_list("node", "capacity")):
            if wanted and not wanted & self.node_places.get(node, {node}):
                continue
            if capacity and needs["cores"] <= capacity.get("cores", 0) and \
                    needs["memory"] <= capacity.get("memory", 0):
                return True
        return False

    def plan_for(self, mine: list[Waiting], now: float) -> Any:
        """The queue's plan for this node (None: another node plans now). In a cluster,
        the other nodes' holdings count too, read under the plan lock; but when nothing
        would start here even counting this node's alone, their usage (which only adds)
        cannot change that: no lock is taken, no query made."""
        running = self.holdings()  # type: ignore[attr-defined]
        plan = self.scheduler.plan(mine, running, now)  # type: ignore[attr-defined]
        if not self.shared_queue or not plan.start:
            return plan
        elsewhere = self.cluster_holdings()
        if elsewhere is None:
            return None
        return self.scheduler.plan(mine, running + elsewhere, now)  # type: ignore[attr-defined]

    def cluster_holdings(self) -> list[Running] | None:
        """Under the plan lock: what runs on the other nodes (their licences and their
        owners' usage count here too; their cores and memory do not). None: another node
        holds the lock (it plans now); the manager's thread never waits for it."""
        from django.db import connection

        from zephserver.web.models import Job

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [PLAN_LOCK])
            if not cursor.fetchone()[0]:
                return None
        rows = (Job.objects.filter(state__in=[J.STARTING, J.RUNNING])
                .exclude(node=self.node).exclude(node="").exclude(kind="service")
                .values_list("owner_id", "resources", "app"))
        return [Running(owner, demand(self.apps.get(app), resources), here=False)
                for owner, resources, app in rows.iterator()]

    # -- a claim whose transaction failed -------------------------------------------------
    # The batch that claimed a job failed at its commit (the database went away, or ended
    # this node's transaction after a pause): in memory the job is ours and STARTING, on
    # disk it is not. Meanwhile another node may have claimed it. So the batch's rows are
    # written again only for the jobs still unclaimed (locked, in the rewrite's own
    # transaction); the others are dropped here and never started: no job runs twice.

    def claims_begin(self) -> None:
        """A group (one transaction) begins."""
        self._claimed: set[int] = set()  # claimed in the transaction now open

    def claims_end(self) -> None:
        """The inbox's batch is committed and its launches filtered."""
        self._claimed = set()
        self._lost_claims: set[int] = set()

    def confirm_rewrite(self, todo: list) -> list:
        from zephserver.web.models import Job

        ids = [job.pk for job, _ in todo if job.pk in self._claimed]
        if not ids:
            return todo
        still = set(Job.objects.select_for_update().filter(pk__in=ids, state=J.QUEUED)
                    .filter(node__in=["", self.node]).values_list("pk", flat=True))
        Job.objects.filter(pk__in=still).update(node=self.node)  # (the claim, again)
        for job_id in set(ids) - still:
            log.warning("job %d: claimed here in a batch that failed, and meanwhile taken "
                        "or changed elsewhere: not started here", job_id,
                        extra={"job": job_id})
            self._claimed.discard(job_id)
            self._lost_claims.add(job_id)
            self._unpublished.pop(job_id, None)  # type: ignore[attr-defined]
        return [(job, names) for job, names in todo if job.pk not in self._lost_claims]

    def claim_was_lost(self, job: Any) -> bool:
        """(after the batch) ``job`` was claimed by a batch that failed and is not ours:
        forget what was prepared for it."""
        if job.pk not in self._lost_claims:
            return False
        self.interactive.ports.release(job.pk)  # type: ignore[attr-defined]
        self._env.pop(job.pk, None)  # type: ignore[attr-defined]
        return True

    def unclaim(self, job: Any) -> None:
        """A job claimed here that cannot start here after all (no free port): back to
        the cluster's queue, and the other nodes told."""
        from zephserver.web.models import Job

        Job.objects.filter(pk=job.pk, node=self.node).update(node="")
        job.node = ""
        self.announce(job)  # type: ignore[attr-defined]

    def claim(self, ids: list[int]) -> list[int]:
        """Of ``ids`` (chosen to start here), those this node now owns: still QUEUED with
        no node, locked (skipping rows another node is claiming) and given this node's
        name in the current transaction. The others leave our copy of the queue."""
        from django.db import connection

        from zephserver.web.models import Job

        if not ids:
            return []
        with connection.cursor() as cursor:  # (one round trip: lock, check and claim)
            cursor.execute(
                f"UPDATE {Job._meta.db_table} SET node = %s WHERE id IN (SELECT id FROM "
                f"{Job._meta.db_table} WHERE id = ANY(%s) AND state = %s AND node IN "
                "('', %s) FOR UPDATE SKIP LOCKED) RETURNING id",
                [self.node, list(ids), str(J.QUEUED), self.node])
            mine = {row[0] for row in cursor.fetchall()}
        self._claimed |= mine
        taken = [i for i in ids if i not in mine]
        for job_id in taken:
            self.dequeue(job_id)  # type: ignore[attr-defined]
        if taken:  # our copy was stale (another node's news of a job can come before the
            # news that it waits): the jobs behind it are planned again at once
            self.kick()  # type: ignore[attr-defined]
        return [i for i in ids if i in mine]
