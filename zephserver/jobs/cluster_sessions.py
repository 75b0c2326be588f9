"""Sessions in a cluster (DESIGN.md, "A cluster is one system").

A session asked for on any node waits in the cluster's one queue like a batch job and
starts on a node that has room and a free port in its app's ranges (a range whose host
names one node, by its hostname or an address no other node shares, is that node's;
the other ranges are every node's). The node that was asked keeps the client's request
and answers it when it hears that the session is ready, wherever it runs, or why it
ended. Every node's proxy map lists every running session of the cluster.

A session that may not queue (the wslink launcher's default) is refused only once every
node has had its chance: the node that was asked plans first; if it cannot start the
session, it asks each peer to plan now (``jobs.plan_now``: the peer answers once its plan
has run, whether it took the session), and if none did it withdraws the session in the
database, only if it is still unclaimed (a peer that claims it at that very moment wins;
the client then gets the session).
"""

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from zephserver.errors import RpcCode, RpcError
from zephserver.launch.states import TERMINAL, JobState

log = logging.getLogger(__name__)

J = JobState
PLAN_NOW = "jobs.plan_now"
ASKERS = 4  # threads asking peers (each blocks on one peer's answer at a time)


def session_fields(job: Any) -> dict:
    """What the other nodes need of a session's change: its proxy map entry."""
    extra = job.extra or {}
    return {"host": extra.get("host"), "port": extra.get("port")}


class ClusterSessions:
    """Mixed into the job manager (it provides node, cluster, interactive, waiting, ...)."""

    node: str
    cluster: Any
    interactive: Any
    waiting: Any
    call_timeout_s: float
    _needs_plan: bool

    _probes: dict[int, list[Future]]  # (set by the manager: {} also without a cluster)

    def start_cluster_sessions(self) -> None:
        self._askers = ThreadPoolExecutor(ASKERS, thread_name_prefix="zeph-session-place")
        self.cluster.calls.handle(PLAN_NOW, self.serve_plan_now)

    def stop_cluster_sessions(self) -> None:
        self._askers.shutdown(wait=False, cancel_futures=True)

    # -- what the other nodes say of sessions ----------------------------------------------

    def session_heard(self, job_id: int, fields: dict) -> None:
        """A session of another node changed: the proxy map follows, and a client of ours
        waiting for it is answered (manager thread)."""
        from zephserver.web.models import Job

        keeper = self.interactive
        state = fields["state"]
        if state == J.RUNNING and fields.get("port") is not None:
            keeper.list_session(job_id, fields["host"], fields["port"])
        elif state in TERMINAL:
            keeper.unlist(job_id)
        if job_id in keeper.waiters and (state == J.RUNNING or state in TERMINAL):
            job = Job.objects.select_related("owner").filter(pk=job_id).first()
            if job is not None:
                keeper.answer_elsewhere(job)

    def load_sessions_elsewhere(self) -> None:
        """At start: the other nodes' running sessions, for this node's proxy map."""
        from zephserver.web.models import Job

        rows = (Job.objects.filter(kind="session", state=J.RUNNING).exclude(node=self.node)
                .values_list("id", "extra"))
        for job_id, extra in rows.iterator():
            if extra and extra.get("port") is not None:
                self.interactive.list_session(job_id, extra["host"], extra["port"])

    # -- a session that may not queue: every node's chance, then refused ----------------

    def refuse_session(self, job: Any, why: str) -> None:
        """``job`` (a session that may not queue) did not start here (manager thread)."""
        peers = [p for p in self.cluster.peers if self.cluster.is_up(p)] \
            if self.cluster.enabled and job.node == "" else []
        if not peers:
            self.cancel_waiting(job, f"refused: {why}")  # type: ignore[attr-defined]
            return
        # once this batch is committed (a peer must find the session in the database)
        self.post(self._askers.submit, self._ask_peers, job.pk, {self.node: why},  # type: ignore[attr-defined]
                  peers)

    def _ask_peers(self, job_id: int, reasons: dict[str, str], peers: list[str]) -> None:
        """(an asking thread) Each peer in turn plans the session now; the first that
        takes it ends the round. None did: withdraw it."""
        for peer in peers:
            try:
                answer = self.cluster.calls.call(peer, PLAN_NOW, {"id": job_id},
                                                 self.call_timeout_s)
            except RpcError as exc:
                reasons[peer] = exc.message
                continue
            if answer.get("taken"):
                return  # its client is answered when it is ready (or ends)
            reasons[peer] = answer.get("reason") or "not started"
        self.post(self._withdraw, job_id, reasons)  # type: ignore[attr-defined]

    def _withdraw(self, job_id: int, reasons: dict[str, str]) -> None:
        """Refuse the session if no node has claimed it meanwhile. The row lock waits for
        a claim in flight, so a session is either withdrawn here or started there."""
        from zephserver.web.models import Job

        row = (Job.objects.select_for_update().filter(pk=job_id, node="", state=J.QUEUED)
               .select_related("owner").first())
        if row is None:
            return  # claimed (answered when ready), or cancelled meanwhile
        why = "; ".join(f"{node}: {reason}" for node, reason in reasons.items())
        self.cancel_waiting(row, f"refused: no node can start it now ({why})")  # type: ignore[attr-defined]

    # -- a peer asked us to plan a session now -------------------------------------------

    def serve_plan_now(self, params: Any) -> dict:
        """(a cluster-call worker thread) Plan now; whether we took the session."""
        job_id = params.get("id") if isinstance(params, dict) else None
        if isinstance(job_id, bool) or not isinstance(job_id, int):
            raise RpcError(RpcCode.INVALID_PARAMS, "id must be a job id", {"field": "id"})
        probe: Future = self.call(self._probe, job_id)  # type: ignore[attr-defined]
        return probe.result(self.call_timeout_s)

    def _probe(self, job_id: int) -> Future:
        from zephserver.web.models import Job

        answer: Future = Future()
        if self.active(job_id) is not None:  # type: ignore[attr-defined]
            answer.set_result({"taken": True})
            return answer
        if job_id not in self.waiting:  # the announcement may not be here yet
            row = Job.objects.filter(pk=job_id, node="", state=J.QUEUED).first()
            if row is None:
                answer.set_result({"taken": False, "reason": "no longer waiting"})
                return answer
            self.enqueue(row)  # type: ignore[attr-defined]
        self._probes.setdefault(job_id, []).append(answer)
        self._needs_plan = True
        return answer

    def settle_probes(self) -> None:
        """After a plan (and the launches it chose, committed): answer the peers that
        asked whether we took their sessions."""
        if not self._probes:
            return
        probes, self._probes = self._probes, {}
        for job_id, answers in probes.items():
            taken = self.active(job_id) is not None  # type: ignore[attr-defined]
            reason = None if taken else (self.waiting.reason(job_id) or "not started")
            for answer in answers:
                answer.set_result({"taken": taken, "reason": reason})
