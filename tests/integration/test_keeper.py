"""The keeper (launch.keeper) and its client, on their own: a real keeper process, real
programs, no daemon."""

import contextlib
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support.daemon import short_tmpdir
from tests.support.jobs import (
    NICE_WEIGHTS,
    autogroup_nice,
    is_zombie_or_gone,
    keepers_under,
    proc_stat,
    remove_cgroups_of,
)
from tests.support.poll import poll_until
from zephserver.jobs.executor import LocalExecutor
from zephserver.launch import keeper, shim
from zephserver.launch.cgroups import Cgroups, CpuShare
from zephserver.launch.keeper_client import FORGET_BATCH, KeeperClient
from zephserver.launch.process import Spawned, SpawnError
from zephserver.launch.spares import SPARE_DIR, SpareDirs

pytestmark = pytest.mark.timeout(60)


class Exits:
    def __init__(self) -> None:
        self.codes: dict[int, int] = {}
        self.lost: set[int] = set()
        self.changed = threading.Condition()

    def exited(self, pid: int, code: int) -> None:
        with self.changed:
            self.codes[pid] = code
            self.changed.notify_all()

    def gone(self, pids: set[int]) -> None:
        self.lost |= pids

    def wait(self, pid: int) -> int:
        with self.changed:
            assert self.changed.wait_for(lambda: pid in self.codes, 10), f"no exit of {pid}"
            return self.codes[pid]


@pytest.fixture
def work():
    path = short_tmpdir()
    yield path
    for pid in keepers_under(path):
        os.kill(pid, signal.SIGKILL)
    remove_cgroups_of(path)
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def connected(work):
    """A client of the keeper of ``work`` (started if need be), and the exits it heard."""
    exits = Exits()
    kc = client(work, exits)
    try:
        yield kc, exits
    finally:
        kc.close()


def client(work, exits):
    kc = KeeperClient(str(work / "keeper.sock"), exits.exited, exits.gone)
    kc.connect()
    return kc


def request(work, key, argv, **extra):
    return {"key": key, "exe": argv[0], "argv": argv, "env": {"PATH": os.defpath, "X": "1"},
            "cwd": str(work), "log": str(work / f"{key}.log"), "groups": [], "nice": None,
            "autogroup": None, **extra}


def ledger(work) -> dict:
    """What the keeper of ``work`` recorded, read as a restarted daemon reads it."""
    return keeper.Ledger(keeper.ledger_path(str(work / "keeper.sock"))).read()


def test_it_starts_a_program_records_it_and_reports_its_end(work):
    with connected(work) as (kc, exits):
        [result] = kc.spawn([request(work, "a", ["/bin/sh", "-c", 'pwd; echo "$X"; exit 3'])])
        pid = result["pid"]
        assert exits.wait(pid) == 3
        recorded_pid, start_time, status = ledger(work)["a"]  # (written before it is told)
        assert (recorded_pid, status) == (pid, 3)
        assert start_time > int(proc_stat(kc.pid)[19])  # (after the keeper's own start)
        assert (work / "a.log").read_text() == f"{work}\n1\n"


def test_a_program_gets_sigterm_at_its_default_and_a_signal_is_128_plus(work):
    """The keeper ignores SIGTERM itself; what it starts does not inherit that."""
    with connected(work) as (kc, exits):
        [result] = kc.spawn([request(work, "b", ["/bin/sleep", "30"])])
        os.kill(result["pid"], signal.SIGTERM)
        assert exits.wait(result["pid"]) == 128 + signal.SIGTERM


def test_what_cannot_start_is_an_error_naming_it(work):
    with connected(work) as (kc, exits):
        missing, bad_cwd, ok = kc.spawn([
            request(work, "m", ["/nonexistent/solver"]),
            request(work, "c", ["/bin/true"], cwd=str(work / "nowhere")),
            request(work, "t", ["/bin/true"])])
        assert missing == {"key": "m", "error": "program not found: /nonexistent/solver"}
        assert bad_cwd["error"] == f"working directory not found: {work / 'nowhere'}"
        assert exits.wait(ok["pid"]) == 0


def test_it_makes_the_jobs_directory_it_is_asked_to_and_names_one_it_cannot(work):
    """The daemon leaves a job's directory to the keeper (made just before its spawn, not
    all of a batch's first): the job runs in it with its log there; one that cannot be
    made is an error naming it, and the batch goes on."""
    made, impossible = work / "jobs" / "1", work / "missing-parent" / "2"
    (work / "jobs").mkdir()
    with connected(work) as (kc, exits):
        ok, refused, again = kc.spawn([
            request(work, "d", ["/bin/sh", "-c", "pwd"], cwd=str(made), dir=str(made),
                    log=str(made / "output.log")),
            request(work, "x", ["/bin/true"], cwd=str(impossible), dir=str(impossible),
                    log=str(impossible / "output.log")),
            request(work, "y", ["/bin/true"], dir=str(work))])  # (there already)
        assert exits.wait(ok["pid"]) == 0
        assert (made / "output.log").read_text() == f"{made}\n"
        assert refused == {"key": "x", "error": f"cannot create the job directory "
                                                f"{impossible}: No such file or directory"}
        assert exits.wait(again["pid"]) == 0


def test_it_outlives_its_daemon_and_a_new_one_finds_its_jobs(work):
    """The client goes (a daemon stops); the job goes on; the next client finds the same
    keeper and that job among its children, and hears its end."""
    first = Exits()
    kc = client(work, first)
    [result] = kc.spawn([request(work, "d", ["/bin/sleep", "30"])])
    keeper_pid = kc.pid
    kc.close()
    assert proc_stat(keeper_pid) is not None
    second = Exits()
    kc = client(work, second)
    try:
        assert kc.pid == keeper_pid
        assert result["pid"] in kc.children
        os.kill(result["pid"], signal.SIGKILL)
        assert second.wait(result["pid"]) == 128 + signal.SIGKILL
    finally:
        kc.close()
    poll_until(lambda: is_zombie_or_gone(keeper_pid), 10)  # no daemon, no job: it leaves


def test_a_killed_keeper_hands_its_jobs_back(work):
    with connected(work) as (kc, exits):
        [result] = kc.spawn([request(work, "e", ["/bin/sleep", "30"])])
        os.kill(kc.pid, signal.SIGKILL)
        poll_until(lambda: result["pid"] in exits.lost, 10)
        os.kill(result["pid"], signal.SIGKILL)
        kc.connect()  # a new keeper
        [again] = kc.spawn([request(work, "f", ["/bin/true"])])
        assert exits.wait(again["pid"]) == 0


def test_frames_survive_any_split():
    message = {"op": "spawn", "jobs": [{"argv": ["x" * 70000]}]}
    data = keeper.frame(message) * 3
    for step in (1, 7, 4096, len(data)):
        frames, got = keeper.Frames(), []
        for i in range(0, len(data), step):
            got += frames.feed(data[i:i + step])
        assert got == [message] * 3


def test_a_batch_is_answered_in_chunks_in_order(work):
    """A batch of 20, the fifth refused: the answers come CHUNK at a time, in the order
    asked, so the daemon records the first while the keeper starts the next."""
    with connected(work) as (kc, exits):
        asked = [request(work, f"k{i}", ["/nonexistent/x" if i == 4 else "/bin/true"])
                 for i in range(20)]
        chunks = list(kc.spawn_in_chunks(asked))
        assert [len(c) for c in chunks] == [keeper.CHUNK] * (20 // keeper.CHUNK) + (
            [20 % keeper.CHUNK] if 20 % keeper.CHUNK else [])
        answers = [a for c in chunks for a in c]
        assert [a["key"] for a in answers] == [r["key"] for r in asked]
        assert "error" in answers[4]
        for answer in answers[:4] + answers[5:]:
            assert exits.wait(answer["pid"]) == 0
        # Ended while the batch went on (reported between chunks), each has its start in
        # the ledger before its end: a daemon that reads it finds both, never one alone.
        recorded = ledger(work)
        for answer in answers:
            if "pid" in answer:
                assert recorded[answer["key"]][::2] == (answer["pid"], 0), answer
        assert exits.wait(kc.spawn([request(work, "after", ["/bin/true"])])[0]["pid"]) == 0


def test_a_job_ended_before_its_start_was_due_gets_it_before_its_end_is_told(work):
    """Starts go in the ledger once the whole batch has started (their start times read
    between chunks held the next one back); a job that ended first has its own written,
    start time read from its zombie, before its end and its exit report."""
    asked = [request(work, f"e{i}", ["/bin/true"]) for i in range(3 * keeper.CHUNK)]
    seen = {}

    def exited(pid, code):  # (may come before the chunk that started it is read)
        mine = [entry for entry in ledger(work).values() if entry[0] == pid]
        seen[pid] = len(mine) == 1 and mine[0][1] > 0 and mine[0][2] == code
        exits.exited(pid, code)

    exits = Exits()
    kc = KeeperClient(str(work / "keeper.sock"), exited, exits.gone)
    kc.connect()
    try:
        pids = [a["pid"] for chunk in kc.spawn_in_chunks(asked) for a in chunk]
        for pid in pids:
            assert exits.wait(pid) == 0
    finally:
        kc.close()
    assert seen == dict.fromkeys(pids, True)


def test_jobs_that_keep_running_have_their_starts_recorded_once_the_batch_has_started(work):
    """Written when the keeper has nothing else to do, not between chunks: a restarted
    daemon still finds each running job by its pid and start time."""
    asked = [request(work, f"r{i}", ["/bin/sleep", "30"]) for i in range(keeper.CHUNK + 2)]
    with connected(work) as (kc, exits):
        pids = [a["pid"] for chunk in kc.spawn_in_chunks(asked) for a in chunk]
        keys = [r["key"] for r in asked]
        recorded = poll_until(lambda: (found := ledger(work)).keys() >= set(keys) and found,
                              10, what="every start")
        assert [recorded[key] for key in keys] == [
            (pid, int(proc_stat(pid)[19]), None) for pid in pids]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            assert exits.wait(pid) == 128 + signal.SIGKILL


def test_jobs_forgotten_leave_the_ledger_with_the_next_batch_or_once_there_are_many(work):
    """The daemon has a job's end: the keeper drops it from its ledger. Told with the next
    batch of spawns (not a message a job), or on its own once FORGET_BATCH wait."""
    with connected(work) as (kc, exits):
        started = kc.spawn([request(work, key, ["/bin/true"]) for key in ("a", "b")])
        assert [exits.wait(r["pid"]) for r in started] == [0, 0]
        kc.forget("a")
        assert "a" in ledger(work)
        [c] = kc.spawn([request(work, "c", ["/bin/true"])])
        assert exits.wait(c["pid"]) == 0
        assert "a" not in ledger(work)
        for i in range(FORGET_BATCH - 1):
            kc.forget(f"never-{i}")
        assert "b" in ledger(work)
        kc.forget("b")
        poll_until(lambda: "b" not in ledger(work), 10, what="b forgotten")
        assert list(ledger(work)) == ["c"]


def test_a_warm_up_leaves_the_keeper_where_it_was_and_a_bad_one_changes_nothing(work):
    """``warm`` (before a batch: the kernel's cgroup lock taken once, its grace period
    paid while the daemon still builds the requests) moves the keeper nowhere."""
    with connected(work) as (kc, exits):
        home = Path(f"/proc/{kc.pid}/cgroup").read_text()
        assert kc.warm("/sys/fs/cgroup/cpu/cgroup.procs")
        assert kc.warm("/nowhere/cgroup.procs", quiet=0)  # in no hierarchy: ignored
        [answer] = kc.spawn([request(work, "w", ["/bin/true"])])
        assert exits.wait(answer["pid"]) == 0
        assert Path(f"/proc/{kc.pid}/cgroup").read_text() == home


def test_a_warm_up_is_asked_only_after_a_quiet_spell(work):
    """A burst of submits asks one warm-up, not one each: none within ``quiet`` seconds
    of the last warm-up or spawn asked."""
    with connected(work) as (kc, exits):
        procs = "/sys/fs/cgroup/cpu/cgroup.procs"
        assert kc.warm(procs, quiet=60)  # (nothing asked yet)
        assert not kc.warm(procs, quiet=60)
        assert kc.warm(procs, quiet=0)
        [answer] = kc.spawn([request(work, "w", ["/bin/true"])])
        assert not kc.warm(procs, quiet=60)  # (the spawn was asked just now)
        assert exits.wait(answer["pid"]) == 0


def test_no_warm_up_is_asked_while_a_batch_is_being_spawned(work):
    """The keeper migrates all along a batch: a warm-up then would only queue behind it
    (and its send wait for the keeper once the socket is full)."""
    with connected(work) as (kc, exits):
        procs = "/sys/fs/cgroup/cpu/cgroup.procs"
        batch = [request(work, f"b{i}", ["/bin/true"]) for i in range(keeper.CHUNK + 1)]
        during, started, ended = [], [], threading.Event()

        def on_chunk(results, more, lost):
            started.extend(r["pid"] for r in results)
            if more:  # (the batch's last chunk is not read while this runs)
                during.append(kc.warm(procs, quiet=0))
            else:
                ended.set()

        kc.spawn_later(batch, None, on_chunk)
        assert ended.wait(10)
        assert during == [False]
        assert kc.warm(procs, quiet=0)  # all answered: asked again
        assert [exits.wait(pid) for pid in started] == [0] * len(batch)


def test_the_executor_records_a_batch_in_order_with_refusals_among_it(work):
    """LocalExecutor through the keeper: a batch of 20 where the fifth cannot start (no
    such program, refused before the keeper is asked) comes back chunk by chunk, each
    result in its job's place, and every started job's end is reported."""
    cgroups = Cgroups.detect(str(work), "jobs")
    if cgroups is None:
        pytest.skip("no cgroups here: jobs start under the shim")
    executor = LocalExecutor(roots=[str(work)], cgroups=cgroups,
                             keeper_socket=str(work / "keeper.sock"))
    try:
        jobs = []
        for i in range(20):
            job_dir = str(work / "jobs" / str(i + 1))
            jobs.append(SimpleNamespace(
                pk=i + 1, argv=["/nonexistent/x" if i == 4 else "/bin/true"], cwd=job_dir,
                job_dir=job_dir, log_path=job_dir + "/output.log", resources={}, pid=None))
        os.makedirs(work / "jobs")
        chunks = list(executor.launch_in_chunks(jobs, [{"PATH": os.defpath}] * 20))
        assert len(chunks) > 1
        results = [r for chunk in chunks for r in chunk]
        assert isinstance(results[4], SpawnError)
        assert "/nonexistent/x" in str(results[4])
        ended = Exits()
        for job, result in zip(jobs, results, strict=True):
            if isinstance(result, Spawned):
                job.pid = result.pid
                executor.watch(job, lambda code, pid=job.pid: ended.exited(pid, code))
        for job in jobs[:4] + jobs[5:]:
            assert ended.wait(job.pid) == 0
    finally:
        executor.close()  # (and its cgroups' folders)


def test_a_new_job_gets_a_spare_directory_and_a_job_run_again_keeps_its_own(work):
    """Through the executor, the keeper renames a spare (made ahead: launch.spares) into a
    new job's directory; a job whose directory is there already (run again) keeps it and
    what it holds, and takes no spare."""
    cgroups = Cgroups.detect(str(work), "jobs")
    if cgroups is None:
        pytest.skip("no cgroups here: jobs start under the shim")
    jobs_dir = work / "jobs"
    jobs_dir.mkdir()
    spares = SpareDirs(str(jobs_dir), want=4, quiet=0.01)
    executor = LocalExecutor(roots=[str(work)], cgroups=cgroups,
                             keeper_socket=str(work / "keeper.sock"), spares=spares)
    try:
        poll_until(lambda: len(spares) == 4, what="four spares")
        before = set(os.listdir(jobs_dir / SPARE_DIR))
        again = jobs_dir / "2"
        again.mkdir()
        (again / "kept").write_text("from its first run\n")
        first_run = shim.own_meta(str(again))  # (its first run's, from a spare)
        Path(first_run.pid).write_text("99999\n12345\n")
        Path(first_run.status).write_text("7\n")
        jobs = [SimpleNamespace(pk=pk, argv=["/bin/sh", "-c", f"echo {word}"],
                                cwd=str(jobs_dir / str(pk)), job_dir=str(jobs_dir / str(pk)),
                                log_path=str(jobs_dir / str(pk) / "output.log"),
                                resources={}, pid=None)
                for pk, word in ((1, "one"), (2, "two"))]
        results = [r for chunk in executor.launch_in_chunks(jobs, [{"PATH": os.defpath}] * 2)
                   for r in chunk]
        ended = Exits()
        for job, result in zip(jobs, results, strict=True):
            job.pid = result.pid
            executor.watch(job, lambda code, pid=job.pid: ended.exited(pid, code))
        for job in jobs:
            assert ended.wait(job.pid) == 0
        assert (jobs_dir / "1" / "output.log").read_text() == "one\n"
        assert (again / "output.log").read_text() == "two\n"
        assert (again / "kept").read_text() == "from its first run\n"
        assert len(before - set(os.listdir(jobs_dir / SPARE_DIR))) == 1  # job 1's
        # Both recorded in the keeper's ledger (no file a job); job 2's first run's files
        # are gone (they would pass for this run's).
        for job in jobs:
            recorded = poll_until(lambda j=job: executor.records.of(f"job-{j.pk}", j.job_dir)
                                  if executor.recorded_exit(j) == 0 else None,
                                  10, what="its status")
            assert recorded.kept
            assert recorded.pid == job.pid
        assert sorted(os.listdir(jobs_dir / "1")) == ["output.log"]
        assert not any(os.path.exists(path) for path in first_run)
        executor.forget(jobs[0])
        executor.keeper.close()  # (the daemon stops: it tells the keeper what it forgot)
        poll_until(lambda: "job-1" not in ledger(work), 10, what="job 1 forgotten")
        assert ledger(work)["job-2"][2] == 0
    finally:
        executor.close()


def test_a_jobs_group_not_made_yet_is_made_as_the_keeper_enters_it(work):
    """The daemon leaves a job's own group to the keeper (a mkdir in cgroupfs waits
    behind the keeper's migrations): the keeper makes it, the job starts in it, the
    keeper goes back home; a group that cannot be made is an error naming it."""
    cgroups = Cgroups.detect(str(work), "jobs")
    if cgroups is None:
        pytest.skip("no cgroups here: jobs start under the shim")
    procs = cgroups.procs("job-7")
    assert not os.path.exists(os.path.dirname(procs))
    with connected(work) as (kc, exits):
        [answer] = kc.spawn([request(work, "g", ["/bin/sleep", "30"], groups=[procs])])
        assert cgroups.members("job-7") == [answer["pid"]]
        os.kill(answer["pid"], signal.SIGKILL)
        assert exits.wait(answer["pid"]) == 128 + signal.SIGKILL
        unmakeable = os.path.join(cgroups.base, "no", "such", "cgroup.procs")
        [refused] = kc.spawn([request(work, "u", ["/bin/true"], groups=[unmakeable])])
        assert refused == {"key": "u", "error": f"cannot enter the cgroup {unmakeable}: "
                                                "No such file or directory"}


@pytest.mark.parametrize("born", [True, False], ids=["clone3", "migration"])
def test_a_job_starts_in_its_group_its_session_and_folder_with_signals_at_default(
        work, born):
    """keeper.spawn in this process, both ways: born in its group (clone3 into it:
    spawn_into.c, built by make) and by the keeper's migration (where that library or
    clone3 is missing). Either way the program runs in its group, in a session of its
    own, in its folder, stdin /dev/null, nothing blocked and the signals the keeper
    ignores at their default; the keeper stays where it was; a step that fails is an
    error naming what was wrong."""
    cgroups = Cgroups.detect(str(work), "jobs")
    if cgroups is None:
        pytest.skip("no cgroups here")
    homes = keeper.Homes()
    births = keeper.Births(homes.unified if born else None)
    if born and not births.takes(cgroups.procs("job-1")):
        pytest.skip("spawn_into.so is not built, or no clone3 here")
    report = work / "report"
    script = ('pwd; grep "^0:" /proc/self/cgroup; ps -o sid= -p $$; readlink /proc/$$/fd/0; '
              'grep -E "^Sig(Blk|Ign)" /proc/$$/status')
    request = {"key": "job-1", "exe": "/bin/sh", "argv": ["sh", "-c", script],
               "env": {"PATH": os.defpath}, "cwd": str(work), "log": str(report),
               "groups": [cgroups.procs("job-1")]}
    before = Path("/proc/self/cgroup").read_text()
    ignored = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        answer = keeper.finish(keeper.begin(request, homes, births), request, births)
        _, status = os.waitpid(answer["pid"], 0)
    finally:
        signal.signal(signal.SIGTERM, ignored)
    assert os.waitstatus_to_exitcode(status) == 0
    cwd, group, sid, stdin, blocked, ignoring = report.read_text().split("\n")[:6]
    assert cwd == str(work)
    assert group.endswith("/jobs/job-1")
    assert int(sid) == answer["pid"]
    assert stdin == "/dev/null"
    assert blocked.split() == ["SigBlk:", "0" * 16]
    assert int(ignoring.split()[1], 16) & (1 << (signal.SIGTERM - 1)) == 0
    assert Path("/proc/self/cgroup").read_text() == before
    assert os.getcwd() != str(work)
    cases = [({"cwd": str(work / "nowhere")}, f"working directory not found: {work / 'nowhere'}"),
             ({"exe": "/nonexistent/x"}, "program not found: /nonexistent/x"),
             ({"exe": "/etc/passwd"}, "permission denied: /etc/passwd"),
             ({"groups": [os.path.join(cgroups.base, "no", "such", "cgroup.procs")]},
              "cannot enter the cgroup " + os.path.join(cgroups.base, "no", "such",
                                                        "cgroup.procs")
              + ": No such file or directory")]
    for change, error in cases:
        asked = {**request, "key": "job-2", "groups": [cgroups.procs("job-2")], **change}
        assert keeper.finish(keeper.begin(asked, homes, births), asked, births) == \
            {"key": "job-2", "error": error}
    assert Path("/proc/self/cgroup").read_text() == before


def test_a_spawn_library_of_another_version_is_not_used(work, capfd):
    """A checkout updated without make keeps the library an older spawn_into.c built:
    the keeper does not call into it (its calls may differ), says so, and migrates."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler here")
    source, library = work / "old.c", work / "old.so"
    source.write_text("int zs_abi(void) { return 1; }\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    births = keeper.Births(keeper.Homes().unified or "/sys/fs/cgroup", str(library))
    assert not births.takes("/sys/fs/cgroup/x/cgroup.procs")
    assert f"keeper: {library} is of another version (1, not {keeper.Births.ABI}" in \
        capfd.readouterr().err
    assert not keeper.Births("/sys/fs/cgroup", str(work / "missing.so")).takes(
        "/sys/fs/cgroup/x/cgroup.procs")  # (not built: nothing said)
    assert capfd.readouterr().err == ""


def cpu_cgroup(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        return next(line.rstrip().split(":", 2)[2] for line in f
                    if "cpu" in line.split(":")[1].split(","))


def test_each_job_is_moved_into_the_shared_cpu_group_and_the_keeper_stays_out(work):
    """The node's cpu group: every job of a batch is moved into it once started, the
    keeper never is (it keeps its weight, and never waits for an exec made at the
    group's small weight); the group weighs as one process JOB_NICE (10) below us (the
    kernel's weight for nice 10 is 110)."""
    share = CpuShare.detect(str(work), "jobs", 10)
    if share is None:
        pytest.skip("no v1 cpu controller here")
    with open(os.path.join(share.base, "cpu.shares")) as f:
        own = autogroup_nice()
        assert int(f.read()) == NICE_WEIGHTS[min(19, (os.nice(0) if own is None else own) + 10)]
    with connected(work) as (kc, exits):
        home = cpu_cgroup(kc.pid)
        asked = [request(work, f"c{i}", ["/bin/sleep", "30"]) for i in range(3)]
        answers = kc.spawn(asked, [share.procs])
        group = share.base.removeprefix(share.base[:share.base.index("/zephserver-")])
        for answer in answers:
            assert cpu_cgroup(answer["pid"]).endswith(group), answer
        assert not home.endswith(group)
        assert cpu_cgroup(kc.pid) == home
        for answer in answers:
            os.kill(answer["pid"], signal.SIGKILL)
            assert exits.wait(answer["pid"]) == 128 + signal.SIGKILL


def test_a_job_that_cannot_be_moved_into_the_shared_group_runs_and_the_log_says_why(work):
    with connected(work) as (kc, exits):
        missing = str(work / "no-such-group" / "cgroup.procs")
        answers = kc.spawn([request(work, f"m{i}", ["/bin/true"]) for i in range(2)],
                           [missing])
        assert [a["key"] for a in answers] == ["m0", "m1"]
        for answer in answers:
            assert exits.wait(answer["pid"]) == 0
    logged = (work / "keeper.log").read_text()
    for answer in answers:
        assert f"cannot move pid {answer['pid']} into {missing}: No such file or " \
               "directory" in logged, logged


def test_batches_asked_back_to_back_are_each_answered_in_order(work):
    """``spawn_later`` returns at once; batches asked one after the other are answered
    each to its own callback, in the order asked, chunk by chunk, from the answers'
    thread."""
    heard: dict[str, list] = {"first": [], "second": []}
    done = threading.Event()

    lost_any = []

    def on(name):
        def on_chunk(results, more, lost):
            lost_any.append(lost)
            heard[name].append((threading.current_thread().name, results, more))
            if name == "second" and not more:
                done.set()
        return on_chunk

    with connected(work) as (kc, exits):
        first = [request(work, f"a{i}", ["/bin/true"]) for i in range(keeper.CHUNK + 3)]
        second = [request(work, f"b{i}", ["/bin/true"]) for i in range(2)]
        kc.spawn_later(first, None, on("first"))
        kc.spawn_later(second, None, on("second"))
        assert done.wait(20)
        assert set(lost_any) == {None}
        for name, asked in (("first", first), ("second", second)):
            chunks = heard[name]
            assert {thread for thread, _, _ in chunks} == {"zeph-keeper-answers"}
            assert [more for _, _, more in chunks] == [True] * (len(chunks) - 1) + [False]
            answers = [a for _, results, _ in chunks for a in results]
            assert [a["key"] for a in answers] == [r["key"] for r in asked]
            for answer in answers:
                assert exits.wait(answer["pid"]) == 0


class Told:
    """A batch's ``on_chunk``: what it was told, and whether the last of it came."""

    def __init__(self) -> None:
        self.calls: list = []
        self.ended = threading.Event()

    def __call__(self, results, more, lost) -> None:
        self.calls.append((results, more, lost))
        if not more:
            self.ended.set()


@contextlib.contextmanager
def stopped(kc):
    """Within, the keeper of ``kc`` is stopped (SIGSTOP); then it is killed."""
    pid = kc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGKILL)


def test_a_batch_the_keeper_never_answers_is_told_the_keeper_is_gone(work):
    """The keeper stops (SIGSTOP) before it reads a batch, then is killed: the batch hears
    it is lost, naming why; the next launch starts a new keeper."""
    told = Told()
    with connected(work) as (kc, exits):
        with stopped(kc) as keeper_pid:
            kc.spawn_later([request(work, "never", ["/bin/true"])], None, told)
        assert told.ended.wait(10)
        [(results, more, lost)] = told.calls
        assert (results, more) == ([], False)
        assert "the keeper" in str(lost)
        assert not (work / "never.log").exists()
        kc.connect()
        assert kc.pid != keeper_pid
        [again] = kc.spawn([request(work, "again", ["/bin/true"])])
        assert exits.wait(again["pid"]) == 0


def test_a_batch_a_wedged_keeper_does_not_answer_is_given_up_after_the_reply_timeout(
        work, monkeypatch):
    """A keeper that stops answering (SIGSTOP here) holds a batch at most REPLY_TIMEOUT:
    then the batch hears it is lost, naming the wait (its jobs fail saying so, unless
    their pid files show they started)."""
    from zephserver.launch import keeper_client

    monkeypatch.setattr(keeper_client, "REPLY_TIMEOUT", 0.5)
    told = Told()
    with connected(work) as (kc, _), stopped(kc):
        kc.spawn_later([request(work, "late", ["/bin/true"])], None, told)
        assert told.ended.wait(10)
    [(_, _, lost)] = told.calls
    assert str(lost) == "the keeper did not answer in 0.5s"
