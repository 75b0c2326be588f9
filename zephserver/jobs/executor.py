"""Where a job's process runs: the executor boundary.

The job manager decides *what* runs and records it; an executor *runs* it: starts a
batch of prepared jobs, tells when each ends, stops one, and after a restart says
whether a recorded process is still the one it started. ``LocalExecutor`` (this node,
started by the keeper or under the shim); ``jobs.slurm_executor`` submits to Slurm
(sbatch/squeue/scancel) behind the same methods: the manager keeps one executor per name
(``executors``) and asks each job's by its app's ``executor`` (default ``local``),
launching each batch through the executor of its jobs. An executor that ``reports``
(Slurm) hands a job back at launch (``Handed``) and later tells the manager when it is
pending, running and ended.

A job given to an executor has ``argv``, ``cwd``, ``job_dir`` (the shim keeps its pid
and exit status beside it, ``shim.meta_files``; the keeper in its ledger), ``log_path``,
``account`` (who it runs as, launch.accounts; None: the daemon's account), and after the
start ``pid``, ``start_time`` and ``boot_id``.
"""

import contextlib
import logging
import os
import queue
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from zephserver.launch import shim
from zephserver.launch.cgroups import Cgroups, CpuShare, MemoryLimits, signal_tree
from zephserver.launch.keeper_client import KeeperClient, KeeperLost
from zephserver.launch.process import (
    Reaper,
    Spawned,
    SpawnError,
    boot_id,
    is_alive,
    job_priority,
    process_start_time,
    spawn,
    with_start_times,
)
from zephserver.launch.records import Recorded, Records
from zephserver.launch.spares import LOG_NAME, SpareDirs
from zephserver.launch.states import JobState

log = logging.getLogger(__name__)

PROGRAM_CACHE_TTL = 10.0  # seconds a found program path is trusted

OnExit = Callable[[int | None], None]  # the exit status, None if it was not seen


class Handed:
    """What ``launch`` gives for a job handed to an executor that reports its start
    itself later (``reports``: Slurm says when it is pending, running, ended)."""

    def __init__(self, reason: str, extra: dict | None = None) -> None:
        self.reason = reason
        self.extra = extra or {}  # recorded at once (the name it will be known by)


class Executor(Protocol):
    name: str
    reports: bool  # whether it reports states itself (jobs.reports) besides exits
    boot: str | None  # this run of the machine, recorded with each process
    roots: list[str]  # where working directories may be (realpaths)

    def launch_in_chunks(self, jobs: list[Any], envs: list[dict[str, str]]
                         ) -> Iterator[list[Spawned | Handed | SpawnError]]:
        """Start each prepared job (in order); what each start gave, a list for the first
        jobs, then the next ones' (all of them at once, or as they are known)."""

    def watch(self, job: Any, on_exit: OnExit, handle: Any = None) -> None:
        """Call ``on_exit`` (from another thread) when the job's process ends."""

    def stop(self, job: Any, grace: float) -> None:
        """SIGTERM to everything the job started, SIGKILL after ``grace`` seconds."""

    def signal(self, job: Any, sig: int) -> None: ...

    def program_started(self, job: Any) -> bool:
        """Whether the job's own program runs yet (not only its wrapper)."""

    def alive(self, job: Any) -> bool:
        """Whether the recorded process is still the one this executor started."""

    def recorded_exit(self, job: Any) -> int | None:
        """The exit status recorded for an ended job (None: none was)."""

    def end_state(self, job: Any) -> tuple[JobState, str] | None:
        """The state and reason the job ended in, when the executor knows better than its
        exit status (out of memory, Slurm's time limit); None otherwise."""

    def orphan(self, job: Any) -> dict | None:
        """For a job recorded as starting but with no pid (the daemon died in between):
        the fields of the process it did start, or None if it started none."""

    def forget(self, job: Any) -> None:
        """The job's end is in the database: what recorded it for a restart can go."""

    def close(self) -> None: ...


def _key(job: Any) -> str:
    return f"job-{job.pk}"


def _memory(job: Any) -> int:
    """The MiB the job asked for (0: none)."""
    return (job.resources or {}).get("memory") or 0


class LocalExecutor:
    """This node: each job in a session of its own, its output straight to its log,
    started by the keeper (``launch.keeper``: where jobs have cgroups) or under the
    ``/bin/sh`` shim (``launch.shim``), so it outlives the daemon and its exit status is
    still recorded. The keeper reports exits; the shim's are seen by the reaper (pidfd)."""

    name = "local"
    reports = False

    def __init__(self, roots: list[str] | None = None, cgroups: Cgroups | None = None,
                 memory: MemoryLimits | None = None, nice: int = 0,
                 keeper_socket: str | None = None, cpu: CpuShare | None = None,
                 spares: SpareDirs | None = None) -> None:
        self.boot = boot_id()
        self.nice = nice  # JOB_NICE
        self.roots = roots or []
        self.cgroups = cgroups  # None: a job's tree is its process group
        self.memory = memory  # None: resources.memory is only counted, not enforced
        self.cpu = cpu  # None: each job's session weighs as its autogroup does
        self._oom: dict[int, int] = {}  # job id -> its limit (MiB), if the OOM killer ended it
        self.reaper = Reaper()
        self._programs: dict[tuple[str, str], tuple[str, float]] = {}
        self._made: set[str] = set()  # directories known to exist
        self._from_keeper: set[int] = set()  # pids it just started, until watched
        self._reported: set[int] = set()  # watched pids whose end the keeper reports
        # Where jobs have cgroups (so nothing they leave needs the shim's subreaper), the
        # keeper starts them: no shell and no fork per job.
        self.keeper = (KeeperClient(keeper_socket, self.reaper.report, self._keeper_lost)
                       if cgroups is not None and keeper_socket
                       and KeeperClient.usable(keeper_socket) else None)
        # what the keeper and the shim recorded of each job's process
        self.records = Records(keeper_socket if self.keeper is not None else None)
        # job directories made ahead, renamed into place by the keeper (launch.spares)
        self.spares = spares if self.keeper is not None else None
        if self.spares is not None:
            self.spares.start()

    def close(self) -> None:
        if self.spares is not None:
            self.spares.close()
        if self.keeper is not None:
            self.keeper.close()
        self.reaper.close()  # jobs keep running: a restarted daemon re-adopts them
        for groups in (self.cgroups, self.memory, self.cpu):
            if groups is not None:
                groups.close()

    # -- starting -------------------------------------------------------------------------

    def launch_in_chunks(self, jobs: list[Any], envs: list[dict[str, str]]
                         ) -> Iterator[list[Spawned | SpawnError]]:
        """``launch``'s results, the first jobs' as soon as they are known (the keeper
        answers in chunks, and spawns the next ones while the caller records these)."""
        chunks: queue.SimpleQueue = queue.SimpleQueue()
        if self.launch_later(jobs, envs, lambda _jobs, results: chunks.put(results)):
            given = 0
            while given < len(jobs):  # (every job's result comes: KeeperClient.spawn_later)
                results = chunks.get()
                given += len(results)
                yield results
            return
        yield self.launch_under_shim(jobs, envs)

    def launch_under_shim(self, jobs: list[Any], envs: list[dict[str, str]]
                          ) -> list[Spawned | SpawnError]:
        """Start ``jobs`` now, each under the ``/bin/sh`` shim (no keeper); their results."""
        # Start times are read after the last spawn: read at once, /proc/PID/stat waits on
        # the exec under way (about twice the cost).
        return with_start_times([self._spawn_under_shim(r) if isinstance(r, dict) else r
                                 for r in self._requests(jobs, envs, by_keeper=False)])

    def launch_later(self, jobs: list[Any], envs: list[dict[str, str]],
                     deliver: Callable[[list[Any], list[Spawned | SpawnError]], None]) -> bool:
        """``launch_in_chunks`` without waiting: each chunk's jobs and results go to
        ``deliver`` as the keeper answers (from its answers' thread, or from this one).
        False, and nothing done: no keeper (``launch_under_shim`` starts them)."""
        keeper = self._keeper()
        if keeper is None:
            return False
        batch = _Answers(self, jobs, self._requests(jobs, envs, by_keeper=True))

        def on_chunk(chunk: list[dict], _more: bool, lost: KeeperLost | None) -> None:
            taken = batch.take(chunk) if lost is None else batch.rest(str(lost))
            if taken[0]:
                deliver(*taken)
        if not batch.asked:  # every one was refused
            deliver(*batch.rest(""))
            return True
        try:
            keeper.spawn_later(batch.asked, self._shared(), on_chunk)
        except KeeperLost as exc:
            on_chunk([], False, exc)
        return True

    def _requests(self, jobs: list[Any], envs: list[dict[str, str]], by_keeper: bool
                  ) -> list[dict | SpawnError]:
        requests: list[dict | SpawnError] = []
        for job, env in zip(jobs, envs, strict=True):
            try:
                requests.append(self._request(job, env, by_keeper))
            except SpawnError as exc:
                requests.append(exc)
        return requests

    def _shared(self) -> list[str]:
        """The groups every job of the keeper's joins once started (the node's cpu one)."""
        return [self.cpu.procs] if self.cpu is not None else []

    def expect(self) -> None:
        """Jobs are about to be launched: submitted (a task thread, before its record is
        written), or chosen from the queue (their records are being prepared)."""
        if self.cgroups is not None and self.keeper is not None:
            # The keeper takes the kernel's cgroup migration lock once now. The first
            # migration after a quiet spell waits for an RCU grace period (10-20 ms here),
            # holding the cgroup mutex; paid while the submits are checked and written,
            # the first spawns do not wait for it. (Not connected yet: nothing to warm,
            # and no keeper is started from a task or the batch's transaction.)
            self.keeper.warm(os.path.join(self.cgroups.base, "cgroup.procs"))

    def _request(self, job: Any, env: dict[str, str], by_keeper: bool) -> dict:
        """What starting ``job`` takes (``launch.keeper.spawn``'s request)."""
        account = getattr(job, "account", None)
        # The keeper makes the job's directory just before its spawn, where nothing here
        # needs it first: a batch's first job then starts without waiting for the mkdirs
        # of all the others (a mkdir took 0.2-2 ms where many files had been deleted).
        keeper_makes_dir = by_keeper and job.cwd == job.job_dir and account is None
        again = os.path.lexists(job.job_dir)  # run again (requeued): its directory is there
        if again:  # what its first run left there would pass for this run's
            for path in shim.own_meta(job.job_dir):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        exe = self._check_launchable(job.argv[0], job.cwd, env, job.job_dir,
                                     make_dir=not keeper_makes_dir)
        # The keeper makes the job's group as it enters it: a mkdir in cgroupfs here
        # waited behind the keeper's migrations (one in a grace period holds the cgroup
        # mutex: 10-20 ms stalls, 30 ms of a 100-job launch).
        groups = ([self.cgroups.procs(_key(job)) if by_keeper else
                   self.cgroups.prepare(_key(job))] if self.cgroups else [])
        if self.memory is not None and _memory(job):
            groups.append(self.memory.prepare(_key(job), _memory(job)))
        argv = job.argv
        if account is not None:  # the shim stays ours; the program runs as the account
            argv, env = [*account.switch(), *argv], {**env, **account.env()}
            self._give(account, job)
        # a requeue job is held to the daemon's lease (launch.leash), as the daemon
        argv = [*getattr(job, "leash", ()), *argv]
        spare = self._spare_for(job) if keeper_makes_dir and not again else None
        nice, autogroup = job_priority(self.nice)
        if self.cpu is not None:
            # The keeper moves it into the node's cpu group once started, and the kernel
            # weighs a task by its autogroup only in the root cpu group: its autogroup's
            # niceness would change nothing (a write to /proc less a job, 4 % of the
            # keeper's time in a stream of short jobs).
            autogroup = None
        prefixed = len(argv) > len(job.argv)  # (then argv[0] is absolute)
        request = {"key": _key(job), "exe": argv[0] if prefixed else exe, "argv": argv,
                   "env": env, "cwd": job.cwd, "log": job.log_path, "groups": groups,
                   "nice": nice, "autogroup": autogroup,
                   "dir": job.job_dir if keeper_makes_dir else None, "spare": spare}
        if not by_keeper:  # (the keeper records its jobs in its ledger)
            meta = shim.meta_files(job.job_dir)
            self._make_parent(meta.pid)
            request["meta"] = meta
        return request

    def _spare_for(self, job: Any) -> str | None:
        """A spare directory for the keeper to rename into ``job``'s (its log in it)."""
        if self.spares is None or job.log_path != os.path.join(job.job_dir, LOG_NAME):
            return None
        return self.spares.take()

    def _spawn_under_shim(self, r: dict) -> Spawned | SpawnError:
        try:
            groups = [*r["groups"], self.cpu.procs] if self.cpu is not None else r["groups"]
            return spawn(shim.wrap(r["argv"], r["meta"], r["cwd"], groups,
                                   self.cgroups is None), None, r["env"],
                         r["log"], read_start_time=False, nice=self.nice)
        except SpawnError as exc:
            return exc

    def _keeper(self) -> KeeperClient | None:
        """The keeper, connected (started if need be); None: jobs start under the shim."""
        if self.keeper is None:
            return None
        try:
            self.keeper.connect()
        except (KeeperLost, OSError) as exc:
            log.error("no keeper (%s): jobs start under the shim", exc)
            return None
        return self.keeper

    def _results(self, jobs: list[Any], requests: list[dict | SpawnError],
                 answers: dict[str, dict], lost: str) -> list[Spawned | SpawnError]:
        results: list[Spawned | SpawnError] = []
        for job, request in zip(jobs, requests, strict=True):
            if isinstance(request, SpawnError):
                results.append(request)
                continue
            answer = answers.get(request["key"])
            if answer is None:  # the keeper went away: it may have started it first
                found = self.orphan(job)
                results.append(Spawned(found["pid"], found["start_time"], None) if found
                               else SpawnError(f"the keeper went away: {lost}"))
            elif "error" in answer:
                results.append(SpawnError(answer["error"]))
            else:
                # (its start time is in its pid file: the keeper writes it next)
                results.append(Spawned(answer["pid"], None, None))
                self._from_keeper.add(answer["pid"])
        return results

    def _make_parent(self, path: str) -> None:
        """The directory ``path`` goes in, made once (not looked up for every job)."""
        parent = os.path.dirname(path)
        if parent not in self._made:
            try:
                os.makedirs(parent, 0o700, exist_ok=True)
            except OSError as exc:
                raise SpawnError(f"cannot create {parent}: {exc.strerror}") from exc
            self._made.add(parent)

    @staticmethod
    def _give(account: Any, job: Any) -> None:
        """The job's directory and log belong to the account it runs as."""
        try:
            os.close(os.open(job.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640))
            account.own(job.job_dir)
            if not job.log_path.startswith(job.job_dir + os.sep):  # (a session's log_dir)
                account.own(job.log_path)
        except OSError as exc:
            raise SpawnError(f"cannot give the job's files to {account.name}: "
                             f"{exc.strerror}") from exc

    def _check_launchable(self, program: str, cwd: str, env: dict, job_dir: str,
                          make_dir: bool = True) -> str:
        """Refuse before spawning what the shim could only report as exit 127; the
        program's executable. The job's directory is made first unless not ``make_dir``
        (the keeper makes it)."""
        if make_dir:
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
        found = self._find_program(program, env.get("PATH", os.defpath))
        if found is None:
            raise SpawnError(f"program not found or not executable: {program}")
        return found

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

    # -- running --------------------------------------------------------------------------

    def watch(self, job: Any, on_exit: OnExit, handle: Any = None) -> None:
        cgroups, key = self.cgroups, _key(job)
        memory = self.memory if _memory(job) else None  # (a group only where a limit is)

        def exited(_pid: int, code: int | None) -> None:
            if cgroups is not None:  # what it left behind dies with it
                cgroups.finish(key)
            if memory is not None:
                if memory.oom_killed(key):
                    self._oom[job.pk] = _memory(job)
                memory.finish(key)
            on_exit(code)
        if self._kept(job):
            pid = job.pid
            self._reported.add(pid)

            def reported(_pid: int, code: int | None) -> None:
                exited(_pid, code)  # (first: the watchdog takes it for alive until then)
                self._reported.discard(pid)
            self.reaper.watch_reported(pid, reported)
        else:
            self.reaper.watch(job.pid, exited, handle)

    def _keeper_lost(self, pids: set[int]) -> None:
        """The keeper went away: its jobs are watched by pidfd from now on."""
        self._reported -= pids
        self.reaper.unreported(pids)

    def _kept(self, job: Any) -> bool:
        """Whether the keeper is the parent of ``job``'s process, and reports its end:
        started by it just now, or re-adopted after a restart (the keeper of the earlier
        run, found now)."""
        if self.keeper is None:
            return False
        if job.pid in self._from_keeper:
            self._from_keeper.discard(job.pid)
            return True
        if job.pid not in self.keeper.children and self._recorded(job).kept:
            self._keeper()
        return job.pid in self.keeper.children

    def stop(self, job: Any, grace: float) -> None:
        self.reaper.stop_process(job.pid, grace, lambda pid, sig: self._send(job, sig))

    def signal(self, job: Any, sig: int) -> None:
        self._send(job, sig)

    def _send(self, job: Any, sig: int) -> bool:
        return signal_tree(job.pid, sig, self.cgroups, _key(job))

    def end_state(self, job: Any) -> tuple[JobState, str] | None:
        limit = self._oom.pop(job.pk, None)
        return None if limit is None else (JobState.FAILED,
                                           f"out of memory (limit {limit} MiB)")

    def sweep(self, running: list[Any]) -> None:
        """At start, once running jobs are re-adopted: the cgroups of every other job go,
        and what is left in them is killed (a job that ended while the daemon was down
        takes its leftovers with it)."""
        keep = {_key(job) for job in running}
        for groups in (self.cgroups, self.memory):
            if groups is not None:
                groups.sweep(keep)

    def program_started(self, job: Any) -> bool:
        if self.keeper is not None and job.pid in self.keeper.children:
            return True  # the keeper's child is the program itself (its record comes later)
        return self._recorded(job).kept or self.records.shim_started_program(job.pid,
                                                                             job.job_dir)

    # -- after a restart ------------------------------------------------------------------

    def _recorded(self, job: Any) -> Recorded:
        return self.records.of(_key(job), job.job_dir)

    def alive(self, job: Any) -> bool:
        # same boot and same kernel start time: never a pid the kernel has reused
        if job.boot_id != self.boot:
            return False
        if job.pid in self._reported or is_alive(job.pid, job.start_time):
            return True  # (the keeper reports its end: until then, it is not gone)
        # Started by the keeper: its start time is in its record, and until the keeper
        # reaps it (and records its end) a zombie of the keeper's is not gone yet.
        recorded = self._recorded(job)
        if not recorded.kept or recorded.pid != job.pid:
            return False
        keeper = self._keeper()
        return is_alive(job.pid, recorded.start_time,
                        zombie_of=keeper.pid if keeper is not None else None)

    def recorded_exit(self, job: Any) -> int | None:
        recorded = self._recorded(job)
        if recorded.kept and recorded.pid != job.pid:
            return None  # (an earlier run's)
        return recorded.status

    def forget(self, job: Any) -> None:
        """The keeper may drop it from its ledger; where the shim or an older keeper
        recorded it, its pid and status files go (two small files a job, kept forever
        before: a block each on disk, and a directory that only grew); those in the job's
        own directory stay with it (removing them cost every new file on this disk for
        30 s)."""
        if self.keeper is not None:
            self.keeper.forget(_key(job))
        if job.job_dir:
            meta = shim.found_meta(job.job_dir)
            if meta == shim.own_meta(job.job_dir):
                return
            for path in (meta.pid, meta.status):
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def orphan(self, job: Any) -> dict | None:
        recorded = self._recorded(job)
        pid = recorded.pid
        if pid is not None and recorded.kept:  # started by the keeper
            if is_alive(pid, recorded.start_time) or recorded.status is not None:
                return {"pid": pid, "start_time": recorded.start_time, "boot_id": self.boot}
            return None
        if pid is None or not (self.records.is_shim_of(pid, job.job_dir)
                               or recorded.status is not None):
            return None
        return {"pid": pid, "start_time": process_start_time(pid), "boot_id": self.boot}


class _Answers:
    """One batch given to the keeper: its answers, a chunk at a time, as each job's
    result, in the order of the batch (a job refused before the spawn, ``SpawnError``,
    was not asked: its result comes with those around it)."""

    def __init__(self, executor: LocalExecutor, jobs: list[Any],
                 requests: list[dict | SpawnError]) -> None:
        self.executor, self.jobs, self.requests = executor, jobs, requests
        self._asked = [i for i, r in enumerate(requests) if isinstance(r, dict)]
        self.asked: list[dict] = [requests[i] for i in self._asked]  # type: ignore[misc]
        self._answers: dict[str, dict] = {}
        self._done = 0  # jobs whose results were given

    def take(self, chunk: list[dict]) -> tuple[list[Any], list[Spawned | SpawnError]]:
        """The jobs this chunk answers (up to the last one answered: the keeper answers
        in the order asked), with their results."""
        self._answers.update((a["key"], a) for a in chunk)
        known = (len(self.requests) if len(self._answers) == len(self._asked)
                 else self._asked[len(self._answers) - 1] + 1)
        return self._give(known, "")

    def rest(self, lost: str) -> tuple[list[Any], list[Spawned | SpawnError]]:
        """The jobs not answered yet, the keeper gone (``lost`` says why)."""
        return self._give(len(self.requests), lost)

    def _give(self, upto: int, lost: str) -> tuple[list[Any], list[Spawned | SpawnError]]:
        jobs, requests = self.jobs[self._done:upto], self.requests[self._done:upto]
        self._done = max(self._done, upto)
        return jobs, self.executor._results(jobs, requests, self._answers, lost)
