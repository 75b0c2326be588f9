"""Interactive sessions (kind ``session``): what the job core does for them, on its
thread.

A session is prepared with a port (bind-tested, reserved until its process exits), a
secret and, if its app names a broker module, a password hash, configuration and
certificate. It stays STARTING until its ready line appears in its output (or its port
accepts a connection) and only then is RUNNING, listed in the proxy map and handed to
the client who asked for it. A session that dies, is stopped or is not ready in time
answers its waiting clients at once with the reason and the tail of its log.

The keeper reaches the rest of the job core only through ``SessionHost`` (a handful of
methods the job manager provides) and the waiting queue.
"""

import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, Protocol

from zephserver.errors import RpcCode, RpcError
from zephserver.jobs.waiting import WaitingQueue
from zephserver.launch import broker_helpers
from zephserver.launch.apps import App, LaunchSpec
from zephserver.launch.broker_run import run_app_module
from zephserver.launch.interactive import (
    ProxyMap,
    ReadyMatch,
    ReadyScanner,
    has_connections,
    port_accepts,
    substitute,
)
from zephserver.launch.output import Follower, Tail, read_range
from zephserver.launch.ports import PortPool, PortRange
from zephserver.launch.states import JobState
from zephserver.launch.wslink import effective_proxy_file

log = logging.getLogger(__name__)

J = JobState
RETRY_AFTER = 5  # seconds a refused client is told to wait
PORT_POLL = 0.01  # seconds between connection attempts for apps without a ready line
LOG_TAIL = 2000  # bytes of log quoted in a start failure
# Where a remote session's host and port go in its URL once its ready line tells them.
HOST_MARK, PORT_MARK = "\x00host\x00", "\x00port\x00"


class NoFreePort(Exception):
    pass


def host_nodes(nodes: list[dict]) -> dict[str, str]:
    """Which node a port range's host names: a node's hostname, or an address no other
    node shares (several nodes on one machine share theirs: it names none of them)."""
    owners: dict[str, set[str]] = {}
    for entry in nodes:
        for name in {entry.get("hostname"), entry.get("address")} - {None}:
            owners.setdefault(name, set()).add(entry["hostname"])
    named = {name: next(iter(found)) for name, found in owners.items() if len(found) == 1}
    for entry in nodes:  # a hostname always names its node
        named[entry["hostname"]] = entry["hostname"]
    return named if len(nodes) >= 2 else {}


def unavailable(message: str, log_tail: str | None = None) -> RpcError:
    data: dict[str, Any] = {"retry_after": RETRY_AFTER}
    if log_tail:
        data["log_tail"] = log_tail
    return RpcError(RpcCode.SERVICE_UNAVAILABLE, message, data)


class SessionHost(Protocol):
    """What sessions need of the job core (the job manager). Manager thread."""

    apps: Mapping[str, App]

    def post(self, fn: Callable, *args: Any) -> None:
        """Run ``fn(*args)`` on the core's thread (any thread)."""

    def after(self, delay: float, fn: Callable[[], None]) -> None: ...

    def active(self, job_id: int) -> Any:
        """The job's ``Active`` (it has a process here), or None."""

    def stop(self, active: Any, end_state: JobState, reason: str, by: str) -> None: ...

    def session_ready(self, job_id: int) -> None:
        """The session is ready: RUNNING, then ``ready`` below."""

    def remote_ready(self, job_id: int, told: dict[str, str]) -> None:
        """A remote session's ready line matched (``told``: its port, maybe its host)."""

    def waiting_job(self, job_id: int) -> Any:
        """The record of a job in the waiting queue."""

    def refuse_session(self, job: Any, why: str) -> None:
        """A session that may not queue did not start here (in a cluster: maybe on
        another node)."""

    def answer(self, future: Future, result: Any = None,
               error: BaseException | None = None) -> None:
        """Settle a client's future once the current batch is committed."""


class SessionKeeper:
    def __init__(self, host: SessionHost, queue: WaitingQueue, tail: Tail,
                 settings: Any) -> None:
        self.host = host
        self.queue = queue
        self.tail = tail
        self.ports = PortPool()
        path = effective_proxy_file(settings)
        self.proxy = ProxyMap(path, settings.LAUNCHER_PROXY_FILE_MODE) if path else None
        self.node = settings.NODE_NAME
        self.host_nodes = host_nodes(settings.CLUSTER_SERVER_LIST)
        self.cert_key_type = settings.SESSION_CERT_KEY
        self.cert_days = settings.SESSION_CERT_DAYS
        self.waiters: dict[int, list[Future]] = {}
        # Sessions just asked for: job id -> may it queue? Answered after the next plan
        # (started: when ready; not started: QUEUED, or refused with 503).
        self.pending: dict[int, bool] = {}
        self._ready_followers: dict[int, Follower] = {}
        self._activity: dict[int, float] = {}  # job id -> last time a connection was seen

    # -- preparing and starting -----------------------------------------------------------

    def wait_for(self, job_id: int, may_queue: bool) -> Future:
        """A Future answered once the just-queued session ``job_id`` is ready; or after
        the next plan, QUEUED (``may_queue``) or refused if it did not start."""
        waiter: Future = Future()
        self.waiters.setdefault(job_id, []).append(waiter)
        self.pending[job_id] = may_queue
        return waiter

    def allocate(self, job: Any, app: App) -> dict[str, str]:
        """Port and secret for ``job``: the variables its templates get. NoFreePort if
        every port of the app's ranges is reserved or bound by another program."""
        assert app.session is not None
        if app.session.remote:  # it binds port 0 (or its own choice) where Slurm runs it
            return {"id": str(job.pk), "host": "0.0.0.0", "port": "0",
                    "secret": broker_helpers.get_password(), "application": app.name}
        ranges = self.ranges_here(app.session.ports)
        got = self.ports.allocate(ranges, job.pk)
        if got is None:
            raise NoFreePort(self.no_port_reason(app))
        host, port = got
        return {"id": str(job.pk), "host": host, "port": str(port),
                "secret": broker_helpers.get_password(), "application": app.name}

    def ranges_here(self, ranges: tuple[PortRange, ...]) -> tuple[PortRange, ...]:
        """The ranges this node hands ports from: those whose host names it, and those
        whose host names no node of the cluster."""
        return tuple(r for r in ranges if self.host_nodes.get(r.host, self.node) == self.node)

    def no_port_reason(self, app: App) -> str:
        assert app.session is not None
        ranges = self.ranges_here(app.session.ports)
        if not ranges:
            return f"no port range for node {self.node}"
        return f"no free port in {', '.join(str(r) for r in ranges)}"

    def may_have_port(self, app: App) -> bool:
        """Whether a port of ``app``'s ranges may be free here (one that another program
        holds is found out only when allocated)."""
        opts = app.session
        return opts is None or opts.remote or self.ports.any_free(self.ranges_here(opts.ports))

    def prepare(self, job: Any, app: App, spec: LaunchSpec, generated: dict) -> list[str]:
        """Run the app module (if any), fill ``job.extra``; the argv to start. Raises
        what the module raised (the session then fails with that reason)."""
        opts = app.session
        assert opts is not None
        values = {**app.vars, **{k: "" if v is None else v for k, v in spec.params.items()},
                  **generated}
        secret = generated["secret"]
        if opts.remote:  # known once its ready line tells (remote_values)
            values = {**values, "host": HOST_MARK, "port": PORT_MARK}
        extra: dict[str, Any] = {
            "client": job.extra.get("client", {}),
            "host": None if opts.remote else generated["host"],
            "port": None if opts.remote else int(generated["port"]), "protocol": opts.protocol,
            "session_url": substitute(opts.session_url, values),
            "session_data": {k: substitute(v, values) for k, v in opts.session_data.items()},
            "config": None, "cert": None, "password_hash": None,
            "hash_algorithm": opts.hash_algorithm if opts.module else None}
        if opts.uses_secret or opts.module:
            extra["secret"] = secret
        argv = spec.argv
        if opts.module:
            session_dir = job.job_dir
            os.makedirs(session_dir, exist_ok=True)
            obj = {**self.job_object(job, extra), "argv": list(argv),
                   "cert_key_type": self.cert_key_type, "cert_days": self.cert_days}
            answer = run_app_module(opts.module, obj, secret, opts.hash_algorithm,
                                    job.owner.username, app.name, session_dir, job.log_path)
            for note in answer["notes"]:
                log.warning("session %d (module %s): %s", job.pk, opts.module, note,
                            extra={"job": job.pk})
            extra.update(secret=answer["password"], password_hash=answer["password_hash"],
                         config=answer["config"], cert=answer["cert"])
            argv = answer["argv"]
        job.extra = extra
        return list(argv)

    def started(self, active: Any) -> None:
        """The process runs: wait for it to be ready (event or port), with a deadline."""
        job, opts = active.job, active.app.session  # type: ignore[union-attr]
        assert opts is not None
        job_id = job.pk
        if opts.remote:
            def told(groups: dict[str, str]) -> None:  # output thread
                self.host.post(self.host.remote_ready, job_id, groups)

            follower = Follower(job.log_path, 0, ReadyMatch(opts.ready_line, told).feed)
            self._ready_followers[job_id] = follower
            self.tail.follow(follower)
        elif opts.ready_line:
            def found() -> None:  # output thread
                self.host.post(self.host.session_ready, job_id)

            scanner = ReadyScanner(opts.ready_line, found)
            follower = Follower(job.log_path, 0, scanner.feed)
            self._ready_followers[job_id] = follower
            self.tail.follow(follower)
        else:
            self.host.after(PORT_POLL, lambda: self._poll_port(job_id))
        self.host.after(opts.timeout, lambda: self._deadline(job_id, opts.timeout))

    @staticmethod
    def remote_values(job: Any, host: str, port: int) -> dict:
        """A remote session's ``extra`` once its host and port are known: its URL and
        data with them filled in."""
        def fill(text: str) -> str:
            return text.replace(HOST_MARK, host).replace(PORT_MARK, str(port))

        extra = job.extra
        return {"host": host, "port": port, "session_url": fill(extra["session_url"]),
                "session_data": {k: fill(v) for k, v in extra["session_data"].items()}}

    def _poll_port(self, job_id: int) -> None:
        active = self.host.active(job_id)
        if active is None or active.job.state != J.STARTING or active.job.stop_requested:
            return
        if port_accepts(active.job.extra["host"], active.job.extra["port"]):
            self.host.session_ready(job_id)
        else:
            self.host.after(PORT_POLL, lambda: self._poll_port(job_id))

    def _deadline(self, job_id: int, timeout: float) -> None:
        active = self.host.active(job_id)
        # (a remote session may still wait in Slurm's queue: QUEUED, and watched)
        if active is not None and active.job.state in (J.STARTING, J.QUEUED) and \
                not active.job.stop_requested:
            self.host.stop(active, J.FAILED, f"stopping: not ready within {timeout:g}s", "")

    def ready(self, active: Any) -> None:
        """Now RUNNING: listed in the proxy map, waiting clients answered."""
        job, opts = active.job, active.app.session  # type: ignore[union-attr]
        self._unfollow(job.pk)
        self.list_session(job.pk, job.extra["host"], job.extra["port"])
        for waiter in self.waiters.pop(job.pk, []):
            self.host.answer(waiter, self.view(job, owner=True))
        if opts is not None:
            self._arm_limits(job.pk, opts.idle_timeout, opts.max_age)

    def _arm_limits(self, job_id: int, idle: float | None, max_age: float | None) -> None:
        if max_age:
            active = self.host.active(job_id)
            age = time.time() - active.job.started.timestamp() if active and \
                active.job.started else 0.0
            self.host.after(max(0.0, max_age - age), lambda: self._expire(
                job_id, f"stopping: older than its max age of {max_age:g}s"))
        if idle:
            self._activity[job_id] = time.monotonic()
            self.host.after(min(idle / 4, 5.0), lambda: self._check_idle(job_id, idle))

    def _check_idle(self, job_id: int, idle: float) -> None:
        active = self.host.active(job_id)
        if active is None or active.job.stop_requested:
            self._activity.pop(job_id, None)
            return
        now = time.monotonic()
        if has_connections(active.job.extra["port"]):
            self._activity[job_id] = now
        elif now - self._activity.get(job_id, now) >= idle:
            self._expire(job_id, f"stopping: no connection for {idle:g}s")
            return
        self.host.after(min(idle / 4, 5.0), lambda: self._check_idle(job_id, idle))

    def _expire(self, job_id: int, reason: str) -> None:
        active = self.host.active(job_id)
        if active is not None and not active.job.stop_requested:
            self.host.stop(active, J.TIMED_OUT, reason, "")

    # -- ending ---------------------------------------------------------------------------

    def ended(self, job: Any) -> None:
        """The session reached a final state: free its port now, unlist it, and tell
        whoever still waits for it why it will never be ready."""
        self.ports.release(job.pk)
        self._unfollow(job.pk)
        self._activity.pop(job.pk, None)
        self.pending.pop(job.pk, None)
        self.unlist(job.pk)
        waiters = self.waiters.pop(job.pk, [])
        if waiters:
            tail = self.log_tail(job)
            error = unavailable(f"session {job.pk} is not available: {job.state_reason}",
                                tail)
            for waiter in waiters:
                self.host.answer(waiter, error=error)

    # -- the proxy map: this node's sessions, and (a cluster) the other nodes' ----------

    def list_session(self, job_id: int, host: str, port: int) -> None:
        if self.proxy is not None and self.proxy.entries.get(job_id) != (host, port):
            self.proxy.entries[job_id] = (host, port)
            self._write_proxy()

    def unlist(self, job_id: int) -> None:
        if self.proxy is not None and self.proxy.entries.pop(job_id, None) is not None:
            self._write_proxy()

    # -- sessions of the other nodes (a cluster) -----------------------------------------

    def answer_elsewhere(self, job: Any) -> None:
        """The session a client asked us for runs (or ended) on another node."""
        waiters = self.waiters.pop(job.pk, [])
        self.pending.pop(job.pk, None)
        if job.state == J.RUNNING:
            result, error = self.view(job, owner=True), None
        else:  # (its log is on its node: no tail)
            result, error = None, unavailable(
                f"session {job.pk} is not available: {job.state_reason}")
        for waiter in waiters:
            self.host.answer(waiter, result, error)

    def after_plan(self) -> None:
        """Sessions the plan did not start: refused (503), or answered QUEUED."""
        pending, self.pending = self.pending, {}
        for job_id, may_queue in pending.items():
            if job_id not in self.queue:
                continue  # started: answered when ready (or when it fails)
            job = self.host.waiting_job(job_id)
            why = self.queue.reason(job_id) or "no free resources"
            if may_queue:
                view = self.view(job, owner=True, position=self.queue.position(job_id))
                for waiter in self.waiters.pop(job_id, []):
                    self.host.answer(waiter, view)
            else:
                self.host.refuse_session(job, why)

    def _unfollow(self, job_id: int) -> None:
        follower = self._ready_followers.pop(job_id, None)
        if follower is not None:
            self.tail.unfollow(follower)

    @staticmethod
    def log_tail(job: Any) -> str:
        if not job.log_path:
            return ""
        try:
            size = os.path.getsize(job.log_path)
        except OSError:
            return ""
        start = max(0, size - LOG_TAIL)
        return read_range(job.log_path, start, LOG_TAIL).decode("utf-8", "replace")

    # -- after a restart ------------------------------------------------------------------

    def readopted(self, active: Any) -> None:
        job = active.job
        opts = active.app.session if active.app is not None else None
        if job.extra.get("port") is not None and not (opts is not None and opts.remote):
            self.ports.reserve(job.extra["host"], job.extra["port"], job.pk)
        if job.state == J.RUNNING:
            if self.proxy is not None:
                self.proxy.entries[job.pk] = (job.extra["host"], job.extra["port"])
            if opts is not None:
                self._arm_limits(job.pk, opts.idle_timeout, opts.max_age)
        elif opts is not None:  # it was starting: look for its ready line again
            self.started(active)

    def loaded(self) -> None:
        if self.proxy is not None:
            self._write_proxy()  # a no-op when nothing changed while we were down

    def _write_proxy(self) -> None:
        """A map that cannot be written is logged, not fatal: the session runs, and the
        next change (or restart) writes the whole map again."""
        assert self.proxy is not None
        try:
            self.proxy.write()
        except OSError as exc:
            log.error("cannot write the proxy map %s: %s", self.proxy.path, exc.strerror)

    # -- what clients see -----------------------------------------------------------------

    def view(self, job: Any, owner: bool, position: int | None = None) -> dict:
        """The session as the ParaViewWeb/wslink REST API returns it: the object the
        client posted plus id, sessionURL, secret (owner only), sessionData and state."""
        extra = job.extra or {}
        app = self.host.apps.get(job.app)
        opts = app.session if app is not None else None
        out: dict[str, Any] = {**extra.get("client", {}), "application": job.app,
                               "id": str(job.pk)}
        if "session_url" in extra and extra.get("port") is not None:  # (remote: once told)
            out.update(extra.get("session_data", {}))
            out.update(sessionURL=extra["session_url"], host=extra["host"],
                       port=extra["port"])
        if owner and "secret" in extra:
            out["secret"] = extra["secret"]
        if opts is not None and opts.fields is not None:
            keep = {*opts.fields, "id", "sessionURL", "sessionManagerURL", "application",
                    "secret"}
            out = {k: v for k, v in out.items() if k in keep}
        reason = self.queue.reason(job.pk) if job.state == J.QUEUED else None
        out.update(state=job.state, state_reason=reason or job.state_reason)
        if position is not None:
            out["position"] = position
        out["job"] = self.job_object(job, extra, owner)
        return out

    @staticmethod
    def job_object(job: Any, extra: dict, owner: bool = True) -> dict:
        """The conduit broker's job object (seeds/002) with its types (``job_id``
        "job_<id>", ``port`` a string, ``job_root`` ending in "/"), and the real state."""
        port = extra.get("port")
        return {"job_root": os.path.join(job.job_dir, "") if job.job_dir else None,
                "app": job.app, "job_id": f"job_{job.pk}",
                "port": None if port is None else str(port),
                "creation_timestamp": int(job.created.timestamp()) if job.created else None,
                "config": extra.get("config"), "cert": extra.get("cert"),
                "app_path": job.argv[0] if job.argv else None,
                "status": str(job.state).lower(),
                "password_hash": extra.get("password_hash") if owner else None,
                "hash_algorithm": extra.get("hash_algorithm"), "pid": job.pid,
                "owner": job.owner.username, "protocol": extra.get("protocol"),
                "host": extra.get("host")}

