"""Process agent (smartmob-agent, seeds/004): Procfile processes restarted until deleted.

A process is a job of kind ``service``: one Job row (its state, pid, restarts, last
exit), a directory ``AGENT_DIR/<id>`` with the unpacked source, an optional virtualenv
and ``output.log``. Everything that changes a process happens on this service's thread
("zeph-svc-agent", an actor); downloads, unpacking and pip run on a worker thread per
process and report back; exits come from the reaper.

Unlike batch jobs, supervised processes die with the agent, as its documentation
promises: each runs under a tiny shell that also starts a watcher holding the read end
of a pipe whose write end only the daemon holds. When the daemon dies, even by
SIGKILL, the pipe reaches end of file and the watcher kills the whole process group.
"""

import contextlib
import dataclasses
import logging
import os
import queue
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from zephserver import metrics
from zephserver.actor import Actor
from zephserver.audit import audit
from zephserver.backoff import BackoffPolicy, RestartTracker
from zephserver.errors import RpcCode, RpcError, ServiceUnavailable
from zephserver.infra.service import Service
from zephserver.jobs.transition import now, transition
from zephserver.launch import shim
from zephserver.launch.access import parse_access
from zephserver.launch.accounts import Account, NoAccount, account_for
from zephserver.launch.apps import DEFAULT_INHERITED_ENV
from zephserver.launch.cgroups import Cgroups, signal_tree
from zephserver.launch.consoles import Console, ConsoleGroup
from zephserver.launch.output import Tail
from zephserver.launch.preparation import make_venv, procfile_command
from zephserver.launch.process import Reaper, SpawnError, describe_exit, signal_group, spawn
from zephserver.launch.process_request import check_create_request, check_creator
from zephserver.launch.sources import Cancelled, SourceError, fetch, unpack
from zephserver.launch.states import TERMINAL, JobState
from zephserver.service.agent_cluster import AgentCluster, agent_error
from zephserver.service.console_relay import ConsoleRelay
from zephserver.task.base import UserInfo

log = logging.getLogger(__name__)

J = JobState
LIFELINE_FD = 3
# $1: the working directory, then the program's argv. The watcher blocks reading the
# lifeline until the daemon is gone, then kills the group; the program does not get it.
SHIM = ('cd "$1" || exit 126; shift; { read _ <&3; kill -KILL 0; } & exec "$@" 3<&-')
PREPARED = ".zeph-prepared"  # written once the source is unpacked and set up
UNLIMITED = 10 ** 9
PREP_WORKERS = 8  # sources fetched and set up at once
CONSOLE_MAX_LAG = 4 * 1024 * 1024  # unread log bytes after which consoles skip ahead


def _key(proc: "Proc") -> str:  # its cgroup's name
    return f"process-{proc.job.pk}"


_rpc = agent_error


@dataclass
class Proc:
    job: Any
    tracker: RestartTracker
    cancel: threading.Event = field(default_factory=threading.Event)
    command: str | None = None
    cwd: str | None = None
    env: dict[str, str] | None = None
    pid: int | None = None
    preparing: bool = False
    deleted: bool = False
    moved: bool = False  # the cluster gave it to another node: nothing of it is ours
    restart_token: int = 0  # a pending restart only fires if this has not moved on
    consoles: ConsoleGroup | None = None
    account: Account | None = None  # who it runs as (RUN_AS; None: the daemon's account)

    @property
    def slug(self) -> str:
        return self.job.name


class AgentService(AgentCluster, Actor, Service):
    name = "agent"
    announces_ready = True

    def __init__(self) -> None:
        Actor.__init__(self)
        Service.__init__(self)
        # Live processes (not deleted) by (owner id, slug): names are per user, so one
        # user's name reveals nothing of another's.
        self._procs: dict[tuple[int, str], Proc] = {}
        self._ending: dict[int, Proc] = {}  # deleted, still stopping: job id -> proc
        self._stopping = False

    # -- lifecycle ------------------------------------------------------------------------

    def main(self) -> None:
        assert self.ctx is not None
        s = self.ctx.settings
        self.node = s.NODE_NAME
        self.cluster = self.ctx.cluster
        self.call_timeout_s = s.CLUSTER_CALL_TIMEOUT
        self.relay: ConsoleRelay | None = None
        if self.cluster.enabled:  # another node asks for one of this node's processes
            self.cluster.calls.handle("agent.delete", self._serve_delete)
            self.relay = ConsoleRelay(self, self.cluster)
        self.dir = os.path.abspath(s.AGENT_DIR)
        self.file_roots = list(s.AGENT_FILE_ROOTS)
        self.source_allow, self.allow = s.AGENT_SOURCE_ALLOW, parse_access(s.AGENT_ALLOW, "", [])
        self.run_as, self.user_map = s.RUN_AS, dict(s.USER_MAP)
        self.max_download = s.AGENT_MAX_DOWNLOAD
        self.max_unpacked = s.AGENT_MAX_UNPACKED
        self.download_timeout = s.AGENT_DOWNLOAD_TIMEOUT
        self.policy = BackoffPolicy(s.AGENT_BACKOFF_INITIAL,
                                    s.AGENT_BACKOFF_FACTOR, s.AGENT_BACKOFF_MAX,
                                    UNLIMITED, s.AGENT_MIN_UPTIME)
        self.max_restarts = s.AGENT_MAX_RESTARTS
        self.grace = s.AGENT_GRACE
        self.stop_grace = s.AGENT_STOP_GRACE
        self.keep_files = s.AGENT_KEEP_FILES
        self.replay_lines = s.AGENT_CONSOLE_REPLAY
        self.console_max_pending = s.AGENT_CONSOLE_MAX_PENDING
        self.console_max_rate = s.AGENT_CONSOLE_MAX_RATE
        os.makedirs(self.dir, exist_ok=True)
        if self.cluster.enabled:
            self.start_cluster(s)
        # The lifeline: children get the read end as fd 3; only we hold the write end.
        self._lifeline_r, self._lifeline_w = os.pipe()
        self.reaper = Reaper()
        self.cgroups = Cgroups.detect(s.DATA_DIR, "agent") if s.JOB_CGROUPS else None
        self.nice = s.JOB_NICE
        if self.cgroups is not None:
            self.cgroups.sweep(set())  # what a killed daemon's processes left behind
        self.tail = Tail(s.OUTPUT_CHUNK)
        # A few reused workers, not a thread per process (100 processes would be 100
        # threads' stacks for nothing), started as sources come (a node that runs no
        # Procfile app has none). Daemon threads: a download stalled on the network must
        # not hold up the daemon's exit.
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._workers = 0
        try:
            self._resume()
            self.ctx.ready()
            self.run_inbox()
            self._stop_all()
        finally:
            self.refuse(self.drain_inbox())
            if self.relay is not None:
                self.relay.close()
            for _ in range(self._workers):
                self._work.put(None)
            self.reaper.close()
            if self.cgroups is not None:
                self.cgroups.close()
            self.tail.close()
            os.close(self._lifeline_w)  # any child still there is killed by its watcher
            os.close(self._lifeline_r)
            self._procs.clear()
            from django.db import close_old_connections

            close_old_connections()

    def disable(self) -> None:
        self._disabled.set()
        self.close_inbox()

    def handle(self, items: list) -> None:
        super().handle(items)
        from django.db import close_old_connections

        close_old_connections()  # one broken by a database outage is replaced

    def http_routes(self) -> list[tuple[str, type]]:
        """The smartmob-agent REST API under /agent/ and its consoles."""
        from zephserver.http import agent

        return agent.routes()

    def _stop_all(self) -> None:
        """Graceful stop (SIGINT/SIGTERM of the daemon): every child gets SIGTERM, then
        AGENT_STOP_GRACE to exit, then SIGKILL; each exit is waited for."""
        self._stopping = True
        procs = [*self._procs.values(), *self._ending.values()]
        for proc in procs:
            proc.cancel.set()
            if proc.pid is not None:
                self._send(proc, proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        while any(p.pid is not None for p in procs) and time.monotonic() < deadline:
            self.step(deadline - time.monotonic())  # exits arrive through the inbox
        for proc in procs:
            if proc.pid is not None:
                log.warning("process %s (pid %d) ignored SIGTERM; killed", proc.slug, proc.pid,
                            extra={"job": proc.job.pk})
                self._send(proc, proc.pid, signal.SIGKILL)
        for proc in self._procs.values():
            job = proc.job
            if job.state == J.RUNNING:
                self._set(proc, J.BACKOFF, "backoff", "stopped with the daemon; it restarts "
                          "when the daemon starts", pid=None)

    # -- state changes (agent thread) -----------------------------------------------------

    def _set(self, proc: Proc, state: JobState | None, phase: str, reason: str,
             marks: dict | None = None, **fields: Any) -> None:
        """A process's record changes: its phase (smartmob's state) and ``marks``
        (``deleted``) go in ``job.extra``; the rest is the one transition of every job."""
        transition(proc.job, state, reason, self._publish,
                   extra={**(marks or {}), "phase": phase}, **fields)

    def _publish(self, job: Any) -> None:
        """``job.updated`` to the job's subscribers (the job manager's feed)."""
        with contextlib.suppress(ServiceUnavailable):
            self.ctx.get("jobs").feed.send_update(job)  # type: ignore[union-attr]

    def _resume(self) -> None:
        """At start: processes not deleted are set up (their source is already here) and
        started again; failed ones are listed as they were."""
        from zephserver.web.models import Job

        jobs = Job.objects.select_related("owner").filter(
            kind="service", node=self.node).exclude(
            state__in=[s for s in TERMINAL if s != J.FAILED]).order_by("id")
        for job in jobs:
            if job.extra.get("deleted"):
                continue  # deleted in a failure state: it stays deleted
            self._take(job)
        if jobs:
            log.info("agent: %d process(es) resumed", len(self._procs))

    def _take(self, job: Any) -> None:
        """Run ``job``'s process here: set it up and start it (listed only, if FAILED)."""
        proc = Proc(job, self._tracker(job))
        self._procs[(job.owner_id, job.name)] = proc
        if job.state == J.FAILED:
            return  # failed and not deleted: still listed, with its reason
        if job.state == J.RUNNING:  # its daemon died: the watcher killed it
            self._set(proc, J.BACKOFF, "backoff", "the daemon stopped; restarting",
                      pid=None)
        self._prepare_async(proc)

    def _tracker(self, job: Any) -> RestartTracker:
        limit = job.extra.get("max_restarts") or self.max_restarts or UNLIMITED
        policy = BackoffPolicy(self.policy.initial, self.policy.factor, self.policy.cap,
                               limit, self.policy.min_uptime)
        return RestartTracker(policy, restarts=job.restarts)

    # -- preparing the source (worker thread) ---------------------------------------------

    def _prepare_async(self, proc: Proc) -> None:
        proc.preparing = True
        self._work.put(proc)
        if self._workers < PREP_WORKERS:  # (agent thread only: no lock)
            threading.Thread(target=self._worker, name=f"zeph-agent-prep-{self._workers}",
                             daemon=True).start()
            self._workers += 1

    def _worker(self) -> None:
        while (proc := self._work.get()) is not None:
            self._prepare(proc)

    def _prepare(self, proc: Proc) -> None:
        job = proc.job
        extra = job.extra
        source = os.path.join(job.job_dir, "source")
        try:
            if not os.path.exists(os.path.join(job.job_dir, PREPARED)):
                shutil.rmtree(source, ignore_errors=True)
                archive = os.path.join(job.job_dir, "source.archive")
                self.post(self._phase, proc, "downloading", f"fetching {extra['source_url']}")
                fetch(extra["source_url"], archive, self.max_download, self.download_timeout,
                      proc.cancel, extra.get("request_id"), self.source_allow)
                self._check_cancel(proc)
                self.post(self._phase, proc, "unpacking", "unpacking the source archive")
                unpack(archive, source, self.max_unpacked)
                os.unlink(archive)
            command = procfile_command(source, extra["process_type"])
            env = {k: os.environ[k] for k in DEFAULT_INHERITED_ENV if k in os.environ}
            if os.path.exists(os.path.join(source, "requirements.txt")):
                venv = os.path.join(job.job_dir, "venv")
                if not os.path.exists(os.path.join(job.job_dir, PREPARED)):
                    self.post(self._phase, proc, "processing",
                              "creating a virtual environment and installing requirements")
                    make_venv(venv, source, job.log_path, proc.cancel)
                env["VIRTUAL_ENV"] = venv
                env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH",
                                                                               os.defpath)
            env.update(extra.get("env") or {})
            proc.account = account_for(self.run_as, job.owner.username, self.user_map)
            if proc.account is not None:  # its files are its own; the daemon only reads them
                proc.account.own(job.job_dir)
                env.update(proc.account.env())
            with open(os.path.join(job.job_dir, PREPARED), "w"):
                pass
            self.post(self._prepared, proc, command, env, source)
        except Cancelled:
            self.post(self._prep_cancelled, proc)
        except SourceError as exc:
            self.post(self._prep_failed, proc, exc.phase, str(exc))
        except (NoAccount, KeyError) as exc:
            self.post(self._prep_failed, proc, "fatal", f"cannot run as its account: {exc}")
        except Exception as exc:
            log.exception("process %s: preparing failed", proc.slug, extra={"job": proc.job.pk})
            self.post(self._prep_failed, proc, "unpack failure", f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _check_cancel(proc: Proc) -> None:
        if proc.cancel.is_set():
            raise Cancelled()

    # -- agent thread: the process's life ---------------------------------------------------

    def _phase(self, proc: Proc, phase: str, reason: str) -> None:
        if proc.deleted or proc.job.state in TERMINAL:
            return
        self._set(proc, J.STARTING, phase, reason)

    def _prepared(self, proc: Proc, command: str, env: dict, cwd: str) -> None:
        proc.preparing = False
        if proc.deleted:
            self._finalize(proc)
            return
        proc.command, proc.env, proc.cwd = command, env, cwd
        if not self._stopping:
            self._start(proc)

    def _prep_cancelled(self, proc: Proc) -> None:
        proc.preparing = False
        if proc.deleted:
            self._finalize(proc)

    def _prep_failed(self, proc: Proc, phase: str, reason: str) -> None:
        proc.preparing = False
        if proc.deleted:
            self._finalize(proc)
            return
        if JobState(proc.job.state) in (J.QUEUED, J.BACKOFF):
            self._set(proc, J.STARTING, "starting", "preparing")
        self._set(proc, J.FAILED, phase, reason)

    def _start(self, proc: Proc) -> None:
        if self.fenced or self.moved(proc):
            return  # (fenced: started again once the lease is renewed, if still ours)
        job = proc.job
        assert proc.command is not None
        assert proc.env is not None
        assert proc.cwd is not None
        self._set(proc, J.STARTING, "starting", "starting")
        argv = ["/bin/sh", "-c", SHIM, "zephserver-agent", proc.cwd,  # then who it runs as
                *(proc.account.switch() if proc.account else []), "/bin/sh", "-c", proc.command]
        argv = (self.cgroups.enter(_key(proc), argv) if self.cgroups is not None
                else [*shim.subreaper(), *argv])  # (then its escapees stay under it)
        try:
            spawned = spawn(argv, None, proc.env, job.log_path, {LIFELINE_FD: self._lifeline_r},
                            nice=self.nice)
        except SpawnError as exc:
            self._set(proc, J.FAILED, "fatal", f"cannot start: {exc}")
            return
        proc.pid = spawned.pid
        proc.tracker.started(time.monotonic())
        self._set(proc, J.RUNNING, "running", "running", pid=spawned.pid,
                  start_time=spawned.start_time, started=now())
        pid = spawned.pid
        self.reaper.watch(pid, lambda _pid, code: self.post(self._exited, proc, pid, code))

    def _stop_process(self, proc: Proc) -> None:
        """SIGTERM, AGENT_GRACE, then SIGKILL; its exit comes through the reaper."""
        assert proc.pid is not None
        self.reaper.stop_process(proc.pid, self.grace,
                                 lambda pid, sig: self._send(proc, pid, sig))

    def _send(self, proc: Proc, pid: int, sig: int) -> bool:
        return signal_tree(pid, sig, self.cgroups, _key(proc))

    def _exited(self, proc: Proc, pid: int, code: int | None) -> None:
        if proc.pid != pid:
            return
        proc.pid = None
        signal_group(pid, signal.SIGKILL)  # its watcher and anything it left behind
        if self.cgroups is not None:
            self.cgroups.finish(_key(proc))
        if proc.deleted:
            proc.job.exit_code = code
            self._finalize(proc)
            return
        if self._stopping:
            proc.job.exit_code = code
            return
        if self.fenced or self.moved(proc):
            return  # (fenced: nothing written while cut off; started again if still ours)
        what = describe_exit(code)
        delay = proc.tracker.exited(time.monotonic())
        if delay is None:
            self._set(proc, J.FAILED, "fatal", f"restart limit of "
                      f"{proc.tracker.policy.max_retries} reached; last run: {what}",
                      exit_code=code, pid=None)
            return
        self._set(proc, J.BACKOFF, "backoff", f"{what}; restart {proc.tracker.restarts} in "
                  f"{delay:.2f}s", exit_code=code, pid=None, restarts=proc.tracker.restarts)
        metrics.AGENT_RESTARTS.inc()
        if delay == 0:
            self._start(proc)
            return
        token = proc.restart_token = proc.restart_token + 1
        self.after(delay, lambda: self._restart(proc, token))

    def _restart(self, proc: Proc, token: int) -> None:
        if proc.restart_token == token and not proc.deleted and not self._stopping:
            self._start(proc)

    def _finalize(self, proc: Proc) -> None:
        """A deleted process has stopped: record it, close its consoles, drop its files."""
        self._ending.pop(proc.job.pk, None)
        deleted = {"deleted": True}
        if proc.job.state == J.QUEUED:
            self._set(proc, J.CANCELLED, "stopped", "deleted before it started", deleted)
        elif proc.job.state not in TERMINAL:
            self._set(proc, J.CANCELLED, "stopped", "deleted", deleted,
                      exit_code=proc.job.exit_code, pid=None)
        else:  # a failure state: the record keeps its reason, marked deleted
            self._set(proc, None, proc.job.extra.get("phase", "stopped"),
                      proc.job.state_reason, deleted)
        self._close_consoles(proc)
        if not self.keep_files:
            shutil.rmtree(proc.job.job_dir, ignore_errors=True)

    def _close_consoles(self, proc: Proc) -> None:
        if proc.consoles is not None:
            self.tail.unfollow(proc.consoles.follower)
            for console in list(proc.consoles.consoles):
                console.close()
            proc.consoles = None

    # -- the API (any thread) ---------------------------------------------------------------

    def create(self, user: UserInfo, body: Any, request_id: str | None = None) -> dict:
        """``request_id``: the creating request's X-Request-Id, logged with the process
        and sent with its source download."""
        check_creator(user, self.allow, self.run_as, self.user_map)
        fields = check_create_request(body, self.file_roots, self.source_allow)
        runs_on = fields.pop("runs_on")
        slug = f"{fields['app']}.{fields['node']}"
        elsewhere = self._elsewhere(slug, user, own=True)
        if elsewhere:
            raise _rpc(RpcCode.CONFLICT, f"a process {slug!r} already exists (on node "
                       f"{elsewhere[0].node})", "node")
        made = self.create_on(self.place(runs_on, user, slug), user, fields, request_id)
        audit("launch", user, f"agent process {made['slug']} (job {made['id']}) from "
              f"{fields['source_url']}")
        return made

    def _create(self, user: UserInfo, f: dict, request_id: str | None) -> dict:
        from django.contrib.auth import get_user_model

        from zephserver.web.models import Job

        slug = f"{f['app']}.{f['node']}"
        if (user.id, slug) in self._procs:
            raise _rpc(RpcCode.CONFLICT, f"a process {slug!r} already exists", "node")
        owner = get_user_model()(pk=user.id, username=user.username)
        job = Job(app=f["app"], kind="service", name=slug, owner=owner, node=self.node,
                  state=J.QUEUED, state_reason="pending", created=now(),
                  params={"process_type": f["process_type"]},
                  extra={"phase": "pending", "agent_node": f["node"],
                         "process_type": f["process_type"], "source_url": f["source_url"],
                         "env": f["env"], "max_restarts": f["max_restarts"],
                         "request_id": request_id})
        job.save()
        job.job_dir = os.path.join(self.dir, str(job.pk))
        job.log_path = os.path.join(job.job_dir, "output.log")
        os.makedirs(job.job_dir, exist_ok=True)
        open(job.log_path, "ab").close()
        job.persist("job_dir", "log_path")
        proc = Proc(job, self._tracker(job))
        self._procs[(user.id, slug)] = proc
        log.info("process %s (job %d) created by %s (request %s)", slug, job.pk,
                 user.username, request_id or "-", extra={"job": job.pk})
        self._prepare_async(proc)
        return self.status(proc)

    def _visible(self, user: UserInfo, slug: str) -> Proc:
        """The user's process ``slug``; for staff, else anyone's (the oldest)."""
        proc = self._procs.get((user.id, slug))
        if proc is None and user.is_staff:
            proc = min((p for (_, name), p in self._procs.items() if name == slug),
                       key=lambda p: p.job.pk, default=None)
        if proc is None:
            raise _rpc(RpcCode.NOT_FOUND, f"no process {slug!r}", "slug")
        return proc

    def get(self, user: UserInfo, slug: str) -> dict:
        """A process of this node (live), or of another (as its record says)."""
        try:
            return self.call(lambda: self.status(self._visible(user, slug)))
        except RpcError as exc:
            remote = self._elsewhere_or_raise(exc, user, slug)
            return self.record_status(remote, remote.pid)

    def list(self, user: UserInfo) -> list[dict]:
        """The processes of every node the user may see."""
        here = self.call(lambda: [self.status(p) for p in self._procs.values()
                                  if user.is_staff or p.job.owner_id == user.id])
        return here + [self.record_status(job, job.pid) for job in self._elsewhere(None, user)]

    def delete(self, user: UserInfo, slug: str, audited: bool = True) -> None:
        """Delete a process here, or on the node that runs it (which does not audit it
        again)."""
        try:
            self.call(self._delete, user, slug)
        except RpcError as exc:
            remote = self._elsewhere_or_raise(exc, user, slug)
            self.cluster.calls.call(remote.node, "agent.delete", {
                "user": dataclasses.asdict(user), "slug": slug}, self.call_timeout_s)
        if audited:
            audit("delete", user, f"agent process {slug}")

    def _delete(self, user: UserInfo, slug: str) -> None:
        proc = self._visible(user, slug)
        del self._procs[(proc.job.owner_id, slug)]
        proc.deleted = True
        proc.cancel.set()
        proc.restart_token += 1  # a pending restart will not fire
        log.info("process %s (job %d) deleted by %s", slug, proc.job.pk, user.username,
                 extra={"job": proc.job.pk})
        if proc.pid is not None:
            self._ending[proc.job.pk] = proc
            self._stop_process(proc)
        elif proc.preparing:
            self._ending[proc.job.pk] = proc  # finalized when the worker notices
        else:
            self._finalize(proc)

    @classmethod
    def status(cls, proc: Proc) -> dict:
        """The process status document, without URLs (the REST face adds them)."""
        return cls.record_status(proc.job, proc.pid)

    @staticmethod
    def record_status(job: Any, pid: int | None) -> dict:
        """``status`` from a record (``node`` is smartmob's; ``runs_on`` the daemon's)."""
        return {"app": job.app, "node": job.extra.get("agent_node"), "slug": job.name,
                "state": job.extra.get("phase", "pending"), "state_reason": job.state_reason,
                "process_type": job.extra.get("process_type"), "pid": pid,
                "restarts": job.restarts, "exit_code": job.exit_code,
                "started": job.started.isoformat() if job.started else None,
                "owner": job.owner.username, "id": job.pk, "runs_on": job.node}

    # -- consoles -------------------------------------------------------------------------

    def attach(self, user: UserInfo, slug: str, console: Console) -> None:
        """Replay the last AGENT_CONSOLE_REPLAY lines to ``console``, then follow live
        (through the node that runs the process, when it is another)."""
        if self.relay is not None and (user.id, slug) not in self._procs:
            remote = self._elsewhere(slug, user)
            if remote:
                self.relay.attach(remote[0].node, user, slug, console, self.call_timeout_s)
                return
        self.call(self._attach, user, slug, console)

    def _attach(self, user: UserInfo, slug: str, console: Console) -> None:
        proc = self._visible(user, slug)
        if proc.consoles is None:
            try:
                size = os.path.getsize(proc.job.log_path)
            except OSError:
                size = 0
            proc.consoles = ConsoleGroup(proc.job.log_path, size, CONSOLE_MAX_LAG)
            proc.consoles.attach(console, self.replay_lines)
            self.tail.follow(proc.consoles.follower)
        else:
            proc.consoles.attach(console, self.replay_lines)

    def detach(self, slug: str, console: Console) -> None:
        if self.relay is not None and self.relay.detach(console):
            return

        def forget() -> None:
            for proc in [*self._procs.values(), *self._ending.values()]:
                if proc.consoles is not None and proc.consoles.detach(console):
                    self.tail.unfollow(proc.consoles.follower)
                    proc.consoles = None
        self.post(forget)
