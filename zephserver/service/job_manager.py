"""Job manager: the records and processes of launched work, and the events about them.

Every change to a job happens on one thread ("zeph-svc-jobs", an actor): tasks, the
executor's exit callbacks, timers and the queue's decisions are posted to its inbox and
run in order, each batch in one transaction. So a job's state never races with itself,
the database has one writer, and every change goes through ``jobs.transition``.

The job core is the ``zephserver.jobs`` package (its docstring maps it); this service
ties it together: the lifecycle, re-adoption at start, planning, starting and exits.
Jobs outlive the daemon: by its record's pid + kernel start time + boot id, a restart
re-adopts what still runs and records the real exit status of what ended meanwhile.
"""

import collections
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from zephserver import memory
from zephserver.database import in_shapes
from zephserver.infra import held_wakes
from zephserver.infra.service import Service
from zephserver.jobs.active import Active, demand
from zephserver.jobs.batches import TransactionalActor
from zephserver.jobs.cluster_queue import ClusterQueue, node_places_and_urls
from zephserver.jobs.cluster_sessions import ClusterSessions
from zephserver.jobs.disk_guard import DiskGuard, DiskReactions, DiskWatch
from zephserver.jobs.executor import Executor, LocalExecutor
from zephserver.jobs.feed import UPDATED, Feed
from zephserver.jobs.interactive import NoFreePort, SessionKeeper
from zephserver.jobs.interactive_api import InteractiveApi
from zephserver.jobs.launches import Launches
from zephserver.jobs.node_leases import NodeLeases
from zephserver.jobs.progress import ProgressUpdates
from zephserver.jobs.reports import ExecutorReports
from zephserver.jobs.transition import ended, now, transition
from zephserver.jobs.waiting import WaitingQueue, entry_for
from zephserver.launch.accounts import NoAccount, account_for, effective
from zephserver.launch.apps import App, parse_all_apps
from zephserver.launch.cgroups import Cgroups, CpuShare, MemoryLimits
from zephserver.launch.output import Tail
from zephserver.launch.scheduler import Running, Waiting
from zephserver.launch.spares import SpareDirs
from zephserver.launch.states import TERMINAL, JobState
from zephserver.launch.wslink import effective_cwd, effective_endpoint

log = logging.getLogger(__name__)

J = JobState
MAX_BATCH = 500  # inbox items handled in one transaction
# New jobs committed and launched first when a burst comes with nothing being launched:
# the keeper starts them while the manager writes the rest (100 submits took 14 ms to
# write, all before the first spawn).
FIRST_LAUNCH = 16
PLAN_MAX_DELAY = 0.05  # seconds
PLAN_RETRY = 0.005  # seconds before planning again when another node holds the plan lock
EXEC_POLL = 0.02  # seconds between looks at whether a job stopped at birth has exec'd


class JobManagerService(Launches, InteractiveApi, ExecutorReports, ProgressUpdates,
                        ClusterQueue, ClusterSessions, NodeLeases, DiskReactions,
                        TransactionalActor, Service):
    name = "jobs"
    requires = ("rooms", "queue")
    announces_ready = True
    reloadable = ("APPS", "LAUNCHER_CONFIG", "JOB_ROOTS", "JOB_PROGRESS_INTERVAL",
                  "OUTPUT_MAX_PENDING")
    max_batch = MAX_BATCH

    def __init__(self) -> None:
        TransactionalActor.__init__(self)
        Service.__init__(self)
        self._active: dict[int, Active] = {}
        self.run = object()  # (jobs.launches)
        self.waiting = WaitingQueue()
        self._needs_plan = False
        self._plan_ran = False  # (in this batch: what waited for a plan may be answered)
        self._planned = 0.0
        self._probes = {}  # (cluster_sessions: peers asking whether we took a session)
        self.claims_end()
        self.guard = DiskGuard("", 0, 0)  # set from the settings in _configure
        self.disk_watch: DiskWatch | None = None
        self._env: dict[int, dict[str, str]] = {}  # launch environments between phases
        self._fresh: dict[int, Any] = {}  # jobs submitted since the last plan
        self._told: dict[int, dict] = {}  # (jobs.reports: remote sessions' ready lines)
        self.apps: dict[str, App] = {}

    # -- lifecycle ------------------------------------------------------------------------

    def main(self) -> None:
        assert self.ctx is not None
        self.run = object()
        s = self.ctx.settings
        self.node = s.NODE_NAME
        self.places, self.node_places, self.node_urls = node_places_and_urls(s)
        self.data_dir = os.path.abspath(s.DATA_DIR)
        self.jobs_dir = os.path.abspath(s.JOBS_DIR)
        self.scheduler = self.ctx.get("queue")
        self.rooms = self.ctx.get("rooms")
        os.makedirs(self.jobs_dir, exist_ok=True)
        grouped = s.JOB_CGROUPS
        self.local = LocalExecutor(
            cgroups=Cgroups.detect(self.data_dir, "jobs") if grouped else None,
            memory=MemoryLimits.detect(self.data_dir, "jobs") if grouped else None,
            nice=s.JOB_NICE, keeper_socket=os.path.join(self.data_dir, "keeper.sock"),
            cpu=CpuShare.detect(self.data_dir, "jobs", s.JOB_NICE) if grouped else None,
            spares=SpareDirs(self.jobs_dir))
        # Who runs each job's process: one per kind of place ("local", "slurm" once an
        # app uses it), chosen per job by ``executor_for``.
        self.executors: dict[str, Executor] = {"local": self.local}
        self.tail = Tail(s.OUTPUT_CHUNK)
        self.interactive = SessionKeeper(self, self.waiting, self.tail, s)
        self.cluster = self.ctx.cluster
        self.call_timeout_s = s.CLUSTER_CALL_TIMEOUT
        self.lost_after, self.down_after = s.NODE_LOST_AFTER, s.NODE_DOWN_AFTER
        self.database_url = s.DATABASE_URL
        self.feed = Feed(self.rooms, self.tail, self.to_json,
                         lambda job: self.interactive.view(job, owner=False),
                         cluster=self.cluster)
        if self.cluster.enabled:
            self.cluster.subscribe(UPDATED, self.heard_update)
            self.cluster.calls.handle("jobs.forwarded", self.serve_forwarded)
            self.cluster.calls.handle("jobs.resources", self.node_resources)
            self.start_cluster_sessions()
        self._configure(s)
        self.rooms.add_unregister_listener(self.feed.connection_gone)
        self.disk_watch = DiskWatch(self.guard, self._watched, self._output_over,
                                    lambda: self.post(self._space_changed))
        try:
            self._load()
            self.disk_watch.start()
            self.kick()  # start what the reloaded queue allows
            self.ctx.ready()
            self.run_inbox()
        finally:
            self.disk_watch.stop()
            self.cluster.unsubscribe(UPDATED, self.heard_update)
            if self.cluster.enabled:
                self.stop_cluster_sessions()
            self.rooms.remove_unregister_listener(self.feed.connection_gone)
            self.feed.close()
            self.refuse(self.drain_inbox())
            for executor in self.executors.values():
                executor.close()
            self.tail.close()
            self._active.clear()
            self.waiting.clear()
            from django.db import close_old_connections
            close_old_connections()

    def disable(self) -> None:
        self._disabled.set()
        self.close_inbox()

    def _configure(self, s: Any) -> None:
        launcher_cwd = effective_cwd(s)
        # The launcher file's apps may run where the administrator's file says.
        extra_roots = [launcher_cwd] if launcher_cwd and "$" not in launcher_cwd else []
        self.local.roots = [os.path.realpath(p) for p in (
            self.data_dir, self.jobs_dir, *s.JOB_ROOTS, *extra_roots)]
        self.progress_interval = s.JOB_PROGRESS_INTERVAL
        self.feed.max_pending = s.OUTPUT_MAX_PENDING
        self.apps = parse_all_apps(s.APPS, s.LAUNCHER_CONFIG, launcher_cwd)
        if "slurm" not in self.executors and any(a.executor == "slurm"
                                                 for a in self.apps.values()):
            from zephserver.jobs.slurm_executor import SlurmExecutor  # (where apps use it)
            self.executors["slurm"] = SlurmExecutor.from_settings(
                s, self.data_dir, self.reported, lambda job: self.apps[job.app].slurm,
                self.tail.recheck)
        self.guard.data_dir, self.guard.min_free = self.data_dir, s.DATA_DIR_MIN_FREE
        self.guard.max_output = s.JOB_MAX_OUTPUT
        self.run_as, self.user_map = s.RUN_AS, dict(s.USER_MAP)

    def http_routes(self) -> list[tuple[str, type]]:
        """The ParaViewWeb/wslink launcher REST API."""
        from zephserver.http import launcher

        assert self.ctx is not None
        return launcher.routes(effective_endpoint(self.ctx.settings))

    def reload(self, settings: Any) -> None:
        """New app definitions and limits. Running jobs keep the definition they started
        with; queued jobs of an app that is gone fail when their turn comes."""
        self.call(self._configure, settings)
        self.kick()

    # -- the actor: each batch of the inbox in one transaction -----------------------------

    def handle(self, items: list) -> None:
        cut = self._first_launch_cut(items)
        if cut:
            with held_wakes.held():
                self._handle(items[:cut])
            items = items[cut:]
        # The WebSocket loop is woken once the launch is asked, not before: woken first,
        # its thread took the GIL from this one, and the keeper waited (in a burst of
        # 100 submits, a tenth of this thread's time went to that one wake-up).
        with held_wakes.held():
            self._handle(items)

    def _first_launch_cut(self, items: list) -> int:
        """Where a burst of submits is split (0: it is not): after its FIRST_LAUNCH-th
        new job, when nothing is being launched."""
        if len(items) <= FIRST_LAUNCH or self.launching:
            return 0
        new = 0
        for at, (fn, _, _) in enumerate(items):
            new += fn == self._queue_new
            if new == FIRST_LAUNCH:
                return at + 1 if at + 1 < len(items) else 0
        return 0

    def _handle(self, items: list) -> None:
        """A batch of the inbox: its groups, each one transaction; then what they chose
        to start is launched."""
        from zephserver.web.models import Job
        pending = collections.deque(items)
        first, prepared = True, []
        self._plan_ran = False

        def group() -> None:
            nonlocal first, prepared
            Job.insert_new([args[0] for fn, args, _ in pending if fn == self._queue_new])
            while pending:
                self.execute(*pending.popleft())
            if first:
                first = False
                self.fire_timers()
                # The queue's choice is committed (STARTING) with the batch that caused
                # it: a submit and its start cost one commit.
                prepared = self._plan()
                if self.interactive.pending and self._plan_ran:
                    self.interactive.after_plan()

        while pending or first:
            self.claims_begin()
            # A database error ends a group early; what is left goes in the next one.
            if not self._group_commit(group):
                # Not even begun (the database is busy or down): callers hear it now;
                # exits and timers are kept and tried again.
                self.unavailable(pending, self.unavailable_reason)
                return
        prepared = [job for job in prepared if not self.claim_was_lost(job)]
        self.claims_end()  # (committed: the launches' batch claims nothing)
        if prepared:
            self._launch(prepared)
        if self._plan_ran:
            self.settle_probes()

    def kick(self) -> None:
        """Plan the queue again soon (resources changed outside the manager's view)."""
        self.post(self.replan)

    def tick(self) -> None:
        """The slow safety pass: check every running process is still there, then plan."""
        self.post(self._watchdog)

    def replan(self) -> None:
        self._needs_plan = True

    def _watchdog(self) -> None:
        """A process gone without its exit seen (it cannot normally happen: exits arrive
        as events) is settled from its recorded exit status, or LOST with a reason."""
        if self.shared_queue:  # an update missed (a peer down) is made good here
            self.load_waiting()
        for job_id, active in list(self._active.items()):
            job = active.job
            if job.pid is not None and not self.executor_for(job).alive(job):
                log.warning("job %d: pid %d is gone and no exit was seen", job_id, job.pid,
                            extra={"job": job_id})
                self._on_exit(job_id, None)
        self._needs_plan = True

    # -- state changes (manager thread) ---------------------------------------------------

    def change(self, job: Any, new: JobState, reason: str, **fields: Any) -> None:
        transition(job, new, reason, self.publish, **fields)
        if new in TERMINAL and job.kind == "session":
            self.interactive.ended(job)
        if new in TERMINAL and job.node == self.node:
            self.after_commit(lambda: self.executor_for(job).forget(job))

    def _executor_name(self, job: Any) -> str:
        return getattr(self.apps.get(job.app), "executor", "local")

    def executor_for(self, job: Any) -> Executor:
        """Who runs ``job``'s process (its app's ``executor``)."""
        return self.executors[self._executor_name(job)]

    def active(self, job_id: int) -> Active | None:
        return self._active.get(job_id)

    def holdings(self) -> list[Running]:
        return [a.holds() for a in self._active.values()]

    # -- the waiting queue ----------------------------------------------------------------

    def enqueue(self, job: Any) -> None:
        self.waiting.add(entry_for(job, demand(self.apps.get(job.app), job.resources)),
                         held=job.state == J.HELD)

    def dequeue(self, job_id: int) -> Waiting | None:
        self._fresh.pop(job_id, None)  # changed or gone: the next plan reads the record
        return self.waiting.remove(job_id)

    def forget_fresh(self, job_id: int) -> None:
        self._fresh.pop(job_id, None)

    def waiting_job(self, job_id: int) -> Any:
        from zephserver.web.models import Job

        job = self._fresh.get(job_id)
        return job if job is not None else Job.objects.select_related("owner").get(pk=job_id)

    def cancel_waiting(self, job: Any, reason: str) -> None:
        self.dequeue(job.pk)
        self.change(job, J.CANCELLED, reason)

    def expect_launch(self, app: App) -> None:
        """A job of ``app`` is being submitted (a task thread): LocalExecutor.expect."""
        if app.executor == "local":
            self.local.expect()

    def _queue_new(self, job: Any) -> dict:
        if job.pk is None:  # (else written with its batch: Job.insert_new)
            job.insert()
        log.info("job %d (%s, %s) submitted", job.pk, job.app, job.owner.username,
                 extra={"job": job.pk})
        self.enqueue(job)
        if self.shared_queue:
            self.announce(job)  # (started here at once, or planned by any node with room)
        self._fresh[job.pk] = job  # the next plan (this batch's) needs no SELECT for it
        self._needs_plan = True
        return self.to_json(job)

    # -- at start: re-adopt, settle, reload the queue -------------------------------------

    def _load(self) -> None:
        """Re-adopt running jobs, settle what ended while we were down, and reload the
        queue (it lives in the database)."""
        from django.db.models import Q

        from zephserver.web.models import Job

        # The agent's processes (kind "service") are its own: it resumes them itself.
        mine = Job.objects.select_related("owner").filter(node=self.node).exclude(
            kind="service")
        in_other_queue = Q(state=J.QUEUED, extra__has_key="external")  # (Slurm's)
        for job in mine.filter(Q(state__in=[J.STARTING, J.RUNNING]) | in_other_queue
                               ).order_by("id"):
            try:
                self._readopt(job)
            except Exception:
                log.exception("job %d could not be re-adopted", job.pk, extra={"job": job.pk})
        self.load_waiting()
        stopping = self.start_leases() if self.cluster.enabled else []
        if self.cluster.enabled:
            self.load_sessions_elsewhere()
        self.interactive.loaded()
        self.local.sweep([a.job for a in self._active.values()
                          if self._executor_name(a.job) == "local"] + stopping)
        log.info("job manager: %d running job(s) re-adopted, %d waiting in the queue",
                 len(self._active), len(self.waiting))

    def _readopt(self, job: Any) -> None:
        app = self.apps.get(job.app)
        if self.executor_for(job).reports:
            self.readopt_reported(job)
            return
        if job.state == J.STARTING and job.pid is None:  # (a session not ready has a pid)
            found = self.executor_for(job).orphan(job)
            if found is None:
                self.change(job, J.QUEUED, "re-queued: the daemon stopped before the job "
                            "started", queued_at=now())
                return
            # The daemon died between starting the process and recording it.
            fields = dict(found, started=job.started or now())
            if job.kind == "session":
                self._record_spawn(job, "waiting to be ready (re-adopted)", fields)
            else:
                self.change(job, J.RUNNING, "running (re-adopted)", **fields)
        if self.executor_for(job).alive(job):
            active = Active(job, app)
            self._active[job.pk] = active
            self.executor_for(job).watch(job, self._exit_callback(job.pk))
            self._follow_for_parser(active)
            if job.kind == "session":
                self.interactive.readopted(active)
            if job.state == J.RUNNING:
                self._arm_wall_time(job)
            log.info("job %d re-adopted (pid %d)", job.pk, job.pid, extra={"job": job.pk})
            return
        status = self.executor_for(job).recorded_exit(job)
        if status is None:
            reason = ("the machine restarted while the job ran"
                      if job.boot_id != self.executor_for(job).boot else
                      "the process vanished while the daemon was down (killed externally); "
                      "no exit status was recorded")
            self.change(job, J.LOST, reason)
        else:
            self._finish(job, status, "while the daemon was down")

    # -- planning and starting ------------------------------------------------------------

    def _plan(self) -> list[Any]:
        """Move what the queue says fits to STARTING; returns those jobs. While the keeper
        is busy with a batch, planning waits until the inbox is drained (a burst of
        submits then starts together), but never more than PLAN_MAX_DELAY under a steady
        stream; with nothing being launched, it plans at once (the keeper starts the
        first jobs of a burst while the manager takes in the rest)."""
        if not self._needs_plan or (not self._inbox.empty() and self.launching
                                    and not self.interactive.pending
                                    and time.monotonic() - self._planned < PLAN_MAX_DELAY):
            return []
        self._needs_plan = False
        self._planned = time.monotonic()
        self._plan_ran = True
        # Looked at here too, not only by the disk watch: work submitted just after the
        # disk filled must not start on its last look (a statvfs is a microsecond).
        if self.guard.check_space():
            self._space_changed()
        if self.guard.low:  # new work waits for room on the disk, and says so
            self.waiting.set_reasons({w.id: self.guard.low for w in self.waiting.ordered})
            return []
        if not self.waiting.ordered:
            return []
        mine, elsewhere = self.for_here(self.waiting.ordered)
        plan = self.plan_for(mine, time.time())
        if plan is None:  # another node plans now: again in a moment
            self._plan_ran = False
            self.after(PLAN_RETRY, self.replan)
            return []
        self.waiting.set_reasons({**elsewhere, **plan.reasons})
        from zephserver.web.models import Job

        fresh, self._fresh = self._fresh, {}
        ids = [job_id for job_id in plan.start if self.dequeue(job_id) is not None]
        if self.shared_queue:
            ids = self.claim(ids)
        if not ids:
            return []
        if len(ids) > 1:  # (one alone would wait for the warm as for its own migration)
            self.local.expect()
        jobs = {i: fresh[i] for i in ids if i in fresh}
        if len(jobs) < len(ids):
            jobs.update(Job.objects.select_related("owner").in_bulk(
                in_shapes([i for i in ids if i not in jobs])))
        prepared = []
        for job_id in ids:
            job = jobs.get(job_id)
            if job is not None and job.node == "":
                job.node = self.node  # (claimed above)
            if job is None or job.state != J.QUEUED:
                log.error("job %d: queued here but %s in the database; not started", job_id,
                          "missing" if job is None else job.state, extra={"job": job_id})
                continue
            self.execute(self._prepare, (job,), None)
            if job.state == J.STARTING:
                prepared.append(job)
        return prepared

    def _prepare(self, job: Any) -> None:
        app = self.apps.get(job.app)
        if app is None:
            self.change(job, J.STARTING, "starting")
            self.change(job, J.FAILED, f"app {job.app!r} is no longer defined")
            return
        job_dir = os.path.join(self.jobs_dir, str(job.pk))
        generated = {"job_id": str(job.pk), "job_dir": job_dir, "data_dir": self.data_dir,
                     "user": job.owner.username, "node": self.node}
        log_path = os.path.join(job_dir, "output.log")
        if app.session is not None:
            try:
                generated.update(self.interactive.allocate(job, app))
            except NoFreePort as exc:  # stays queued (or is refused) until a port frees
                self.enqueue(job)
                self.waiting.note(job.pk, str(exc))
                if self.shared_queue:
                    self.unclaim(job)  # (another node may have one)
                return
            if app.session.log_dir:  # wslink's <log_dir>/<id>.txt
                os.makedirs(app.session.log_dir, exist_ok=True)
                log_path = os.path.join(app.session.log_dir, f"{job.pk}.txt")
        spec = app.prepare(job.params, generated)
        argv, failure = spec.argv, ""
        job.leash = self.leash_for(app)  # (requeue: held to this node's lease)
        try:  # who it runs as (the executor switches to it; None: as the daemon)
            job.account = account_for(effective(app.run_as, self.run_as),
                                      job.owner.username, self.user_map)
        except (NoAccount, KeyError) as exc:
            failure = f"cannot run as its account: {exc}"
        if app.session is not None:
            job.job_dir, job.log_path = job_dir, log_path  # (persisted just below)
            try:
                argv = self.interactive.prepare(job, app, spec, generated)
            except Exception as exc:
                log.exception("job %d: preparing the session failed", job.pk,
                              extra={"job": job.pk})
                failure = f"preparing the session failed: {type(exc).__name__}: {exc}"
        self._env[job.pk] = spec.env
        # a session's port, secret and URL are written with the rest, before the spawn
        session_fields = {"extra": job.extra} if app.session is not None else {}
        self.change(job, J.STARTING, "starting", argv=argv, cwd=spec.cwd, job_dir=job_dir,
                    log_path=log_path, pid=None, start_time=None,
                    boot_id=self.executor_for(job).boot or "", **session_fields)
        if failure:
            self._env.pop(job.pk, None)
            self.change(job, J.FAILED, failure)

    def session_ready(self, job_id: int) -> None:
        active = self._active.get(job_id)
        if active is None or active.job.state != J.STARTING or active.job.stop_requested:
            return
        job = active.job
        self.change(job, J.RUNNING, f"ready on {job.extra['host']}:{job.extra['port']}")
        self._arm_wall_time(job)
        self.interactive.ready(active)

    # -- exits and stops ------------------------------------------------------------------

    def _exit_callback(self, job_id: int) -> Callable[[int | None], None]:
        def exited(returncode: int | None) -> None:  # the executor's thread
            self.post(self._on_exit, job_id, returncode)
        return exited

    def _on_exit(self, job_id: int, returncode: int | None) -> None:
        active = self._active.pop(job_id, None)
        if active is None:
            return
        job = active.job
        if self.cluster.enabled and self.moved_away(job):
            self.tail.finish(job.log_path)
            return
        if returncode is None:  # re-adopted: we were not the parent; the shim recorded it
            returncode = self.executor_for(job).recorded_exit(job)
        end = self.executor_for(job).end_state(job)
        if end is not None and not job.stop_requested:  # not what a stop asked for
            self.change(job, end[0], end[1], exit_code=returncode)
        else:
            self._finish(job, returncode, "", active.stop_by)
        self.tail.finish(job.log_path)
        self._needs_plan = True
        if not self._active:  # a burst of jobs has ended
            memory.quiet()

    def _finish(self, job: Any, code: int | None, when: str, stop_by: str = "") -> None:
        state, reason = ended(job, code, when, stop_by)
        self.change(job, state, reason, exit_code=code)

    def health_problems(self) -> list[str]:
        low = self.guard.low.removeprefix("waiting: ")
        return super().health_problems() + ([f"new work waits: {low}"] if low else []) + [
            f"{e.name}: {e.problem}" for e in self.executors.values()
            if getattr(e, "problem", "")]

    def _arm_wall_time(self, job: Any) -> None:
        if not job.wall_time:
            return
        elapsed = (now() - job.started).total_seconds() if job.started else 0.0
        self.after(max(0.0, job.wall_time - elapsed), lambda: self._wall_time_up(job.pk))

    def _wall_time_up(self, job_id: int) -> None:
        active = self._active.get(job_id)
        if active is None or active.job.stop_requested:
            return
        self.stop(active, J.TIMED_OUT, f"stopping: wall time of {active.job.wall_time:g}s "
                                       "exceeded", "")

    def stop(self, active: Active, end_state: JobState, reason: str, by: str) -> None:
        """Ask a job's process to end (TERM, the app's grace, KILL); its exit then settles
        it as ``end_state``."""
        job = active.job
        job.stop_requested = end_state
        job.state_reason = reason
        job.persist("stop_requested", "state_reason")
        active.stop_by = by
        self.publish(job)
        if active.launching:  # no process to stop yet: once it has one (_started)
            active.stop_when_started = (end_state, reason, by)
            return
        grace = active.app.grace if active.app is not None else 10.0
        young = active.spawned_at and not self.executor_for(job).program_started(job)
        self.executor_for(job).stop(job, grace)
        if young:
            # Until the program has exec'd, the shim's child has its TERM trap and swallows
            # this: say it again once the program runs (not at all if it never does).
            deadline = time.monotonic() + grace
            self.after(EXEC_POLL, lambda: self._term_when_started(job.pk, deadline))

    def _term_when_started(self, job_id: int, deadline: float) -> None:
        active = self._active.get(job_id)
        if active is None or active.job.pid is None:
            return  # it has ended
        if self.executor_for(active.job).program_started(active.job):
            self.executor_for(active.job).signal(active.job, signal.SIGTERM)
        elif time.monotonic() < deadline:
            self.after(EXEC_POLL, lambda: self._term_when_started(job_id, deadline))
