"""Slurm's command line, as zephserver uses it: an app's Slurm options, the ``sbatch``
words and batch script of a job, and what ``squeue`` / ``scontrol`` / ``sacct`` answer.

Nothing here runs a job or keeps state (``jobs.slurm_executor`` does). A job's program
reaches Slurm as a batch script of one ``exec`` line whose every word is quoted by
``shlex.quote``: no shell ever reads user text as code. The script goes to ``sbatch`` on
its standard input, so no file of it is left to forge.
"""

import dataclasses
import math
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from zephserver.launch.states import JobState
from zephserver.metrics import SLURM_COMMANDS

J = JobState
COMMAND_TIMEOUT = 30.0  # seconds a Slurm command may take before it counts as failing
SLURM_KEYS = frozenset({"partition", "account", "qos", "constraint", "options", "env",
                        "cores_as"})
CORES_AS = ("cpus-per-task", "ntasks")
# squeue's fields, in this order, "|" between them (-O "Name:|" pads nothing)
SQUEUE_FIELDS = ("JobID", "Name", "State", "Reason", "NodeList", "exit_code")

# Slurm's job states by what they mean here.
PENDING = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
                     "SPECIAL_EXIT"})
RUNNING = frozenset({"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED",
                     "SIGNALING", "STAGE_OUT", "RESIZING"})
# Ended in a way its exit code does not tell: the state and reason it ends in here.
ENDINGS: Mapping[str, tuple[JobState, str]] = {
    "CANCELLED": (J.CANCELLED, "cancelled in Slurm"),
    "TIMEOUT": (J.TIMED_OUT, "Slurm's time limit was reached"),
    "DEADLINE": (J.TIMED_OUT, "Slurm's deadline was reached"),
    "OUT_OF_MEMORY": (J.FAILED, "out of memory (Slurm)"),
    "NODE_FAIL": (J.LOST, "its Slurm node failed"),
    "BOOT_FAIL": (J.FAILED, "its Slurm node failed to boot"),
    "PREEMPTED": (J.LOST, "preempted by Slurm"),
}
# sbatch's words when it could not talk to slurmctld (as opposed to a refusal)
UNREACHABLE = ("Unable to contact slurm controller", "Connection refused",
               "Socket timed out", "Zero Bytes were transmitted", "Communication connection",
               "timed out", "Unable to establish")


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """What an app's ``slurm`` dict says (administrator constants, never client text)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    options: tuple[str, ...] = ()  # more sbatch words, each one argv word
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    cores_as: str = "cpus-per-task"


def parse_slurm_options(raw: Any, problems: list[str]) -> SlurmOptions:
    if not isinstance(raw, dict):
        problems.append("slurm must be a dict (partition, account, qos, constraint, "
                        "options, env, cores_as)")
        return SlurmOptions()
    unknown = sorted(set(raw) - SLURM_KEYS)
    if unknown:
        problems.append(f"slurm: unknown key(s) {', '.join(unknown)}")
    words = {}
    for key in ("partition", "account", "qos", "constraint"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not value
                                  or any(c.isspace() for c in value)):
            problems.append(f"slurm {key}: must be a non-empty word")
            value = None
        words[key] = value
    options = raw.get("options", [])
    if not isinstance(options, list) or not all(isinstance(o, str) and o for o in options):
        problems.append("slurm options: must be a list of sbatch argv words (never one "
                        "string for a shell)")
        options = []
    env = raw.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in env.items()):
        problems.append("slurm env: must be a dict of name -> string")
        env = {}
    cores_as = raw.get("cores_as", "cpus-per-task")
    if cores_as not in CORES_AS:
        problems.append(f"slurm cores_as: must be one of {', '.join(CORES_AS)}")
        cores_as = "cpus-per-task"
    return SlurmOptions(options=tuple(options), env=dict(env), cores_as=cores_as, **words)


def batch_script(argv: Sequence[str], comment: str) -> str:
    """The batch script of a job: its argv as one ``exec`` line, every word quoted (the
    program then is the batch step itself: Slurm's signals reach it, its exit is the
    job's)."""
    return f"#!/bin/sh\n# {comment}\nexec {shlex.join(argv)}\n"


def sbatch_args(opts: SlurmOptions, *, name: str, comment: str, cwd: str, log_path: str,
                resources: Mapping[str, Any], wall_time: float | None,
                uid: int | None = None, gid: int | None = None) -> list[str]:
    """``sbatch``'s words for one job (the script comes on standard input)."""
    args = ["--parsable", f"--job-name={name}", f"--comment={comment}", f"--chdir={cwd}",
            f"--output={log_path}", "--open-mode=append", "--export=ALL"]
    cores = int(resources.get("cores") or 1)
    args.append(f"--{opts.cores_as}={cores}")
    if resources.get("memory"):
        args.append(f"--mem={int(resources['memory'])}M")
    licenses = {k: int(v) for k, v in (resources.get("licenses") or {}).items() if v}
    if licenses:
        args.append("--licenses=" + ",".join(f"{k}:{v}" for k, v in sorted(licenses.items())))
    if wall_time:
        # Slurm counts whole minutes and looks about every 30 s: the daemon keeps the
        # exact wall time itself; this is the backstop while the daemon is down.
        args.append(f"--time={max(1, math.ceil(wall_time / 60))}")
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(opts, key)
        if value:
            args.append(f"--{key}={value}")
    if uid is not None:
        args += [f"--uid={uid}", f"--gid={gid}"]
    return [*args, *opts.options]


@dataclasses.dataclass(frozen=True)
class SlurmJob:
    """One job as Slurm reports it."""

    id: str
    name: str
    state: str  # Slurm's (PENDING, RUNNING, COMPLETED, ...)
    reason: str = ""
    nodes: str = ""
    exit_code: int | None = None  # as a Popen returncode: -N for a signal

    @property
    def pending(self) -> bool:
        return self.state in PENDING

    @property
    def running(self) -> bool:
        return self.state in RUNNING

    @property
    def ended(self) -> bool:
        return not (self.pending or self.running)

    def ending(self) -> tuple[JobState, str] | None:
        """The state and reason it ends in when its exit code does not tell."""
        found = ENDINGS.get(self.state)
        if found is None:
            return None
        state, why = found
        detail = f", {self.reason}" if self.told_reason else ""
        return state, f"{why} (Slurm job {self.id}{detail})"

    @property
    def told_reason(self) -> bool:
        return bool(self.reason) and self.reason not in ("None", "(null)")


def _returncode_of_status(status: int) -> int:
    """A wait status (squeue's exit_code) as a returncode."""
    return -(status & 0x7F) if status & 0x7F else status >> 8


def _returncode_of_pair(text: str) -> int | None:
    """scontrol's and sacct's ``ExitCode=3:0`` (exit code : signal) as a returncode."""
    code, _, sig = text.partition(":")
    try:
        return -int(sig) if sig and int(sig) else int(code)
    except ValueError:
        return None


def parse_squeue(text: str) -> dict[str, SlurmJob]:
    """``squeue -h -O`` lines of SQUEUE_FIELDS, "|"-separated, by job id."""
    out = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < len(SQUEUE_FIELDS):
            continue
        job_id, name, state, reason, nodes, status = (p.strip() for p in parts[:6])
        state = state.split()[0] if state else ""
        try:
            code = _returncode_of_status(int(status))
        except ValueError:
            code = None
        out[job_id] = SlurmJob(job_id, name, state, reason, nodes, code)
    return out


def parse_scontrol(text: str) -> SlurmJob | None:
    """``scontrol -o show job ID``: its one line of Key=Value words."""
    fields = dict(word.split("=", 1) for word in text.split() if "=" in word)
    if "JobId" not in fields:
        return None
    return SlurmJob(fields["JobId"], fields.get("JobName", ""),
                    fields.get("JobState", "").split()[0], fields.get("Reason", ""),
                    fields.get("NodeList", "").replace("(null)", ""),
                    _returncode_of_pair(fields.get("ExitCode", "")))


def parse_sacct(job_id: str, text: str) -> SlurmJob | None:
    """``sacct -n -P -X -o State,ExitCode,NodeList -j ID``."""
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) >= 3 and parts[0]:
            return SlurmJob(job_id, "", parts[0].split()[0], "", parts[2],
                            _returncode_of_pair(parts[1]))
    return None


def unreachable(message: str) -> bool:
    """Whether a Slurm command failed because slurmctld could not be reached."""
    return any(words in message for words in UNREACHABLE)


class SlurmCommands:
    """Runs Slurm's commands (from ``bin_dir``, else PATH) with ``SLURM_CONF``; counts
    each run (zephserver_slurm_commands_total: one squeue per tick whatever the jobs)."""

    def __init__(self, bin_dir: str | None = None, conf: str | None = None) -> None:
        self.bin_dir, self.conf = bin_dir, conf

    def path(self, command: str) -> str | None:
        if self.bin_dir:
            found = os.path.join(self.bin_dir, command)
            return found if os.access(found, os.X_OK) else None
        return shutil.which(command)

    def missing(self) -> list[str]:
        """The commands zephserver needs that are not found."""
        return [c for c in ("sbatch", "squeue", "scontrol", "scancel") if not self.path(c)]

    def run(self, command: str, *args: str, stdin: str | None = None,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a Slurm command; a timeout or a missing program is a failed run (255)."""
        SLURM_COMMANDS.labels(command).inc()
        program = self.path(command)
        if program is None:
            return subprocess.CompletedProcess([command], 255, "", f"{command} not found")
        full_env = dict(os.environ if env is None else env)
        if self.conf:
            full_env["SLURM_CONF"] = self.conf
        try:
            return subprocess.run([program, *args], input=stdin, capture_output=True,
                                  text=True, env=full_env, timeout=COMMAND_TIMEOUT,
                                  close_fds=True)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess([program], 255, "",
                                               f"{command} timed out after "
                                               f"{COMMAND_TIMEOUT:g}s")
        except OSError as exc:
            return subprocess.CompletedProcess([program], 255, "", f"{command}: {exc}")
