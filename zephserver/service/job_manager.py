"""Job manager: the records and processes of launched work, and the events about them.

Every change to a job happens on one thread ("zeph-svc-jobs", an actor): tasks, the
reaper's exit callbacks, timers and the queue's decisions are posted to its inbox and
run in order. So a job's state never races with itself, the database has one writer,
and every change goes through ``_transition``: check the table, stamp, persist,
log, publish ``job.updated``.

Jobs outlive the daemon. They run under the shim (``launch.shim``) with their output
going straight to a file, and their record carries pid + kernel start time + boot id.
At start the manager re-adopts what still runs and records the real exit status of
what ended meanwhile.
"""

import bisect
import collections
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from zephserver.actor import Actor
from zephserver.errors import RpcCode, RpcError
from zephserver.infra.service import Service
from zephserver.launch import shim
from zephserver.launch.apps import GENERATED, App, ParamError, parse_all_apps
from zephserver.launch.output import Follower, Tail, read_range
from zephserver.launch.parsers import make_parser
from zephserver.launch.process import (
    Reaper,
    SpawnError,
    boot_id,
    is_alive,
    process_start_time,
    signal_group,
    spawn,
    with_start_times,
)
from zephserver.launch.scheduler import Demand, Running, Waiting
from zephserver.launch.sessions import SESSION_GENERATED
from zephserver.launch.states import TERMINAL, WAITING, JobState, check_job_transition
from zephserver.launch.wslink import effective_cwd
from zephserver.service.sessions import NoFreePort, SessionKeeper
from zephserver.task.base import UserInfo
from zephserver.web.django_setup import setup_django

log = logging.getLogger(__name__)

J = JobState
PROGRAM_CACHE_TTL = 10.0  # seconds a found program path is trusted
MAX_OUTPUT_READ = 1 << 20
MAX_PRIORITY = 10
MAX_BATCH = 500  # inbox items handled in one transaction
PLAN_MAX_DELAY = 0.05  # seconds
EXEC_POLL = 0.02  # seconds between looks at whether a job stopped at birth has exec'd
# Keys a session request may carry besides the app's params: echoed, never substituted.
ECHOED_KEYS = frozenset({"application", "sessionManagerURL", "queue"})


def _rpc(code: RpcCode, message: str, field: str | None = None) -> RpcError:
    return RpcError(code, message, {"field": field} if field else None)


def _now() -> Any:
    from django.utils import timezone

    return timezone.now()


def describe_exit(code: int | None) -> str:
    """What an exit status means, as the user reads it."""
    if code is None:
        return "the process ended but its exit status was not recorded"
    if code < 0:
        return f"killed by signal {_signame(-code)}"
    if code > 128 and _signame(code - 128, None):
        return f"exit code {code} (signal {_signame(code - 128)})"
    if code == 127:
        return "exit code 127 (command not found)"
    return f"exit code {code}"


def _signame(num: int, default: str | None = "?") -> str | None:
    try:
        return signal.Signals(num).name
    except ValueError:
        return default if default is None else f"{num}"


@dataclass
class Active:
    """A job with a process (STARTING or RUNNING) on this node."""

    job: Any
    app: App | None
    stop_by: str = ""
    last_progress: float = 0.0
    spawned_at: float = 0.0  # monotonic; 0 for a re-adopted job
    running: Running | None = None  # what it holds, as the queue sees it (made once)

    def holds(self) -> Running:
        if self.running is None:
            self.running = Running(self.job.owner_id, Demand.of(self.job.resources))
        return self.running


class JobManagerService(Actor, Service):
    name = "jobs"
    requires = ("rooms", "queue")
    announces_ready = True
    reloadable = ("APPS", "LAUNCHER_CONFIG", "JOB_ROOTS", "JOB_PROGRESS_INTERVAL",
                  "OUTPUT_MAX_PENDING")

    max_batch = MAX_BATCH

    def __init__(self) -> None:
        Actor.__init__(self)
        Service.__init__(self)
        self._active: dict[int, Active] = {}
        # QUEUED and HELD jobs, kept light (a queue of 100,000 must not hold 100,000 model
        # objects); the record is read when the job starts or is shown.
        self._waiting: dict[int, Waiting] = {}
        self._held: set[int] = set()
        self._order: list[Waiting] = []  # QUEUED jobs in scheduling order
        self._reasons: dict[int, str] = {}
        self._needs_plan = False
        self._planned = 0.0
        self._batching = False
        self._deferred: list = []
        self._unpublished: dict[int, Any] = {}  # job id -> job: one update per batch
        self._env: dict[int, dict[str, str]] = {}  # launch environments between phases
        self._programs: dict[tuple[str, str], tuple[str, float]] = {}
        self._fresh: dict[int, Any] = {}  # jobs submitted since the last plan
        self._subs_lock = threading.Lock()
        self._subs_job: dict[int, set[str]] = {}
        self._subs_owner: dict[int, set[str]] = {}
        self._followers: dict[str, dict[int, Follower]] = {}  # cid -> job id -> follower
        self.apps: dict[str, App] = {}

    # -- lifecycle ------------------------------------------------------------------------

    def main(self) -> None:
        assert self.ctx is not None
        s = self.ctx.settings
        setup_django(s)
        self.node = s.NODE_NAME
        self.data_dir = os.path.abspath(s.DATA_DIR)
        self.jobs_dir = os.path.abspath(s.JOBS_DIR)
        self._configure(s)
        self.sessions = SessionKeeper(self, s)
        self.boot = boot_id()
        self.queue = self.ctx.get("queue")
        self.rooms = self.ctx.get("rooms")
        os.makedirs(self.jobs_dir, exist_ok=True)
        self.reaper = Reaper()
        self.tail = Tail(int(s.OUTPUT_CHUNK))
        self.rooms.add_unregister_listener(self._connection_gone)
        try:
            self._load()
            self.kick()  # start what the reloaded queue allows
            self.ctx.ready()
            self.run_inbox()
        finally:
            self.rooms.remove_unregister_listener(self._connection_gone)
            self.refuse(self.drain_inbox())
            self.reaper.close()  # jobs keep running: a restarted daemon re-adopts them
            self.tail.close()
            self._active.clear()
            self._waiting.clear()
            self._held.clear()
            self._order.clear()
            from django.db import close_old_connections

            close_old_connections()

    def disable(self) -> None:
        self._disabled.set()
        self.close_inbox()

    def _configure(self, s: Any) -> None:
        launcher_cwd = effective_cwd(s)
        # The launcher file's apps may run where the administrator's file says.
        extra_roots = [launcher_cwd] if launcher_cwd and "$" not in launcher_cwd else []
        self.roots = [os.path.realpath(p) for p in (self.data_dir, self.jobs_dir,
                                                     *s.JOB_ROOTS, *extra_roots)]
        self.progress_interval = float(s.JOB_PROGRESS_INTERVAL)
        self.max_pending = int(s.OUTPUT_MAX_PENDING)
        self.apps = parse_all_apps(s.APPS, s.LAUNCHER_CONFIG, launcher_cwd)

    def reload(self, settings: Any) -> None:
        """New app definitions and limits. Running jobs keep the definition they started
        with; queued jobs of an app that is gone fail when their turn comes."""
        self.call(self._configure, settings)
        self.kick()

    def handle(self, items: list) -> None:
        """What the inbox holds is run in one transaction (one commit for the lot)."""
        pending = collections.deque(items)
        first, prepared = True, []
        while pending or first:
            # A database error ends a group early; what is left goes in the next one.
            with self._group_commit():
                while pending:
                    self.execute(*pending.popleft())
                if first:
                    first = False
                    self.fire_timers()
                    # The queue's choice is committed (STARTING) with the batch that
                    # caused it: a submit and its start cost one commit.
                    prepared = self._plan()
                    if self.sessions.pending and not self._needs_plan:
                        self.sessions.after_plan()
        if prepared:
            self._launch(prepared)

    @contextlib.contextmanager
    def _group_commit(self) -> Any:
        """Run a batch in one transaction; replies and ``job.updated`` events go out only
        once it is committed (a client never sees a state the database might not keep)."""
        from django.db import transaction

        self._deferred: list[tuple[Future | None, Any, BaseException | None]] = []
        self._unpublished: dict[int, Any] = {}
        try:
            with transaction.atomic():
                yield
        except Exception as exc:  # the commit failed: every caller in the batch hears it
            log.exception("job manager: a batch failed to commit")
            self._deferred = [(f, None, exc) for f, _, _ in self._deferred]
        finally:
            deferred, self._deferred = self._deferred, []
            unpublished, self._unpublished = self._unpublished, {}
            self._batching = False
        for job in unpublished.values():
            self._send_update(job)
        for future, result, exc in deferred:
            if future is None:
                continue
            if exc is None:
                future.set_result(result)
            else:
                future.set_exception(exc)

    def execute(self, fn: Callable, args: tuple, future: Future | None) -> None:
        from django.db import DatabaseError

        self._batching = True
        try:
            result = fn(*args)
        except DatabaseError as exc:
            # The batch's transaction is broken: _group_commit fails it as a whole.
            self._deferred.append((future, None, exc))
            raise
        except Exception as exc:  # refused requests raise before they write anything
            if future is None:
                log.exception("job manager: %s failed", getattr(fn, "__name__", fn))
            self._deferred.append((future, None, exc))
        else:
            self._deferred.append((future, result, None))

    def kick(self) -> None:
        """Plan the queue again soon (resources changed outside the manager's view)."""
        self.post(self._mark_plan)

    def tick(self) -> None:
        """The slow safety pass: check every running process is still there, then plan."""
        self.post(self._watchdog)

    def _mark_plan(self) -> None:
        self._needs_plan = True

    def _watchdog(self) -> None:
        """A process gone without its exit seen (it cannot normally happen: exits arrive
        as events) is settled from the shim's status file, or LOST with a reason."""
        for job_id, active in list(self._active.items()):
            job = active.job
            if job.pid is not None and not is_alive(job.pid, job.start_time):
                log.warning("job %d: pid %d is gone and no exit was seen", job_id, job.pid)
                self._on_exit(job_id, None)
        self._needs_plan = True


    # -- state changes (manager thread) ---------------------------------------------------

    def _transition(self, job: Any, new: JobState, reason: str, **fields: Any) -> None:
        old = JobState(job.state)
        check_job_transition(old, new)
        job.state = new
        job.state_reason = reason
        for name, value in fields.items():
            setattr(job, name, value)
        changed = ["state", "state_reason", *fields]
        if new in TERMINAL:
            job.finished = _now()
            changed.append("finished")
        job.persist(*changed)
        log.info("job %d (%s, %s) %s -> %s: %s", job.pk, job.app, job.owner.username, old,
                 new, reason)
        self._publish(job)
        if new in TERMINAL and job.kind == "session":
            self.sessions.ended(job)

    def _load(self) -> None:
        """At start: re-adopt running jobs, settle what ended while we were down, and
        reload the queue (it lives in the database)."""
        from zephserver.web.models import Job

        # The agent's processes (kind "service") are its own: it resumes them itself.
        mine = Job.objects.select_related("owner").filter(node=self.node).exclude(
            kind="service")
        for job in mine.filter(state__in=[J.STARTING, J.RUNNING]).order_by("id"):
            try:
                self._readopt(job)
            except Exception:
                log.exception("job %d could not be re-adopted", job.pk)
        rows = mine.filter(state__in=[J.QUEUED, J.HELD]).values_list(
            "id", "owner_id", "resources", "priority", "seq", "queued_at", "created", "state")
        for pk, owner, resources, priority, seq, queued_at, created, state in rows.iterator():
            self._add_waiting(Waiting(pk, owner, Demand.of(resources), priority, seq,
                                      (queued_at or created).timestamp()), state == J.HELD)
        self.sessions.loaded()
        log.info("job manager: %d running job(s) re-adopted, %d waiting in the queue",
                 len(self._active), len(self._waiting))

    def _meta(self, job: Any) -> str:
        """Where the shim keeps its pid and exit status files: the job directory."""
        return job.job_dir

    def _readopt(self, job: Any) -> None:
        meta = self._meta(job)
        app = self.apps.get(job.app)
        if job.state == J.STARTING:
            pid = shim.recorded_pid(meta) if job.job_dir else None
            status = shim.recorded_status(meta) if job.job_dir else None
            if job.pid is not None:
                pass  # a session that had started but was not ready yet
            elif pid is not None and (shim.is_shim_of(pid, meta) or status is not None):
                # The daemon died between spawning and recording the pid.
                fields = dict(pid=pid, start_time=process_start_time(pid), boot_id=self.boot,
                              started=job.started or _now())
                if job.kind == "session":
                    self._record_spawn(job, "waiting to be ready (re-adopted)", fields)
                else:
                    self._transition(job, J.RUNNING, "running (re-adopted)", **fields)
            else:
                self._transition(job, J.QUEUED, "re-queued: the daemon stopped before "
                                 "the job started", queued_at=_now())
                return
        if job.boot_id == self.boot and is_alive(job.pid, job.start_time):
            active = Active(job, app)
            self._active[job.pk] = active
            self.reaper.watch(job.pid, self._exit_callback(job.pk))
            self._follow_for_parser(active)
            if job.kind == "session":
                self.sessions.readopted(active)
            if job.state == J.RUNNING:
                self._arm_wall_time(job)
            log.info("job %d re-adopted (pid %d)", job.pk, job.pid)
            return
        status = shim.recorded_status(meta)
        if status is None:
            reason = ("the machine restarted while the job ran" if job.boot_id != self.boot
                      else "the process vanished while the daemon was down "
                           "(killed externally); no exit status was recorded")
            self._transition(job, J.LOST, reason)
        else:
            self._finish(job, status, "while the daemon was down")

    def _enqueue(self, job: Any) -> None:
        self._add_waiting(self._waiting_entry(job), job.state == J.HELD)

    def _add_waiting(self, entry: Waiting, held: bool) -> None:
        self._waiting[entry.id] = entry
        if held:
            self._held.add(entry.id)
        else:
            bisect.insort(self._order, entry, key=_order_key)

    def _dequeue(self, job: Any) -> None:
        self._dequeue_id(job.pk)

    def _dequeue_id(self, job_id: int) -> Waiting | None:
        entry = self._waiting.pop(job_id, None)
        self._reasons.pop(job_id, None)
        self._fresh.pop(job_id, None)  # changed or gone: the next plan reads the record
        if entry is None or job_id in self._held:
            self._held.discard(job_id)
            return entry
        key = _order_key(entry)
        i = bisect.bisect_left(self._order, key, key=_order_key)
        while i < len(self._order) and _order_key(self._order[i]) == key:
            if self._order[i].id == job_id:
                del self._order[i]
                break
            i += 1
        return entry

    def _waiting_entry(self, job: Any) -> Waiting:
        queued = job.queued_at or job.created
        return Waiting(job.pk, job.owner_id, Demand.of(job.resources), job.priority, job.seq,
                       queued.timestamp())

    def _plan(self) -> list[Any]:
        """Move what the queue says fits to STARTING; returns those jobs. Planning waits
        until the inbox is drained (a burst of submits then starts together), but never
        more than PLAN_MAX_DELAY under a steady stream."""
        if not self._needs_plan or (not self._inbox.empty() and not self.sessions.pending
                                    and time.monotonic() - self._planned < PLAN_MAX_DELAY):
            return []
        self._needs_plan = False
        self._planned = time.monotonic()
        running = [a.holds() for a in self._active.values()]
        plan = self.queue.plan(self._order, running, time.time())
        self._reasons = plan.reasons
        from zephserver.web.models import Job

        fresh, self._fresh = self._fresh, {}
        ids = [job_id for job_id in plan.start if self._dequeue_id(job_id) is not None]
        if not ids:
            return []
        jobs = {i: fresh[i] for i in ids if i in fresh}
        if len(jobs) < len(ids):
            jobs.update(Job.objects.select_related("owner").in_bulk(
                [i for i in ids if i not in jobs]))
        prepared = []
        for job_id in ids:
            job = jobs.get(job_id)
            if job is None or job.state != J.QUEUED:
                log.error("job %d: queued here but %s in the database; not started", job_id,
                          "missing" if job is None else job.state)
                continue
            self.execute(self._prepare, (job,), None)
            if job.state == J.STARTING:
                prepared.append(job)
        return prepared

    def _launch(self, prepared: list[Any]) -> None:
        """Spawn jobs committed as STARTING, then commit RUNNING (or FAILED) for all.

        Right here: posix_spawn keeps the GIL until the exec, so other threads would not
        spawn in parallel anyway, and nothing else can touch these jobs meanwhile.
        """
        spawned = with_start_times([self._spawn(job, self._env.pop(job.pk))
                                    for job in prepared])
        with self._group_commit():
            for job, result in zip(prepared, spawned, strict=True):
                self.execute(self._started, (job, result), None)

    def _spawn(self, job: Any, env: dict[str, str]) -> Any:
        """Start one prepared job; the Spawned result or the SpawnError."""
        try:
            self._check_launchable(job.argv[0], job.cwd, env, job.job_dir)
            return spawn(shim.wrap(job.argv, self._meta(job), job.cwd), None, env,
                         job.log_path, read_start_time=False)
        except SpawnError as exc:
            return exc

    def _prepare(self, job: Any) -> None:
        app = self.apps.get(job.app)
        if app is None:
            self._transition(job, J.STARTING, "starting")
            self._transition(job, J.FAILED, f"app {job.app!r} is no longer defined")
            return
        job_dir = os.path.join(self.jobs_dir, str(job.pk))
        generated = {"job_id": str(job.pk), "job_dir": job_dir, "data_dir": self.data_dir,
                     "user": job.owner.username, "node": self.node}
        log_path = os.path.join(job_dir, "output.log")
        if app.session is not None:
            try:
                generated.update(self.sessions.allocate(job, app))
            except NoFreePort as exc:  # stays queued (or is refused) until a port frees
                self._enqueue(job)
                self._reasons[job.pk] = str(exc)
                return
            if app.session.log_dir:  # wslink's <log_dir>/<id>.txt
                os.makedirs(app.session.log_dir, exist_ok=True)
                log_path = os.path.join(app.session.log_dir, f"{job.pk}.txt")
        spec = app.prepare(job.params, generated)
        argv, failure = spec.argv, ""
        if app.session is not None:
            job.job_dir, job.log_path = job_dir, log_path  # (persisted just below)
            try:
                argv = self.sessions.prepare(job, app, spec, generated)
            except Exception as exc:
                log.exception("job %d: preparing the session failed", job.pk)
                failure = f"preparing the session failed: {type(exc).__name__}: {exc}"
        self._env[job.pk] = spec.env
        # a session's port, secret and URL are written with the rest, before the spawn
        session_fields = {"extra": job.extra} if app.session is not None else {}
        self._transition(job, J.STARTING, "starting", argv=argv, cwd=spec.cwd,
                         job_dir=job_dir, log_path=log_path, pid=None, start_time=None,
                         boot_id=self.boot, **session_fields)
        if failure:
            self._env.pop(job.pk, None)
            self._transition(job, J.FAILED, failure)

    def _started(self, job: Any, result: Any) -> None:
        if isinstance(result, SpawnError):
            self._transition(job, J.FAILED, str(result))
            self._needs_plan = True
            return
        active = Active(job, self.apps.get(job.app), spawned_at=time.monotonic())
        self._active[job.pk] = active
        fields = dict(pid=result.pid, start_time=result.start_time, started=_now())
        session = active.app.session if active.app is not None else None
        if session is not None:
            what = (f"its ready line {session.ready_line!r}" if session.ready_line
                    else f"port {job.extra['port']} to accept connections")
            self._record_spawn(job, f"waiting for {what} (up to {session.timeout:g}s)",
                               fields)
        else:
            self._transition(job, J.RUNNING, "running", **fields)
        self.reaper.watch(result.pid, self._exit_callback(job.pk), result.popen)
        self._follow_for_parser(active)
        if session is not None:
            self.sessions.started(active)
        else:
            self._arm_wall_time(job)

    def _record_spawn(self, job: Any, reason: str, fields: dict) -> None:
        """A session's process runs but it is not ready: it stays STARTING, with its pid."""
        for name, value in fields.items():
            setattr(job, name, value)
        job.state_reason = reason
        job.persist("state_reason", *fields)
        self._publish(job)

    def _check_launchable(self, program: str, cwd: str, env: dict, job_dir: str) -> None:
        """Refuse before spawning what the shim could only report as exit 127."""
        try:
            os.mkdir(job_dir)  # its parent, JOBS_DIR, exists: one syscall, not makedirs'
        except FileExistsError:
            pass
        except OSError as exc:
            raise SpawnError(f"cannot create the job directory {job_dir}: "
                             f"{exc.strerror}") from exc
        if cwd != job_dir:  # the default needs no check: the job directory is ours
            real_cwd = os.path.realpath(cwd)
            if not any(os.path.commonpath([real_cwd, root]) == root for root in self.roots):
                raise SpawnError(f"working directory {cwd} is outside DATA_DIR and JOB_ROOTS")
            try:
                if os.path.commonpath([real_cwd, job_dir]) == job_dir:
                    os.makedirs(real_cwd, exist_ok=True)
            except OSError as exc:
                raise SpawnError(f"cannot create {cwd}: {exc.strerror}") from exc
            if not os.path.isdir(real_cwd):
                raise SpawnError(f"working directory not found: {cwd}")
        if os.sep in program and not os.path.isabs(program):
            program = os.path.join(cwd, program)  # the shim execs it from the cwd
        if self._find_program(program, env.get("PATH", os.defpath)) is None:
            raise SpawnError(f"program not found or not executable: {program}")

    def _find_program(self, program: str, path: str) -> str | None:
        """``program``'s executable, remembered for a few seconds (a burst of jobs of one
        app would otherwise search PATH for each)."""
        key = (program, path)
        now = time.monotonic()
        hit = self._programs.get(key)
        if hit is not None and now - hit[1] < PROGRAM_CACHE_TTL:
            return hit[0]
        if os.sep in program:
            found = program if os.access(program, os.X_OK) and os.path.isfile(program) else None
        else:
            found = shutil.which(program, path=path)
        if found is not None:
            if len(self._programs) > 1000:
                self._programs.clear()
            self._programs[key] = (found, now)
        return found

    def _exit_callback(self, job_id: int) -> Callable[[int, int | None], None]:
        def exited(pid: int, returncode: int | None) -> None:  # reaper thread
            self.post(self._on_exit, job_id, returncode)
        return exited

    def _on_exit(self, job_id: int, returncode: int | None) -> None:
        active = self._active.pop(job_id, None)
        if active is None:
            return
        job = active.job
        if returncode is None:  # re-adopted: we were not the parent; the shim recorded it
            returncode = shim.recorded_status(self._meta(job))
        self._finish(job, returncode, "", active.stop_by)
        self.tail.finish(job.log_path)
        self._needs_plan = True

    def _finish(self, job: Any, code: int | None, when: str, stop_by: str = "") -> None:
        what = describe_exit(code)
        suffix = f" {when}" if when else ""
        why = job.state_reason.removeprefix("stopping: ")  # as given when it was stopped
        if job.stop_requested == J.CANCELLED and not why.startswith("cancelled"):
            state, reason = J.CANCELLED, f"cancelled: {why} ({what}){suffix}"
        elif job.stop_requested == J.CANCELLED:
            by = f" by {stop_by}" if stop_by else ""
            state, reason = J.CANCELLED, f"cancelled{by} ({what}){suffix}"
        elif job.stop_requested in (J.TIMED_OUT, J.FAILED):
            state, reason = JobState(job.stop_requested), f"{why} ({what})"
        elif job.state == J.STARTING:  # a session that ended before it was ready
            state, reason = J.FAILED, f"exited before it was ready ({what}){suffix}"
        elif code is None:
            state, reason = J.LOST, what + suffix
        elif code == 0:
            state, reason = J.SUCCEEDED, what + suffix
        else:
            state, reason = J.FAILED, what + suffix + self._disk_note(job)
        self._transition(job, state, reason, exit_code=code)

    @staticmethod
    def _disk_note(job: Any) -> str:
        try:
            st = os.statvfs(job.job_dir)
        except OSError:
            return ""
        return "; the disk holding its log is full" if st.f_bavail == 0 else ""

    def _arm_wall_time(self, job: Any) -> None:
        if not job.wall_time:
            return
        elapsed = (_now() - job.started).total_seconds() if job.started else 0.0
        self.after(max(0.0, job.wall_time - elapsed), lambda: self._wall_time_up(job.pk))

    def _wall_time_up(self, job_id: int) -> None:
        active = self._active.get(job_id)
        if active is None or active.job.stop_requested:
            return
        self._stop(active, J.TIMED_OUT, f"stopping: wall time of {active.job.wall_time:g}s "
                                        "exceeded", "")

    def _stop(self, active: Active, end_state: JobState, reason: str, by: str) -> None:
        job = active.job
        job.stop_requested = end_state
        job.state_reason = reason
        job.persist("stop_requested", "state_reason")
        active.stop_by = by
        self._publish(job)
        grace = active.app.grace if active.app is not None else 10.0
        young = active.spawned_at and not shim.program_started(job.pid, self._meta(job))
        self.reaper.stop_process(job.pid, grace)
        if young:
            # Until the program has exec'd, the shim's forked child still has the shim's
            # TERM trap and swallows this SIGTERM: say it once more as soon as the program
            # runs (not at all if it never got that far), rather than wait for SIGKILL.
            deadline = time.monotonic() + grace
            self.after(EXEC_POLL, lambda: self._term_when_started(job.pk, deadline))

    def _term_when_started(self, job_id: int, deadline: float) -> None:
        active = self._active.get(job_id)
        if active is None or active.job.pid is None:
            return  # it has ended
        if shim.program_started(active.job.pid, self._meta(active.job)):
            signal_group(active.job.pid, signal.SIGTERM)
        elif time.monotonic() < deadline:
            self.after(EXEC_POLL, lambda: self._term_when_started(job_id, deadline))

    # -- progress (parsers run on the output thread, results land here) -------------------

    def _follow_for_parser(self, active: Active) -> None:
        if active.app is None or active.app.parser is None:
            return
        parser = make_parser(active.app.parser)
        job_id = active.job.pk
        # the ETA uses the real elapsed time, also for a job re-adopted after a restart
        started = active.job.started.timestamp() if active.job.started else time.time()

        def deliver(offset: int, data: bytes) -> None:  # output thread
            parser.feed(data, time.time(), started)
            now = time.monotonic()
            if parser.changed and now - active.last_progress >= self.progress_interval:
                parser.changed = False
                active.last_progress = now
                self.post(self._set_progress, job_id, parser.snapshot())

        def done(end: int) -> None:
            parser.finish(time.time(), started)
            self.post(self._set_progress, job_id, parser.snapshot())

        # unfollowed by the tail itself once the job has ended and the last bytes are read
        self.tail.follow(Follower(active.job.log_path, 0, deliver, done=done))

    def _set_progress(self, job_id: int, snapshot: dict) -> None:
        from zephserver.web.models import Job

        active = self._active.get(job_id)
        job = active.job if active is not None else (
            Job.objects.select_related("owner").filter(pk=job_id).first())
        if job is None or job.progress == snapshot:
            return
        job.progress = snapshot
        job.persist("progress")
        self._publish(job)

    # -- publishing -----------------------------------------------------------------------

    def _json(self, job: Any) -> dict:
        data = job.to_json()
        if job.state == J.QUEUED and job.pk in self._reasons:
            data["state_reason"] = self._reasons[job.pk]
        return data

    def _publish(self, job: Any) -> None:
        """Tell subscribers (after the commit when inside a batch)."""
        if self._batching:
            self._unpublished[job.pk] = job
        else:
            self._send_update(job)

    def _send_update(self, job: Any) -> None:
        with self._subs_lock:
            cids = self._subs_job.get(job.pk, set()) | self._subs_owner.get(job.owner_id, set())
        if not cids:
            return
        texts = [_notification("job.updated", self._json(job))]
        if job.kind == "session":
            texts.append(_notification("session.updated", self.sessions.view(job, owner=False)))
        for cid in cids:
            conn = self.rooms.connection(cid)
            if conn is not None:
                for text in texts:
                    conn.send_text(text)

    def _connection_gone(self, cid: str) -> None:  # rooms' thread: only bookkeeping here
        with self._subs_lock:
            for table in (self._subs_job, self._subs_owner):
                for key in [k for k, cids in table.items() if cid in cids]:
                    table[key].discard(cid)
                    if not table[key]:
                        del table[key]
            followers = self._followers.pop(cid, {})
        for follower in followers.values():
            self.tail.unfollow(follower)

    # -- for the session keeper (manager thread) -----------------------------------------

    def active(self, job_id: int) -> Active | None:
        return self._active.get(job_id)

    def stop(self, active: Active, end_state: JobState, reason: str, by: str) -> None:
        self._stop(active, end_state, reason, by)

    def is_waiting(self, job_id: int) -> bool:
        return job_id in self._waiting

    def queue_position(self, job_id: int) -> int | None:
        return next((i for i, w in enumerate(self._order) if w.id == job_id), None)

    def queue_reason(self, job_id: int) -> str | None:
        return self._reasons.get(job_id)

    def waiting_job(self, job_id: int) -> Any:
        from zephserver.web.models import Job

        job = self._fresh.get(job_id)
        return job if job is not None else Job.objects.select_related("owner").get(pk=job_id)

    def cancel_waiting(self, job: Any, reason: str) -> None:
        self._dequeue(job)
        self._transition(job, J.CANCELLED, reason)

    def answer(self, future: Future, result: Any = None, error: BaseException | None = None
               ) -> None:
        """Resolve a client's future once the current batch is committed."""
        if self._batching:
            self._deferred.append((future, result, error))
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def session_ready(self, job_id: int) -> None:
        active = self._active.get(job_id)
        if active is None or active.job.state != J.STARTING or active.job.stop_requested:
            return
        job = active.job
        self._transition(job, J.RUNNING, f"ready on {job.extra['host']}:{job.extra['port']}")
        self._arm_wall_time(job)
        self.sessions.ready(active)

    # -- the API for tasks (any thread) ---------------------------------------------------

    def _job(self, user: UserInfo, job_id: Any) -> Any:
        """The job (live object when the manager holds one), if ``user`` may see it."""
        from zephserver.web.models import Job

        if isinstance(job_id, bool) or not isinstance(job_id, int):
            raise _rpc(RpcCode.INVALID_PARAMS, "id must be an integer", "id")
        job = None
        if self.on_actor_thread():
            active = self._active.get(job_id)
            job = active.job if active is not None else None
        if job is None:
            job = Job.objects.select_related("owner").filter(pk=job_id).first()
        if job is None:
            raise _rpc(RpcCode.NOT_FOUND, f"no job {job_id}", "id")
        if job.owner_id != user.id and not user.is_staff:
            raise _rpc(RpcCode.FORBIDDEN, f"job {job_id} belongs to another user", "id")
        return job

    def app_for(self, name: Any) -> App:
        app = self.apps.get(name) if isinstance(name, str) else None
        if app is None:
            raise _rpc(RpcCode.INVALID_PARAMS, f"unknown app {name!r}", "app")
        return app

    def submit(self, user: UserInfo, app_name: Any, params: Any, resources: Any,
               priority: Any, name: Any) -> Future:
        """Check and queue a job: a Future of its record (a burst of submits from many
        task threads then reaches the manager together, and is written in one commit).

        Raises:
            RpcError: a bad app, param, resource, priority or name (-32602).
        """
        from django.contrib.auth import get_user_model

        from zephserver.web.models import Job

        app = self.app_for(app_name)
        try:
            cleaned = app.clean_params(params)
        except ParamError as exc:
            raise _rpc(RpcCode.INVALID_PARAMS, str(exc), exc.field) from None
        needs = self._resources(app, cleaned, resources)
        prio = self._priority(user, priority)
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise _rpc(RpcCode.INVALID_PARAMS, "name must be a string of at most 200 "
                       "characters", "name")
        # The caller is authenticated: no need to fetch the user row again.
        owner = get_user_model()(pk=user.id, username=user.username)
        now = _now()
        job = Job(app=app.name, kind=app.kind, name=name or "", owner=owner, node=self.node,
                  state=J.QUEUED, state_reason="queued", params=cleaned, resources=needs,
                  priority=prio, wall_time=app.wall_time, created=now, queued_at=now,
                  seq=time.time())  # FIFO; queue.move reassigns
        return self.call_soon(self._submit, job)

    def _submit(self, job: Any) -> dict:
        job.save()
        log.info("job %d (%s, %s) submitted", job.pk, job.app, job.owner.username)
        self._enqueue(job)
        self._fresh[job.pk] = job  # the next plan (this batch's) needs no SELECT for it
        self._needs_plan = True
        return self._json(job)

    def _resources(self, app: App, params: dict, override: Any) -> dict:
        needs = app.resources_for(params)
        if override is not None:
            if not isinstance(override, dict) or set(override) - {"cores", "memory"}:
                raise _rpc(RpcCode.INVALID_PARAMS, "resources may set only cores and memory",
                           "resources")
            for key, value in override.items():
                if isinstance(value, bool) or not isinstance(value, int) or value < needs[key]:
                    raise _rpc(RpcCode.INVALID_PARAMS, f"resources.{key} must be an integer "
                               f">= {needs[key]} (what app {app.name!r} needs)",
                               f"resources.{key}")
                needs[key] = value
        refused = self.queue.never_fits(needs)
        if refused is not None:
            resource, why = refused
            field = _param_feeding(app, resource) or (
                f"resources.{resource}" if resource in ("cores", "memory") else "resources")
            raise _rpc(RpcCode.INVALID_PARAMS, why, field)
        return needs

    @staticmethod
    def _priority(user: UserInfo, priority: Any) -> int:
        if priority is None:
            return 0
        if isinstance(priority, bool) or not isinstance(priority, int) or not (
                -MAX_PRIORITY <= priority <= MAX_PRIORITY):
            raise _rpc(RpcCode.INVALID_PARAMS, f"priority must be an integer from "
                       f"{-MAX_PRIORITY} to {MAX_PRIORITY}", "priority")
        if priority > 0 and not user.is_staff:
            raise _rpc(RpcCode.FORBIDDEN, "a priority above 0 needs staff", "priority")
        return priority

    # -- sessions (ParaViewWeb/wslink launcher and sessions.* methods) --------------------

    def start_session(self, user: UserInfo, app_name: Any, body: dict,
                      may_queue: bool | None) -> Future:
        """Ask for a session. The future resolves once it is ready (its view), at once
        if it may queue and has to wait (state QUEUED), or fails with -32003 (no
        resources, or it died or was not ready in time) or -32602 (bad request)."""
        from django.contrib.auth import get_user_model

        from zephserver.web.models import Job

        app = self.app_for(app_name)
        if app.session is None:
            raise _rpc(RpcCode.INVALID_PARAMS, f"app {app.name!r} is not a session app "
                       f"(kind {app.kind})", "application")
        params, client = {}, {}
        for key, value in body.items():
            if key in app.params:
                params[key] = value
            elif key not in ECHOED_KEYS:
                reserved = key in app.vars or key in GENERATED or key in SESSION_GENERATED
                raise _rpc(RpcCode.INVALID_PARAMS, f"{key!r} is set by the server and may "
                           "not be given by a client" if reserved else
                           f"{key!r} is not a parameter of app {app.name!r}", key)
            client[key] = value
        try:
            cleaned = app.clean_params(params)
        except ParamError as exc:
            raise _rpc(RpcCode.INVALID_PARAMS, str(exc), exc.field) from None
        needs = self._resources(app, cleaned, None)
        owner = get_user_model()(pk=user.id, username=user.username)
        now = _now()
        job = Job(app=app.name, kind=app.kind, owner=owner, node=self.node, state=J.QUEUED,
                  state_reason="queued", params=cleaned, resources=needs,
                  wall_time=app.wall_time, created=now, queued_at=now, seq=time.time(),
                  extra={"client": client})
        queue = app.session.queue if may_queue is None else may_queue
        return self.call(self._submit_session, job, queue)

    def _submit_session(self, job: Any, may_queue: bool) -> Future:
        self._submit(job)
        waiter: Future = Future()
        self.sessions.waiters.setdefault(job.pk, []).append(waiter)
        self.sessions.pending[job.pk] = may_queue
        return waiter

    def _session(self, user: UserInfo, session_id: Any, deleted_ok: bool = False) -> Any:
        """The session ``session_id`` ("12" or 12) for ``user``; -32005 if unknown or
        deleted (as the wslink launcher forgets a deleted session)."""
        if isinstance(session_id, str) and session_id.isdigit() and len(session_id) < 12:
            session_id = int(session_id)
        if isinstance(session_id, bool) or not isinstance(session_id, int):
            raise _rpc(RpcCode.NOT_FOUND, f"no session {session_id!r}", "id")
        try:
            job = self._job(user, session_id)
        except RpcError as exc:
            if exc.code == RpcCode.NOT_FOUND:
                raise _rpc(RpcCode.NOT_FOUND, f"no session {session_id}", "id") from None
            raise
        if job.kind != "session":
            raise _rpc(RpcCode.NOT_FOUND, f"no session {session_id}", "id")
        if not deleted_ok and (job.state == J.CANCELLED or job.stop_requested == J.CANCELLED):
            raise _rpc(RpcCode.NOT_FOUND, f"session {session_id} was deleted", "id")
        return job

    def _session_view(self, user: UserInfo, job: Any) -> dict:
        position = self.queue_position(job.pk) if job.state == J.QUEUED else None
        return self.sessions.view(job, owner=job.owner_id == user.id, position=position)

    def session_get(self, user: UserInfo, session_id: Any, deleted_ok: bool = False) -> dict:
        return self.call(lambda: self._session_view(
            user, self._session(user, session_id, deleted_ok)))

    def session_stop(self, user: UserInfo, session_id: Any) -> dict:
        def stop() -> dict:
            job = self._session(user, session_id)
            self._cancel(user, job.pk)
            view = self._session_view(user, job)
            view.pop("secret", None)
            view["job"]["password_hash"] = None
            return view
        return self.call(stop)

    def stop_abandoned(self, user: UserInfo, session_id: Any) -> None:
        """Manager thread: the client that asked for this session left before the answer."""
        job = self._session(user, session_id)
        active = self._active.get(job.pk)
        if active is not None and not job.stop_requested:
            self._stop(active, J.CANCELLED, "stopping: the client that asked for it left "
                       "before it was ready", user.username)

    def sessions_list(self, user: UserInfo, all_users: bool = False) -> list[dict]:
        from zephserver.web.models import Job

        if all_users and not user.is_staff:
            raise _rpc(RpcCode.FORBIDDEN, "only staff may list every user's sessions", "all")
        jobs = Job.objects.select_related("owner").filter(kind="session").exclude(
            state__in=list(TERMINAL)).order_by("id")
        if not all_users:
            jobs = jobs.filter(owner_id=user.id)
        return self.call(lambda: [self._session_view(
            user, self._active[j.pk].job if j.pk in self._active else j) for j in jobs])

    def get(self, user: UserInfo, job_id: Any) -> dict:
        return self.call(lambda: self._json(self._job(user, job_id)))

    def list_jobs(self, user: UserInfo, state: Any = None, app: Any = None, owner: Any = None,
             limit: int = 50, offset: int = 0) -> dict:
        from zephserver.web.models import Job

        jobs = Job.objects.select_related("owner").order_by("-id")
        if not user.is_staff:
            if owner not in (None, user.username):
                raise _rpc(RpcCode.FORBIDDEN, "only staff may list other users' jobs", "owner")
            jobs = jobs.filter(owner_id=user.id)
        elif owner is not None:
            jobs = jobs.filter(owner__username=owner)
        if state is not None:
            states = [state] if isinstance(state, str) else state
            if not isinstance(states, list) or not all(s in J.__members__ for s in states):
                raise _rpc(RpcCode.INVALID_PARAMS, f"state must be one or a list of "
                           f"{', '.join(J.__members__)}", "state")
            jobs = jobs.filter(state__in=states)
        if app is not None:
            jobs = jobs.filter(app=app)
        if not 1 <= limit <= 500:
            raise _rpc(RpcCode.INVALID_PARAMS, "limit must be from 1 to 500", "limit")
        if offset < 0:
            raise _rpc(RpcCode.INVALID_PARAMS, "offset must be >= 0", "offset")
        page = [self._json(j) for j in jobs[offset:offset + limit]]
        return {"jobs": page, "total": jobs.count(), "offset": offset, "limit": limit}

    def cancel(self, user: UserInfo, job_id: Any) -> dict:
        return self.call(self._cancel, user, job_id)

    def _cancel(self, user: UserInfo, job_id: Any) -> dict:
        job = self._job(user, job_id)
        state = JobState(job.state)
        if state in TERMINAL:
            raise _rpc(RpcCode.CONFLICT, f"job {job.pk} has already ended ({state})", "id")
        by = user.username
        if state in WAITING:
            self._dequeue(job)
            self._transition(job, J.CANCELLED, f"cancelled by {by} before it started")
        elif state == J.BACKOFF:
            self._transition(job, J.CANCELLED, f"cancelled by {by}")
        elif not job.stop_requested:
            self._stop(self._active[job.pk], J.CANCELLED, f"stopping: cancelled by {by}", by)
        return self._json(job)

    def update(self, user: UserInfo, job_id: Any, params: Any, resources: Any,
               priority: Any) -> dict:
        return self.call(self._update, user, job_id, params, resources, priority)

    def _update(self, user: UserInfo, job_id: Any, params: Any, resources: Any,
                priority: Any) -> dict:
        job = self._job(user, job_id)
        if job.state not in WAITING:
            raise _rpc(RpcCode.CONFLICT, f"job {job.pk} is {job.state}: only a queued or "
                       "held job can be changed", "id")
        app = self.app_for(job.app)
        cleaned = job.params
        if params is not None:
            try:
                cleaned = app.clean_params({**job.params, **params} if isinstance(params, dict)
                                           else params)
            except ParamError as exc:
                raise _rpc(RpcCode.INVALID_PARAMS, str(exc), exc.field) from None
        needs = self._resources(app, cleaned, resources)
        prio = job.priority if priority is None else self._priority(user, priority)
        self._dequeue(job)
        job.params, job.resources, job.priority = cleaned, needs, prio
        job.persist("params", "resources", "priority")
        self._enqueue(job)
        self._publish(job)
        self._needs_plan = True
        return self._json(job)

    def hold(self, user: UserInfo, job_id: Any, hold: bool) -> dict:
        return self.call(self._hold, user, job_id, hold)

    def _hold(self, user: UserInfo, job_id: Any, hold: bool) -> dict:
        job = self._job(user, job_id)
        want, need = (J.HELD, J.QUEUED) if hold else (J.QUEUED, J.HELD)
        if job.state != need:
            raise _rpc(RpcCode.CONFLICT, f"job {job.pk} is {job.state}, not {need}", "id")
        self._dequeue(job)
        self._transition(job, want, f"held by {user.username}" if hold
                         else f"released by {user.username}")
        self._enqueue(job)
        self._needs_plan = True
        return self._json(job)

    def move(self, user: UserInfo, job_id: Any, position: Any) -> dict:
        return self.call(self._move, user, job_id, position)

    def _move(self, user: UserInfo, job_id: Any, position: Any) -> dict:
        """Move a queued job to ``position`` among the jobs of its priority (staff), or
        among the caller's own jobs of that priority (others keep their places)."""
        job = self._job(user, job_id)
        if job.state != J.QUEUED:
            raise _rpc(RpcCode.CONFLICT, f"job {job.pk} is {job.state}, not QUEUED", "id")
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise _rpc(RpcCode.INVALID_PARAMS, "position must be an integer >= 0", "position")
        peers = [w for w in self._order if w.priority == job.priority
                 and (user.is_staff or w.owner == job.owner_id)]
        from zephserver.web.models import Job

        slots = [w.seq for w in peers]
        ids = [w.id for w in peers if w.id != job.pk]
        ids.insert(min(position, len(ids)), job.pk)
        entries = {w.id: w for w in peers}
        for peer_id in entries:
            self._dequeue_id(peer_id)
        for peer_id, seq in zip(ids, slots, strict=True):
            entry = entries[peer_id]
            if entry.seq != seq:
                Job.objects.filter(pk=peer_id).update(seq=seq)
                entry = dataclasses.replace(entry, seq=seq)
            self._add_waiting(entry, held=False)
        self._needs_plan = True
        return self._json(job)

    def queue_list(self, user: UserInfo) -> list[dict]:
        return self.call(self._queue_list, user)

    def _queue_list(self, user: UserInfo) -> list[dict]:
        from zephserver.web.models import Job

        mine = [(position, w.id) for position, w in enumerate(self._order)
                if user.is_staff or w.owner == user.id]
        mine += [(None, i) for i in sorted(self._held)
                 if user.is_staff or self._waiting[i].owner == user.id]
        jobs = Job.objects.select_related("owner").in_bulk([i for _, i in mine])
        return [{**self._json(jobs[i]), "position": position} for position, i in mine
                if i in jobs]

    def resources_status(self) -> dict:
        return self.call(self._resources_status)

    def _resources_status(self) -> dict:
        capacity = self.queue.capacity()
        free = capacity.copy()
        for a in self._active.values():
            free.take(a.holds().demand)
        return {"node": self.node, "capacity": capacity.to_json(), "free": free.to_json(),
                "running": len(self._active),
                "queued": len(self._order), "held": len(self._held)}

    def control(self, user: UserInfo, job_id: Any, name: Any) -> dict:
        return self.call(self._control, user, job_id, name)

    def _control(self, user: UserInfo, job_id: Any, name: Any) -> dict:
        job = self._job(user, job_id)
        app = self.app_for(job.app)
        control = app.controls.get(name) if isinstance(name, str) else None
        if control is None:
            raise _rpc(RpcCode.INVALID_PARAMS, f"app {app.name!r} has no control {name!r} "
                       f"(it has: {', '.join(app.controls) or 'none'})", "control")
        if job.state != J.RUNNING:
            raise _rpc(RpcCode.CONFLICT, f"job {job.pk} is {job.state}, not RUNNING", "id")
        path = os.path.join(job.cwd, control.file)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(control.payload)
        except OSError as exc:
            raise RpcError(RpcCode.TASK_FAILED, f"cannot write {control.file}: "
                           f"{exc.strerror}") from None
        log.info("job %d: control %s written to %s by %s", job.pk, name, path, user.username)
        return {"id": job.pk, "control": name, "file": control.file}

    def output(self, user: UserInfo, job_id: Any, offset: int, limit: int) -> dict:
        job = self._job(user, job_id)
        if offset < 0:
            raise _rpc(RpcCode.INVALID_PARAMS, "offset must be >= 0", "offset")
        if not 1 <= limit <= MAX_OUTPUT_READ:
            raise _rpc(RpcCode.INVALID_PARAMS, f"limit must be from 1 to {MAX_OUTPUT_READ}",
                       "limit")
        data, size = b"", 0
        if job.log_path:  # a job that never started has no log yet
            data = read_range(job.log_path, offset, limit)
            with contextlib.suppress(FileNotFoundError):
                size = os.path.getsize(job.log_path)
        end = offset + len(data)
        return {"id": job.pk, "offset": offset, "data": data.decode("utf-8", "replace"),
                "next_offset": end, "size": size,
                "eof": job.state in TERMINAL and end >= size}

    def subscribe(self, user: UserInfo, cid: str, job_id: Any, offset: Any) -> dict:
        return self.call(self._subscribe, user, cid, job_id, offset)

    def _subscribe(self, user: UserInfo, cid: str, job_id: Any, offset: Any) -> dict:
        if job_id is None:
            with self._subs_lock:
                self._subs_owner.setdefault(user.id, set()).add(cid)  # type: ignore[arg-type]
            return {"subscribed": "all"}
        job = self._job(user, job_id)
        if offset is None:
            offset = 0
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise _rpc(RpcCode.INVALID_PARAMS, "offset must be an integer >= 0", "offset")
        conn = self.rooms.connection(cid)
        if conn is None:
            raise RpcError(RpcCode.NOT_FOUND, "connection closed")
        with self._subs_lock:
            self._subs_job.setdefault(job.pk, set()).add(cid)
            old = self._followers.setdefault(cid, {}).pop(job.pk, None)
        if old is not None:
            self.tail.unfollow(old)
        if job.log_path:
            follower = self._output_follower(conn, job, offset)
            with self._subs_lock:
                self._followers.setdefault(cid, {})[job.pk] = follower
            if job.state in TERMINAL:
                follower.final = True
            self.tail.follow(follower)
        return {"subscribed": job.pk, "offset": offset, "job": self._json(job)}

    def _output_follower(self, conn: Any, job: Any, offset: int) -> Follower:
        job_id = job.pk
        pending = getattr(conn, "pending_bytes", lambda: 0)
        limit = self.max_pending

        def deliver(at: int, data: bytes) -> None:
            conn.send_text(_notification("job.output", {
                "id": job_id, "offset": at, "next_offset": at + len(data),
                "data": data.decode("utf-8", "replace")}))

        def done(end: int) -> None:
            conn.send_text(_notification("job.output", {
                "id": job_id, "offset": end, "next_offset": end, "data": "", "eof": True}))
            with self._subs_lock:
                self._followers.get(conn.cid, {}).pop(job_id, None)

        return Follower(job.log_path, offset, deliver, lambda: pending() < limit, done)

    def unsubscribe(self, user: UserInfo, cid: str, job_id: Any) -> dict:
        with self._subs_lock:
            if job_id is None:
                cids = self._subs_owner.get(user.id, set())  # type: ignore[arg-type]
                cids.discard(cid)
            else:
                self._subs_job.get(job_id, set()).discard(cid)
            follower = self._followers.get(cid, {}).pop(job_id, None) if job_id else None
        if follower is not None:
            self.tail.unfollow(follower)
        return {"unsubscribed": job_id if job_id is not None else "all"}


def _order_key(w: Waiting) -> tuple:
    return (-w.priority, w.seq, w.id)


def _param_feeding(app: App, resource: str) -> str | None:
    """The param an app computes ``resource`` from (to name it in an error)."""
    value = app.resources.get(resource, app.resources.get("licenses", {}).get(resource))
    return value[1:] if isinstance(value, str) and value.startswith("$") else None


def _notification(method: str, params: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": params},
                      separators=(",", ":"))

