"""The Slurm executor: jobs of apps with ``executor: "slurm"`` run on a Slurm cluster.

A job handed to it is submitted with ``sbatch`` on a small pool of threads (the job
manager never waits on Slurm) and is then watched by one thread ("zeph-slurm") that asks
``squeue`` once per tick about *all* of them, whatever their number. What it sees it
reports to the manager (``report``): submitted and pending (QUEUED, with Slurm's reason),
running (with the node list), ended (the exit callback, with ``end_state`` when Slurm's
state says more than the exit code: TIMEOUT, CANCELLED, OUT_OF_MEMORY, NODE_FAIL).

A job that has left ``squeue`` is looked up with ``scontrol show job`` and then
``sacct``; only one no source knows is LOST. While Slurm cannot be reached nothing
changes state: submissions wait with a visible reason and a backoff (up to
SLURM_SUBMIT_RETRY seconds), and the watch keeps every job as it was, with a warning.

Each job's Slurm name is ``zeph-<DATA_DIR digest>-<job id>``: a daemon that died between
``sbatch`` and recording the Slurm id finds its job again by that name.
"""

import hashlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from zephserver.jobs.executor import Handed, OnExit
from zephserver.launch.process import SpawnError
from zephserver.launch.slurm import (
    SQUEUE_FIELDS,
    SlurmCommands,
    SlurmJob,
    SlurmOptions,
    batch_script,
    parse_sacct,
    parse_scontrol,
    parse_squeue,
    sbatch_args,
    unreachable,
)
from zephserver.launch.states import JobState

log = logging.getLogger("zephserver.jobs.slurm")
J = JobState
SUBMIT_THREADS = 4
RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # seconds between submissions while Slurm is away
COMMAND_JOIN = 5.0  # seconds close() waits for the watch thread
MISSING_LOOKS = 2  # ticks a job may be missing from every source before it is LOST

# report(job id, new state or None to keep it, reason, fields of the record)
Report = Callable[[int, JobState | None, str, dict], None]


@dataclass
class _Tracked:
    job_id: int
    name: str
    log_path: str
    on_exit: OnExit | None = None
    slurm_id: str | None = None
    last: SlurmJob | None = None
    was_running: bool = False
    stop_asked: bool = False
    kill_at: float | None = None  # monotonic: scancel (KILL) then
    missing: int = 0


def external(slurm_id: str, name: str, nodes: str = "") -> dict:
    """The record's ``extra`` about its Slurm job (clients see it)."""
    return {"external": {"executor": "slurm", "id": slurm_id, "name": name,
                         **({"nodes": nodes} if nodes else {})}}


class SlurmExecutor:
    name = "slurm"
    reports = True  # states come from its own watch (``report``), not only exits
    boot = None  # its jobs are not tied to this machine's boot

    def __init__(self, commands: SlurmCommands, data_dir: str, report: Report,
                 options_for: Callable[[Any], SlurmOptions], tick: float,
                 submit_retry: float, recheck: Callable[[list[str]], None]) -> None:
        self.commands = commands
        self.tag = hashlib.sha1(os.path.realpath(data_dir).encode()).hexdigest()[:8]
        self.report = report
        self.options_for = options_for
        self.recheck = recheck  # (Tail.recheck) logs written on compute nodes
        self.tick, self.submit_retry = tick, submit_retry
        self.roots: list[str] = []
        self.problem = ""  # what /readyz says while squeue fails
        self._jobs: dict[int, _Tracked] = {}
        self._ends: dict[int, tuple[JobState, str]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._looked = 0.0  # monotonic time of the last squeue
        self._closing = threading.Event()
        self._pool = ThreadPoolExecutor(SUBMIT_THREADS, thread_name_prefix="zeph-sbatch")
        # scancel in order, never behind submissions waiting for slurmctld
        self._signals = ThreadPoolExecutor(1, thread_name_prefix="zeph-scancel")
        self._thread = threading.Thread(target=self._watch_loop, name="zeph-slurm",
                                        daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, s: Any, data_dir: str, report: Report,
                      options_for: Callable[[Any], SlurmOptions],
                      recheck: Callable[[list[str]], None]) -> "SlurmExecutor":
        return cls(SlurmCommands(s.SLURM_BIN_DIR, s.SLURM_CONF), data_dir, report,
                   options_for, s.SLURM_TICK, s.SLURM_SUBMIT_RETRY, recheck)

    def close(self) -> None:
        """Jobs keep running in Slurm: a restarted daemon re-adopts them by id or name."""
        self._closing.set()
        self._wake.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._signals.shutdown(wait=True)  # a cancel asked for is delivered
        self._thread.join(timeout=COMMAND_JOIN)

    def job_name(self, job: Any) -> str:
        return f"zeph-{self.tag}-{job.pk}"

    # -- submitting -----------------------------------------------------------------------

    def launch_in_chunks(self, jobs: list[Any], envs: list[dict[str, str]]
                         ) -> Iterator[list[Any]]:
        yield self.launch(jobs, envs)  # (a submission returns at once: one chunk)

    def launch(self, jobs: list[Any], envs: list[dict[str, str]]) -> list[Any]:
        out: list[Any] = []
        for job, env in zip(jobs, envs, strict=True):
            try:
                argv, sbatch_env = self._prepare(job, env)
            except SpawnError as exc:
                out.append(exc)
                continue
            tracked = _Tracked(job.pk, self.job_name(job), job.log_path)
            with self._lock:
                self._jobs[job.pk] = tracked
            self._pool.submit(self._submit, tracked, argv, sbatch_env,
                              batch_script(job.argv, f"zephserver job {job.pk} ({job.app})"))
            out.append(Handed("submitting to Slurm",
                              {"external": {"executor": "slurm", "name": tracked.name}}))
        return out

    def _prepare(self, job: Any, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """The job directory (on the filesystem the compute nodes share), sbatch's words
        and environment."""
        try:
            os.makedirs(job.job_dir, exist_ok=True)
            if job.cwd.startswith(job.job_dir + os.sep):
                os.makedirs(job.cwd, exist_ok=True)
        except OSError as exc:
            raise SpawnError(f"cannot create the job directory {job.job_dir}: "
                             f"{exc.strerror}") from exc
        opts = self.options_for(job)
        account = getattr(job, "account", None)
        try:  # made here, so it is followed from the start; Slurm appends to it
            os.close(os.open(job.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640))
            if account is not None:
                env = {**env, **account.env()}
                account.own(job.job_dir)
        except OSError as exc:
            raise SpawnError(f"cannot prepare the job's files in {job.job_dir}: "
                             f"{exc.strerror}") from exc
        args = sbatch_args(opts, name=self.job_name(job),
                           comment=f"zephserver job {job.pk} of {job.owner.username}",
                           cwd=job.cwd, log_path=job.log_path, resources=job.resources or {},
                           wall_time=job.wall_time,
                           uid=None if account is None else account.uid,
                           gid=None if account is None else account.gid)
        return args, {**env, **opts.env}

    def _submit(self, tracked: _Tracked, args: list[str], env: Mapping[str, str],
                script: str) -> None:
        """sbatch (a pool thread); while slurmctld cannot be reached, try again with a
        backoff for up to ``submit_retry`` seconds, saying so in the job's reason."""
        delay, given_up_at = RETRY_FIRST, time.monotonic() + self.submit_retry
        while not self._closing.is_set():
            done = self.commands.run("sbatch", *args, stdin=script, env=env)
            message = (done.stderr or done.stdout).strip().removeprefix("sbatch: error: ")
            if done.returncode == 0 and done.stdout.strip():
                self._submitted(tracked, done.stdout.strip().split(";")[0])
                return
            if not unreachable(message):
                self._refused(tracked, f"sbatch refused it: {message or 'no reason given'}")
                return
            found = self._by_name(tracked.name)  # a timeout may have submitted it after all
            if found is not None:
                self._submitted(tracked, found)
                return
            if time.monotonic() + delay > given_up_at:
                self._refused(tracked, f"could not submit to Slurm: {message}")
                return
            log.warning("job %d: slurmctld unreachable (%s); next try in %gs",
                        tracked.job_id, message, delay, extra={"job": tracked.job_id})
            self.report(tracked.job_id, None, f"submitting: slurmctld unreachable, retry in "
                        f"{delay:g}s ({message})", {})
            self._closing.wait(delay)
            delay = min(RETRY_MAX, delay * 2)

    def _submitted(self, tracked: _Tracked, slurm_id: str) -> None:
        with self._lock:
            tracked.slurm_id = slurm_id
            cancel = tracked.stop_asked
        log.info("job %d: submitted to Slurm as job %s", tracked.job_id, slurm_id,
                 extra={"job": tracked.job_id})
        self.report(tracked.job_id, J.QUEUED, f"pending in Slurm (job {slurm_id})",
                    {"extra": external(slurm_id, tracked.name)})
        if cancel:  # cancelled while it was being submitted
            self.commands.run("scancel", slurm_id)
        self._wake.set()

    def _refused(self, tracked: _Tracked, why: str) -> None:
        with self._lock:
            self._jobs.pop(tracked.job_id, None)
            stopped = tracked.stop_asked
        log.warning("job %d: %s", tracked.job_id, why, extra={"job": tracked.job_id})
        if stopped and tracked.on_exit is not None:  # cancelled meanwhile: it ends so
            tracked.on_exit(None)
        else:
            self.report(tracked.job_id, J.FAILED, why, {})

    def _by_name(self, name: str) -> str | None:
        done = self.commands.run("squeue", "-h", "--states=all", f"--name={name}", "-o", "%i")
        ids = done.stdout.split() if done.returncode == 0 else []
        return ids[-1] if ids else None

    # -- watching -------------------------------------------------------------------------

    def watch(self, job: Any, on_exit: OnExit, handle: Any = None) -> None:
        with self._lock:
            tracked = self._jobs.get(job.pk)
            if tracked is None:  # re-adopted after a restart
                slurm_id = ((job.extra or {}).get("external") or {}).get("id")
                tracked = _Tracked(job.pk, self.job_name(job), job.log_path,
                                   slurm_id=slurm_id)
                self._jobs[job.pk] = tracked
            tracked.on_exit = on_exit
            tracked.was_running = job.state == J.RUNNING
        self._wake.set()

    def _watch_loop(self) -> None:
        while not self._closing.is_set():
            self._wake.wait(self.next_wake())
            self._wake.clear()
            if self._closing.is_set():
                return
            try:
                self._kill_due()
                if time.monotonic() - self._looked >= self.tick:  # never more than once a tick
                    self._looked = time.monotonic()
                    self._look()
            except Exception:  # the watch must go on
                log.exception("slurm: watching jobs failed")

    def _look(self) -> None:
        """One squeue for every submitted job; then what each answer means."""
        with self._lock:
            tracked = [t for t in self._jobs.values() if t.slurm_id and t.on_exit]
        if not tracked:
            return
        done = self.commands.run("squeue", "-h", "--states=all",
                                 "--jobs=" + ",".join(t.slurm_id for t in tracked),  # type: ignore[misc]
                                 "-O", ",".join(f"{f}:|" for f in SQUEUE_FIELDS))
        if done.returncode != 0 and "Invalid job id" not in done.stderr:
            if not self.problem:
                log.warning("slurm: squeue fails (%s): jobs keep their state until Slurm "
                            "answers", done.stderr.strip())
            self.problem = f"squeue fails: {done.stderr.strip() or done.returncode}"
            return
        if self.problem:
            log.info("slurm: squeue answers again")
            self.problem = ""
        seen = parse_squeue(done.stdout) if done.returncode == 0 else {}
        self.recheck([t.log_path for t in tracked if t.was_running])
        for t in tracked:
            job = seen.get(t.slurm_id) or self._finished(t.slurm_id)  # type: ignore[arg-type]
            if job is not None:
                t.missing = 0
                self._observe(t, job)
            else:
                t.missing += 1
                if t.missing >= MISSING_LOOKS:
                    self._end(t, None, (J.LOST, f"Slurm job {t.slurm_id} is known to "
                                                "neither squeue, scontrol nor sacct"))

    def _finished(self, slurm_id: str) -> SlurmJob | None:
        """A job squeue no longer shows: scontrol (while slurmctld remembers it), then
        sacct (where accounting is kept)."""
        done = self.commands.run("scontrol", "-o", "show", "job", slurm_id)
        found = parse_scontrol(done.stdout) if done.returncode == 0 else None
        if found is None and self.commands.path("sacct"):
            done = self.commands.run("sacct", "-n", "-P", "-X", "-o",
                                     "State,ExitCode,NodeList", "-j", slurm_id)
            found = parse_sacct(slurm_id, done.stdout) if done.returncode == 0 else None
        return found

    def _observe(self, t: _Tracked, job: SlurmJob) -> None:
        before, t.last = t.last, job
        if job.pending:
            if before is None or before.reason != job.reason or not before.pending:
                why = f": {job.reason}" if job.told_reason else ""
                self.report(t.job_id, J.QUEUED, f"pending in Slurm (job {job.id}){why}", {})
            return
        if not t.was_running and (job.running or job.nodes):
            t.was_running = True
            self.report(t.job_id, J.RUNNING, f"running on {job.nodes} (Slurm job {job.id})",
                        {"extra": external(job.id, t.name, job.nodes)})
        if job.ended:
            self._end(t, job.exit_code, job.ending())

    def _end(self, t: _Tracked, code: int | None, ending: tuple[JobState, str] | None
             ) -> None:
        with self._lock:
            self._jobs.pop(t.job_id, None)
            if ending is not None:
                self._ends[t.job_id] = ending
        if t.on_exit is not None:
            t.on_exit(code)

    # -- stopping -------------------------------------------------------------------------

    def stop(self, job: Any, grace: float) -> None:
        """A pending job is cancelled at once; a running one gets SIGTERM (the batch step
        is the program itself) and, after ``grace``, scancel."""
        with self._lock:
            t = self._jobs.get(job.pk)
            if t is None:
                return
            t.stop_asked = True
            slurm_id, started = t.slurm_id, t.was_running
            if slurm_id is not None and started:
                t.kill_at = time.monotonic() + grace
        if slurm_id is None:
            return  # being submitted: cancelled as soon as Slurm names it
        # on the pool: the manager's thread never waits on slurmctld
        if started:
            self._signals.submit(self.commands.run, "scancel", "--signal=TERM", "--full",
                                 slurm_id)
        else:
            self._signals.submit(self.commands.run, "scancel", slurm_id)
        self._wake.set()

    def signal(self, job: Any, sig: int) -> None:
        with self._lock:
            t = self._jobs.get(job.pk)
            slurm_id = t.slurm_id if t is not None else None
        if slurm_id is not None:
            self._signals.submit(self.commands.run, "scancel",
                                 f"--signal={signal.Signals(sig).name[3:]}", "--full",
                                 slurm_id)

    def _kill_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [t for t in self._jobs.values() if t.kill_at is not None and t.kill_at <= now]
            for t in due:
                t.kill_at = None
        for t in due:
            self._signals.submit(self.commands.run, "scancel", t.slurm_id)

    def next_wake(self) -> float:
        """Seconds until the watch must act: its next look, or a kill due sooner."""
        now = time.monotonic()
        with self._lock:
            dues = [t.kill_at for t in self._jobs.values() if t.kill_at is not None]
        return max(0.0, min([self._looked + self.tick - now, *[d - now for d in dues]]))

    # -- the rest of the executor boundary ------------------------------------------------

    def program_started(self, job: Any) -> bool:
        return True  # the batch step is the program: a TERM always reaches it

    def alive(self, job: Any) -> bool:
        with self._lock:
            return job.pk in self._jobs

    def recorded_exit(self, job: Any) -> int | None:
        return None  # its exit code came with the end Slurm reported

    def forget(self, job: Any) -> None:
        pass  # (Slurm keeps its own records)

    def end_state(self, job: Any) -> tuple[JobState, str] | None:
        with self._lock:
            return self._ends.pop(job.pk, None)

    def orphan(self, job: Any) -> dict | None:
        """A job recorded as being submitted when the daemon stopped: Slurm's job of its
        name, if sbatch got that far."""
        name = self.job_name(job)
        slurm_id = self._by_name(name)
        return None if slurm_id is None else {"extra": {**(job.extra or {}),
                                                        **external(slurm_id, name)}}

