"""Slurm's command line as zephserver speaks it: the batch script (run by a real
/bin/sh), sbatch's words, what squeue/scontrol/sacct answer, node lists, app options,
and the executor's submission when Slurm answers badly (a stand-in sbatch program)."""

import os
import stat
import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest

from zephserver.jobs.slurm_executor import SlurmExecutor
from zephserver.launch.apps import AppConfigError, parse_apps
from zephserver.launch.interactive import ReadyMatch, first_host
from zephserver.launch.slurm import (
    SlurmCommands,
    SlurmOptions,
    batch_script,
    parse_sacct,
    parse_scontrol,
    parse_squeue,
    sbatch_args,
    unreachable,
)
from zephserver.launch.states import JobState

pytestmark = pytest.mark.timeout(30)


def test_the_batch_script_gives_every_word_literally(tmp_path):
    words = ["a b", '"c"', "'d'", "$(touch pwned)", "`id`", "; rm -rf /", "\n$HOME", ""]
    argv = [sys.executable, "-c", "import sys; print(repr(sys.argv[1:]))", *words]
    script = batch_script(argv, "zephserver job 1 (demo)")
    done = subprocess.run(["/bin/sh"], input=script, capture_output=True, text=True,
                          cwd=tmp_path, check=True)
    assert done.stdout.strip() == repr(words)
    assert not (tmp_path / "pwned").exists()


def test_sbatch_words_map_the_resources_and_the_apps_constants():
    opts = SlurmOptions(partition="compute", account="cae", qos="normal", constraint="avx2",
                        options=("--exclusive",), cores_as="ntasks")
    args = sbatch_args(opts, name="zeph-ab-7", comment="zephserver job 7 of alice",
                       cwd="/shared/jobs/7", log_path="/shared/jobs/7/output.log",
                       resources={"cores": 8, "memory": 4000, "licenses": {"dyna": 2}},
                       wall_time=61, uid=1000, gid=100)
    for word in ("--parsable", "--job-name=zeph-ab-7", "--chdir=/shared/jobs/7",
                 "--output=/shared/jobs/7/output.log", "--ntasks=8", "--mem=4000M",
                 "--licenses=dyna:2", "--time=2", "--partition=compute", "--account=cae",
                 "--qos=normal", "--constraint=avx2", "--uid=1000", "--gid=100"):
        assert word in args, word
    assert args[-1] == "--exclusive"
    plain = sbatch_args(SlurmOptions(), name="n", comment="c", cwd="/d", log_path="/d/o",
                        resources={}, wall_time=None)
    assert "--cpus-per-task=1" in plain
    assert not [a for a in plain if a.startswith(("--mem", "--licenses", "--time", "--uid"))]


def test_squeue_scontrol_and_sacct_answers():
    seen = parse_squeue("1|zeph-x-1|FAILED|NonZeroExitCode|vm|768|\n"
                        "2|zeph-x-2|TIMEOUT|TimeLimit|vm|15|\n"
                        "3|zeph-x-3|PENDING|Licenses||0|\n"
                        "4|zeph-x-4|RUNNING|None|c[01-02]|0|\n")
    assert seen["1"].exit_code == 3
    assert seen["1"].ended
    assert seen["2"].exit_code == -15
    assert seen["2"].ending() == (JobState.TIMED_OUT, "Slurm's time limit was reached "
                                                      "(Slurm job 2, TimeLimit)")
    assert seen["3"].pending
    assert seen["3"].reason == "Licenses"
    assert seen["4"].running
    assert seen["4"].ending() is None
    shown = parse_scontrol("JobId=9 JobName=zeph-x-9 JobState=OUT_OF_MEMORY Reason=OutOfMemory "
                           "ExitCode=0:9 NodeList=vm")
    assert shown is not None
    assert shown.exit_code == -9
    assert shown.ending() == (JobState.FAILED, "out of memory (Slurm) (Slurm job 9, "
                                               "OutOfMemory)")
    assert parse_scontrol("slurm_load_jobs error: Invalid job id specified") is None
    accounted = parse_sacct("12", "NODE_FAIL|0:0|c07\n")
    assert accounted is not None
    assert accounted.ending()[0] == JobState.LOST
    assert accounted.nodes == "c07"


def test_what_counts_as_slurmctld_unreachable():
    assert unreachable("Batch job submission failed: Unable to contact slurm controller "
                       "(connect failure)")
    assert not unreachable("Batch job submission failed: Invalid license specification")


@pytest.mark.parametrize(("nodes", "host"), [("vm", "vm"), ("a,b", "a"),
                                             ("c[01-04,07]", "c01"), ("gpu[3,5]", "gpu3"),
                                             ("x[1-2],y7", "x1")])
def test_the_first_host_of_a_node_list(nodes, host):
    assert first_host(nodes) == host


def test_a_ready_line_regexp_tells_the_port_across_chunks():
    found = []
    match = ReadyMatch(r"serving on (?P<host>\S+) port (?P<port>\d+)", found.append)
    match.feed(0, b"starting\nserving on c07 po")
    assert found == []
    match.feed(0, b"rt 40123\nmore\n")
    assert found == [{"host": "c07", "port": "40123"}]


def test_app_definitions_for_slurm_are_checked():
    ok = parse_apps({"dyna": {"argv": ["lsdyna"], "executor": "slurm",
                              "slurm": {"partition": "compute", "options": ["--exclusive"]}}})
    assert ok["dyna"].executor == "slurm"
    assert ok["dyna"].slurm.partition == "compute"
    with pytest.raises(AppConfigError) as bad:
        parse_apps({"a": {"argv": ["x"], "executor": "pbs"},
                    "b": {"argv": ["x"], "slurm": {"partition": "p"}},
                    "c": {"argv": ["x"], "executor": "slurm",
                          "slurm": {"options": "--exclusive --mem=1", "cores_as": "nodes"}},
                    "d": {"argv": ["x"], "executor": "slurm", "kind": "session",
                          "ready_line": "ready", "port_range": [9000, 9010]}})
    text = str(bad.value)
    assert "app 'a': executor must be one of local, slurm" in text
    assert "app 'b': slurm options need executor 'slurm'" in text
    assert "app 'c': slurm options: must be a list of sbatch argv words" in text
    assert "app 'c': slurm cores_as: must be one of cpus-per-task, ntasks" in text
    assert "app 'd': a Slurm session needs a ready_line regular expression with a " \
           "(?P<port>...) group" in text
    assert "app 'd': port_range is not for a Slurm session" in text


def fake_sbatch(directory, stderr: str) -> str:
    """A stand-in ``sbatch`` (and ``squeue``) that fails as Slurm would."""
    for name, body in (("sbatch", f"echo 'sbatch: error: {stderr}' >&2; exit 1"),
                       ("squeue", "exit 0")):
        path = directory / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(directory)


@pytest.mark.parametrize(("stderr", "reason"), [
    ("Batch job submission failed: Unable to contact slurm controller (connect failure)",
     "could not submit to Slurm: Batch job submission failed: Unable to contact slurm "
     "controller (connect failure)"),
    ("Batch job submission failed: Invalid account or account/partition combination",
     "sbatch refused it: Batch job submission failed: Invalid account or "
     "account/partition combination")])
def test_with_no_retry_a_submission_slurm_cannot_take_fails_at_once(tmp_path, stderr, reason):
    """SLURM_SUBMIT_RETRY = 0: slurmctld unreachable fails the job at once, as a refusal
    always does."""
    reports, done = [], threading.Event()

    def report(job_id, state, why, fields):
        reports.append((job_id, state, why))
        done.set()

    executor = SlurmExecutor(SlurmCommands(fake_sbatch(tmp_path, stderr)), str(tmp_path),
                             report, lambda job: SlurmOptions(), tick=0.1, submit_retry=0,
                             recheck=lambda paths: None)
    try:
        job = SimpleNamespace(pk=5, app="a", argv=["true"], cwd=str(tmp_path / "5"),
                              job_dir=str(tmp_path / "5"),
                              log_path=str(tmp_path / "5" / "output.log"),
                              owner=SimpleNamespace(username="alice"), resources={},
                              wall_time=None, account=None)
        handed = executor.launch([job], [dict(os.environ)])
        assert handed[0].reason == "submitting to Slurm"
        assert done.wait(10)
    finally:
        executor.close()
    assert reports == [(5, JobState.FAILED, reason)]
