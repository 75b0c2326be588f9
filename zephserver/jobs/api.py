"""The job core's API: what the JSON-RPC tasks and the REST faces call.

Any thread may call these. Methods marked ``@on_actor`` run on the job manager's thread
(they read or change what it holds); those marked ``@at_owner`` run where the job runs:
here, or on its node, forwarded over the cluster bus (-32007 if that node does not
answer within CLUSTER_CALL_TIMEOUT); the others only read the shared database. Every method
checks the caller: a user sees and acts on their own jobs, staff on all; a bad argument
is an RpcError naming the field (-32602), another user's job -32002, an unknown one
-32005, a state that does not allow it -32006.

``JobsApi`` is a part of ``JobManagerService`` (service/job_manager.py), which provides
the attributes it uses: ``apps``, ``node``, ``waiting``, ``feed``, ``interactive``,
``scheduler``, ``rooms`` and the state-changing methods.
"""

import contextlib
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from zephserver import metrics
from zephserver.actor import on_actor
from zephserver.audit import audit, audit_when_done
from zephserver.database import in_shapes
from zephserver.errors import RpcCode, RpcError
from zephserver.jobs.active import counted
from zephserver.jobs.reports import placed
from zephserver.jobs.transition import now
from zephserver.launch.accounts import OWNER, effective
from zephserver.launch.apps import App, ParamError
from zephserver.launch.output import read_range
from zephserver.launch.states import TERMINAL, WAITING, JobState
from zephserver.task.base import UserInfo

log = logging.getLogger("zephserver.jobs")

J = JobState
MAX_OUTPUT_READ = 1 << 20
MAX_PRIORITY = 10


def rpc_error(code: RpcCode, message: str, field: str | None = None) -> RpcError:
    return RpcError(code, message, {"field": field} if field else None)


# The methods a node serves for another: name -> the method as it runs where the job is.
FORWARDED: dict[str, Callable] = {}


def at_owner(actor: bool = True, audited: str | None = None) -> Callable[[Callable], Callable]:
    """Declare a method that needs the node running the job (its process, its log, its
    place in that node's queue): it runs here when the job is this node's (on the actor
    thread when ``actor``), and is forwarded to the job's node otherwise. ``audited``:
    the action an audit line records once it succeeded (on the node that was asked)."""
    def wrap(method: Callable) -> Callable:
        local = on_actor(method) if actor else method
        FORWARDED[method.__name__] = local

        @functools.wraps(method)
        def run(self: "JobsApi", user: UserInfo, job_id: Any, *args: Any) -> Any:
            node = self._node_of(user, job_id)
            if node == self.node:
                result = local(self, user, job_id, *args)
            else:
                result = self.forward(node, method.__name__, user, job_id, *args)
            if audited:
                audit(audited, user, f"job {job_id}")
            return result
        return run
    return wrap


class JobsApi:
    # provided by the job manager (service/job_manager.py) and its Actor base
    apps: dict[str, App]
    run_as: str | None
    user_map: dict[str, str]
    node: str
    cluster: Any
    call_timeout_s: float
    database_url: str | None
    waiting: Any
    feed: Any
    interactive: Any
    scheduler: Any
    rooms: Any
    active: Callable[[int], Any]
    holdings: Callable[[], list]
    change: Callable[..., None]
    stop: Callable[..., None]
    publish: Callable[[Any], None]
    enqueue: Callable[[Any], None]
    dequeue: Callable[[int], Any]
    replan: Callable[[], None]
    forget_fresh: Callable[[int], None]
    on_actor_thread: Callable[[], bool]
    call: Callable[..., Any]
    call_soon: Callable[..., Future]
    _queue_new: Callable[[Any], dict]
    expect_launch: Callable[[App], None]
    node_for_new: Callable[[str], str]

    # -- looking things up ----------------------------------------------------------------

    def _job(self, user: UserInfo, job_id: Any) -> Any:
        """The job (the live object when the manager holds one), if ``user`` may see it."""
        from zephserver.web.models import Job

        if isinstance(job_id, bool) or not isinstance(job_id, int):
            raise rpc_error(RpcCode.INVALID_PARAMS, "id must be an integer", "id")
        job = None
        if self.on_actor_thread():
            active = self.active(job_id)
            job = active.job if active is not None else None
        if job is None:
            job = Job.objects.select_related("owner").filter(pk=job_id).first()
        # Another user's job is answered exactly as one that does not exist: an id
        # reveals nothing (not even that it was taken).
        if job is None or (job.owner_id != user.id and not user.is_staff):
            raise rpc_error(RpcCode.NOT_FOUND, f"no job {job_id}", "id")
        return job

    def _local_job(self, user: UserInfo, job_id: Any) -> Any:
        """``_job``, for what needs the job's node (its process, its log or its place in
        that node's queue): another node's job is refused with that node's name."""
        job = self._job(user, job_id)
        if job.node == "" and self.on_actor_thread():  # (changed in this batch: locked)
            job = self._waiting_in_cluster(job)
        if job.node not in (self.node, ""):
            raise RpcError(RpcCode.CONFLICT, f"job {job.pk} is handled by node {job.node}, "
                           f"not {self.node}", {"field": "id", "node": job.node})
        return job

    def _waiting_in_cluster(self, job: Any) -> Any:
        """A job waiting in the cluster's queue (no node yet), locked for the current
        batch: no node can claim it while it is changed here. One claimed meanwhile is
        answered -32006 with its node (asked again, the call goes there)."""
        from zephserver.web.models import Job

        locked = Job.objects.select_for_update().select_related("owner").get(pk=job.pk)
        if locked.node != "":
            raise RpcError(RpcCode.CONFLICT, f"job {job.pk} has just started on node "
                           f"{locked.node}; ask again", {"field": "id", "node": locked.node})
        return locked

    def _node_of(self, user: UserInfo, job_id: Any) -> str:
        """The node running job ``job_id``, if ``user`` may see the job (one query)."""
        from zephserver.web.models import Job

        if isinstance(job_id, bool) or not isinstance(job_id, int):
            raise rpc_error(RpcCode.INVALID_PARAMS, "id must be an integer", "id")
        row = Job.objects.filter(pk=job_id).values_list("node", "owner_id").first()
        if row is None or (row[1] != user.id and not user.is_staff):  # as in _job
            raise rpc_error(RpcCode.NOT_FOUND, f"no job {job_id}", "id")
        return row[0] or self.node  # (waiting in the cluster's queue: any node acts on it)

    def forward(self, node: str, method: str, user: UserInfo, *args: Any) -> Any:
        """``method(user, *args)`` as ``node`` answers it (over the cluster bus)."""
        cluster = self.cluster
        if not cluster.enabled or node not in cluster.peers:
            raise RpcError(RpcCode.CONFLICT, f"job {args[0]} is handled by node {node}, "
                           "which is not in this cluster", {"field": "id", "node": node})
        params = {"method": method, "args": list(args), "user": dataclasses.asdict(user)}
        return cluster.calls.call(node, "jobs.forwarded", params, self.call_timeout_s)

    def serve_forwarded(self, params: dict) -> Any:
        """What another node forwarded here (a cluster worker thread)."""
        method = FORWARDED.get(params.get("method", ""))
        if method is None:
            raise RpcError(RpcCode.METHOD_NOT_FOUND, f"{params.get('method')!r} is not "
                           "forwarded")
        user = UserInfo(**params["user"])
        try:
            return method(self, user, *params["args"])
        except RpcError as exc:
            if isinstance(exc.data, dict) and "node" in exc.data:
                log.warning("node %s: a forwarded %s for a job this node does not run: %s",
                            self.node, params["method"], exc.message)
            raise

    def app_for(self, name: Any, user: UserInfo | None = None, field: str = "app") -> App:
        """The app ``user`` asks to launch (None: of a job that exists): -32602 if there
        is none, -32002 if they may not launch it."""
        app = self.apps.get(name) if isinstance(name, str) else None
        if app is None:
            raise rpc_error(RpcCode.INVALID_PARAMS, f"unknown app {name!r}", field)
        if user is not None and not app.allows(user):
            raise rpc_error(RpcCode.FORBIDDEN, f"you may not launch app {name!r}", field)
        if (user is not None and effective(app.run_as, self.run_as) == OWNER
                and user.username not in self.user_map):
            raise rpc_error(RpcCode.FORBIDDEN, f"app {name!r} runs as its user's own Unix "
                            f"account, and {user.username} has none (USER_MAP)", field)
        return app

    def to_json(self, job: Any) -> dict:
        data = job.to_json()
        if job.state == J.QUEUED:
            reason = self.waiting.reason(job.pk)
            if reason:
                data["state_reason"] = reason
        return data

    # -- submitting -----------------------------------------------------------------------

    def _checked(self, app: App, params: Any, resources: Any) -> tuple[dict, dict]:
        """The params and resources of a new job of ``app``, checked."""
        try:
            cleaned = app.clean_params(params)
        except ParamError as exc:
            raise rpc_error(RpcCode.INVALID_PARAMS, str(exc), exc.field) from None
        return cleaned, self._resources(app, cleaned, resources)

    def _new_job(self, user: UserInfo, app: App, cleaned: dict, needs: dict, priority: int,
                 **fields: Any) -> Any:
        """A QUEUED record of checked values, not saved yet."""
        from django.contrib.auth import get_user_model

        from zephserver.web.models import Job

        # The caller is authenticated: no need to fetch the user row again.
        owner = get_user_model()(pk=user.id, username=user.username)
        created = now()
        return Job(app=app.name, kind=app.kind, owner=owner, node=self.node_for_new(app.kind),
                   state=J.QUEUED,
                   state_reason="queued", params=cleaned, resources=needs, priority=priority,
                   wall_time=app.wall_time, created=created, queued_at=created,
                   seq=time.time(), **fields)  # seq: FIFO; queue.move reassigns it

    def submit(self, user: UserInfo, app_name: Any, params: Any, resources: Any,
               priority: Any, name: Any) -> Future:
        """Check and queue a job: a Future of its record (a burst of submits from many
        task threads then reaches the manager together, and is written in one commit)."""
        app = self.app_for(app_name, user)
        cleaned, needs = self._checked(app, params, resources)
        prio = self._priority(user, priority)
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise rpc_error(RpcCode.INVALID_PARAMS, "name must be a string of at most 200 "
                            "characters", "name")
        job = self._new_job(user, app, cleaned, needs, prio, name=name or "")
        self.expect_launch(app)
        return audit_when_done(self.call_soon(self._queue_new, job), "launch", user,
                               lambda made: f"job {made['id']} (app {app.name})")

    def _resources(self, app: App, params: dict, override: Any) -> dict:
        needs = app.resources_for(params)
        if override is not None:
            if not isinstance(override, dict) or set(override) - {"cores", "memory"}:
                raise rpc_error(RpcCode.INVALID_PARAMS, "resources may set only cores and "
                                "memory", "resources")
            for key, value in override.items():
                if isinstance(value, bool) or not isinstance(value, int) or value < needs[key]:
                    raise rpc_error(RpcCode.INVALID_PARAMS, f"resources.{key} must be an "
                                    f"integer >= {needs[key]} (what app {app.name!r} needs)",
                                    f"resources.{key}")
                needs[key] = value
        refused = self.scheduler.never_fits(needs) if counted(app) else None  # (Slurm's say)
        refused = self.cluster_never_fits(app, needs, refused)
        if refused is not None:
            resource, why = refused
            field = _param_feeding(app, resource) or (
                f"resources.{resource}" if resource in ("cores", "memory") else "resources")
            raise rpc_error(RpcCode.INVALID_PARAMS, why, field)
        return needs

    @staticmethod
    def _priority(user: UserInfo, priority: Any) -> int:
        if priority is None:
            return 0
        if isinstance(priority, bool) or not isinstance(priority, int) or not (
                -MAX_PRIORITY <= priority <= MAX_PRIORITY):
            raise rpc_error(RpcCode.INVALID_PARAMS, f"priority must be an integer from "
                            f"{-MAX_PRIORITY} to {MAX_PRIORITY}", "priority")
        if priority > 0 and not user.is_staff:
            raise rpc_error(RpcCode.FORBIDDEN, "a priority above 0 needs staff", "priority")
        return priority

    # -- reading --------------------------------------------------------------------------

    @on_actor
    def get(self, user: UserInfo, job_id: Any) -> dict:
        return self.to_json(self._job(user, job_id))

    def list_jobs(self, user: UserInfo, state: Any = None, app: Any = None, owner: Any = None,
                  limit: int = 50, offset: int = 0) -> dict:
        from zephserver.web.models import Job

        jobs = Job.objects.select_related("owner").order_by("-id")
        if not user.is_staff:
            if owner not in (None, user.username):
                raise rpc_error(RpcCode.FORBIDDEN, "only staff may list other users' jobs",
                                "owner")
            jobs = jobs.filter(owner_id=user.id)
        elif owner is not None:
            jobs = jobs.filter(owner__username=owner)
        if state is not None:
            states = [state] if isinstance(state, str) else state
            if not isinstance(states, list) or not all(s in J.__members__ for s in states):
                raise rpc_error(RpcCode.INVALID_PARAMS, f"state must be one or a list of "
                                f"{', '.join(J.__members__)}", "state")
            jobs = jobs.filter(state__in=states)
        if app is not None:
            jobs = jobs.filter(app=app)
        if not 1 <= limit <= 500:
            raise rpc_error(RpcCode.INVALID_PARAMS, "limit must be from 1 to 500", "limit")
        if offset < 0:
            raise rpc_error(RpcCode.INVALID_PARAMS, "offset must be >= 0", "offset")
        page = [self.to_json(j) for j in jobs[offset:offset + limit]]
        return {"jobs": page, "total": jobs.count(), "offset": offset, "limit": limit}

    @at_owner(actor=False)
    def output(self, user: UserInfo, job_id: Any, offset: int, limit: int) -> dict:
        job = self._local_job(user, job_id)
        if offset < 0:
            raise rpc_error(RpcCode.INVALID_PARAMS, "offset must be >= 0", "offset")
        if not 1 <= limit <= MAX_OUTPUT_READ:
            raise rpc_error(RpcCode.INVALID_PARAMS, f"limit must be from 1 to "
                            f"{MAX_OUTPUT_READ}", "limit")
        data, size = b"", 0
        if job.log_path:  # a job that never started has no log yet
            data = read_range(job.log_path, offset, limit)
            with contextlib.suppress(FileNotFoundError):
                size = os.path.getsize(job.log_path)
        end = offset + len(data)
        return {"id": job.pk, "offset": offset, "data": data.decode("utf-8", "replace"),
                "next_offset": end, "size": size,
                "eof": job.state in TERMINAL and end >= size}

    @on_actor
    def queue_list(self, user: UserInfo) -> list[dict]:
        from zephserver.web.models import Job

        listed = self.waiting.listing(None if user.is_staff else user.id)
        jobs = Job.objects.select_related("owner").in_bulk(in_shapes([i for _, i in listed]))
        return [{**self.to_json(jobs[i]), "position": position} for position, i in listed
                if i in jobs]

    @on_actor
    def node_resources(self, params: Any = None) -> dict:
        """This node's capacity, what is free, and its jobs (also served to other nodes)."""
        capacity = self.scheduler.capacity()
        free = capacity.copy()
        for held in self.holdings():
            free.take(held.demand)
        return {"node": self.node, "state": "up", "url": self.node_urls.get(self.node),
                "capacity": capacity.to_json(),
                "free": free.to_json(), "running": len(self.holdings()),
                "queued": self.waiting.queued, "held": self.waiting.held}

    def resources_status(self) -> dict:
        """This node's resources; in a cluster also every node's (``nodes``, asked to
        each, "unreachable" for a node that does not answer) and their ``total``."""
        here = self.node_resources()
        if not self.cluster.enabled:
            return here
        nodes = [here]
        for peer in sorted(self.cluster.peers):
            try:
                nodes.append(self.cluster.calls.call(peer, "jobs.resources", {},
                                                     self.call_timeout_s))
            except RpcError as exc:
                nodes.append({"node": peer, "state": "unreachable", "reason": exc.message,
                              "url": self.node_urls.get(peer)})
        up = [n for n in nodes if n["state"] == "up"]
        total: dict[str, Any] = {k: sum(n[k] for n in up) for k in ("running", "queued",
                                                                      "held")}
        for key in ("capacity", "free"):
            total[key] = {r: sum(n[key][r] for n in up) for r in ("cores", "memory")}
        return {**here, "nodes": nodes, "total": total}

    def metric_families(self) -> list:
        """This node's jobs by kind, app and state (sessions and agent processes apart
        too), and its queue, read now. Any thread but the loop's."""
        from django.db import close_old_connections
        from django.db.models import Count

        from zephserver.web.models import Job

        try:
            rows = list(Job.objects.filter(node=self.node).values_list("kind", "app", "state")
                        .annotate(n=Count("id")).order_by())
        finally:
            close_old_connections()
        by_state: dict[str, dict[str, int]] = {"session": {}, "service": {}}
        for kind, _app, state, n in rows:
            if kind in by_state:
                by_state[kind][state] = by_state[kind].get(state, 0) + n
        return [metrics.JOBS.family(((k, a, st), n) for k, a, st, n in rows),
                metrics.SESSIONS.family(((st,), n) for st, n in by_state["session"].items()),
                metrics.AGENT_PROCESSES.family(((st,), n)
                                               for st, n in by_state["service"].items()),
                metrics.QUEUE_LENGTH.family([((), len(self.waiting))])]

    def status_info(self) -> dict:
        """For zephserver-status: the database's state; in a cluster, every node, its
        state and resources, and the jobs running on it (from the shared database, also
        for a node down)."""
        from django.db import DatabaseError, close_old_connections
        from django.db.models import Count

        from zephserver.database import redact, unavailable_reason
        from zephserver.web.models import Job

        database = {"url": redact(self.database_url), "state": "ok"}
        try:
            running = dict(Job.objects.filter(state__in=[J.STARTING, J.RUNNING])
                           .values_list("node").annotate(n=Count("id")))
        except DatabaseError as exc:
            running = {}
            database.update(state="unavailable", reason=unavailable_reason(exc) or str(exc))
        finally:
            close_old_connections()
        problems = self.health_problems()
        if problems and database["state"] == "ok":
            database.update(state="failing", reason="; ".join(problems))
        if not self.cluster.enabled:
            return {"database": database}
        status = self.resources_status()
        peers = {p["node"]: p for p in self.cluster.status()["peers"]}
        nodes = [{**n, "jobs_running": running.get(n["node"], 0),
                  "last_seen": peers.get(n["node"], {}).get("last_seen")}
                 for n in status["nodes"]]
        return {"database": database, "nodes": nodes, "total": status["total"]}

    # -- acting ---------------------------------------------------------------------------

    @at_owner(audited="cancel")
    def cancel(self, user: UserInfo, job_id: Any) -> dict:
        job = self._local_job(user, job_id)
        state = JobState(job.state)
        if state in TERMINAL:
            raise rpc_error(RpcCode.CONFLICT, f"job {job.pk} has already ended ({state})",
                            "id")
        by = user.username
        if state in WAITING and not placed(job):
            self.dequeue(job.pk)
            self.change(job, J.CANCELLED,
                        f"cancelled by {by} before it started")
        elif state == J.BACKOFF:
            self.change(job, J.CANCELLED, f"cancelled by {by}")
        elif not job.stop_requested:
            active = self.active(job.pk)
            if active is None:  # its record says it runs here; no process of it does
                log.warning("node %s: job %d is %s by its record but does not run here",
                            self.node, job.pk, state, extra={"job": job.pk})
                raise RpcError(RpcCode.CONFLICT, f"job {job.pk} is {state} by its record, "
                               f"but no process of it runs on node {self.node}",
                               {"field": "id", "node": job.node})
            self.stop(active, J.CANCELLED, f"stopping: cancelled by {by}", by)
        return self.to_json(job)

    @at_owner()
    def update(self, user: UserInfo, job_id: Any, params: Any, resources: Any,
               priority: Any) -> dict:
        job = self._in_our_queue(user, job_id)
        if job.state not in WAITING:
            raise rpc_error(RpcCode.CONFLICT, f"job {job.pk} is {job.state}: only a queued "
                            "or held job can be changed", "id")
        app = self.app_for(job.app)
        cleaned = job.params
        if params is not None:
            try:
                cleaned = app.clean_params({**job.params, **params} if isinstance(params, dict)
                                           else params)
            except ParamError as exc:
                raise rpc_error(RpcCode.INVALID_PARAMS, str(exc), exc.field) from None
        needs = self._resources(app, cleaned, resources)
        prio = job.priority if priority is None else self._priority(user, priority)
        self.dequeue(job.pk)
        job.params, job.resources, job.priority = cleaned, needs, prio
        job.persist("params", "resources", "priority")
        self.enqueue(job)
        self.publish(job)
        self.replan()
        return self.to_json(job)

    @at_owner()
    def hold(self, user: UserInfo, job_id: Any, hold: bool) -> dict:
        job = self._in_our_queue(user, job_id)
        want, need = (J.HELD, J.QUEUED) if hold else (J.QUEUED, J.HELD)
        if job.state != need:
            raise rpc_error(RpcCode.CONFLICT, f"job {job.pk} is {job.state}, not {need}",
                            "id")
        self.dequeue(job.pk)
        self.change(job, want, f"held by {user.username}" if hold
                    else f"released by {user.username}")
        self.enqueue(job)
        self.replan()
        return self.to_json(job)

    @at_owner()
    def move(self, user: UserInfo, job_id: Any, position: Any) -> dict:
        """Move a queued job to ``position`` among the jobs of its priority (staff), or
        among the caller's own jobs of that priority (others keep their places)."""
        from zephserver.web.models import Job

        job = self._in_our_queue(user, job_id)
        if job.state != J.QUEUED:
            raise rpc_error(RpcCode.CONFLICT, f"job {job.pk} is {job.state}, not QUEUED",
                            "id")
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise rpc_error(RpcCode.INVALID_PARAMS, "position must be an integer >= 0",
                            "position")
        among = None if user.is_staff else job.owner_id
        for peer_id, seq in self.waiting.move(job.pk, position, among):
            Job.objects.filter(pk=peer_id).update(seq=seq)
            self.forget_fresh(peer_id)
        self.replan()
        return self.to_json(job)

    def _in_our_queue(self, user: UserInfo, job_id: Any) -> Any:
        """The caller's job, refused (-32009) if it waits in another scheduler's queue:
        there it can only be cancelled."""
        job = self._local_job(user, job_id)
        if placed(job) and job.state not in TERMINAL:
            external = job.extra["external"]
            raise rpc_error(RpcCode.CONFLICT, f"job {job.pk} was handed to "
                            f"{external['executor']} (job {external['id']}): it can only "
                            "be cancelled now", "id")
        return job

    @at_owner()
    def control(self, user: UserInfo, job_id: Any, name: Any) -> dict:
        job = self._local_job(user, job_id)
        app = self.app_for(job.app)
        control = app.controls.get(name) if isinstance(name, str) else None
        if control is None:
            raise rpc_error(RpcCode.INVALID_PARAMS, f"app {app.name!r} has no control "
                            f"{name!r} (it has: {', '.join(app.controls) or 'none'})",
                            "control")
        if job.state != J.RUNNING:
            raise rpc_error(RpcCode.CONFLICT, f"job {job.pk} is {job.state}, not RUNNING",
                            "id")
        path = os.path.join(job.cwd, control.file)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(control.payload)
        except OSError as exc:
            raise RpcError(RpcCode.TASK_FAILED, f"cannot write {control.file}: "
                           f"{exc.strerror}") from None
        log.info("job %d: control %s written to %s by %s", job.pk, name, path, user.username,
                 extra={"job": job.pk})
        return {"id": job.pk, "control": name, "file": control.file}

    # -- subscriptions --------------------------------------------------------------------

    def subscribe(self, user: UserInfo, cid: str, job_id: Any, offset: Any) -> dict:
        """Updates of one job (or, without ``job_id``, of all the user's) and its output
        from ``offset``; a job of another node streams its log from there."""
        if job_id is None:
            self.feed.subscribe_owner(user.id, cid)
            return {"subscribed": "all"}
        node = self._node_of(user, job_id)
        if offset is None:
            offset = 0
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise rpc_error(RpcCode.INVALID_PARAMS, "offset must be an integer >= 0",
                            "offset")
        conn = self.rooms.connection(cid)
        if conn is None:
            raise RpcError(RpcCode.NOT_FOUND, "connection closed")
        if node == self.node:
            return self._subscribe_here(user, conn, job_id, offset)
        stream = self.feed.expect_stream(conn, job_id, node)  # before the first chunk
        try:
            job = self.forward(node, "follow_output", user, job_id, offset, stream,
                               self.node)
        except BaseException:
            self.feed.drop_stream(stream)
            raise
        return {"subscribed": job_id, "offset": offset, "job": job}

    @on_actor
    def _subscribe_here(self, user: UserInfo, conn: Any, job_id: int, offset: int) -> dict:
        job = self._local_job(user, job_id)
        self.feed.subscribe_job(job, conn, offset)
        return {"subscribed": job.pk, "offset": offset, "job": self.to_json(job)}

    @at_owner()
    def follow_output(self, user: UserInfo, job_id: Any, offset: int, stream: str,
                      to: str) -> dict:
        """Stream this node's job's log from ``offset`` to node ``to`` (its subscriber's)."""
        job = self._local_job(user, job_id)
        self.feed.stream_to(to, stream, job, offset)
        return self.to_json(job)

    def unsubscribe(self, user: UserInfo, cid: str, job_id: Any) -> dict:
        self.feed.unsubscribe(user.id, cid, job_id)
        return {"unsubscribed": job_id if job_id is not None else "all"}


def _param_feeding(app: App, resource: str) -> str | None:
    """The param an app computes ``resource`` from (to name it in an error)."""
    value = app.resources.get(resource, app.resources.get("licenses", {}).get(resource))
    return value[1:] if isinstance(value, str) and value.startswith("$") else None
