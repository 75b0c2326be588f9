"""A cgroup per launched process tree, so that a stop reaches every descendant, even one
that left the process group (``setsid``), as systemd's ``KillMode=control-group`` does.

Where the kernel offers cgroup v2 with ``cgroup.kill`` (5.14+) and the daemon may write
below its own cgroup, each job or agent process gets ``<own cgroup>/zephserver-<digest
of DATA_DIR>/<kind>/<key>``: the program's first act (a line of /bin/sh before it execs
the command) is to enter it, so nothing it starts can be outside. A stop sends SIGTERM
to every member and, after the grace, kills the whole group at once; when the tree's
leader ends, what it left behind is killed and the group removed. Elsewhere
(``Cgroups.detect`` returns None) the process group is all there is, as before.

Two more, from the v1 controllers where they are mounted: a memory limit per job
(``MemoryLimits``), and one cpu group all jobs share (``CpuShare``).
"""

import contextlib
import hashlib
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from zephserver.launch.process import descendants, job_priority, signal_group

log = logging.getLogger(__name__)

SHELL = "/bin/sh"
# $0: the cgroup's cgroup.procs; then the command. Entering fails loudly, never silently.
ENTER = ('echo 0 > "$0" || { echo "[zephserver] cannot enter the cgroup $0" >&2; exit 125; }; '
         'exec "$@"')


def _mount(fstype: str, option: str | None = None) -> str | None:
    """Where a cgroup hierarchy is mounted (v1: the one with controller ``option``)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == fstype and (
                    option is None or option in fields[sep + 3].split(",")):
                return fields[4]
    return None


def _own_cgroup(controller: str | None = None) -> str | None:
    """The daemon's cgroup in v2 (None) or in the v1 hierarchy of ``controller``."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
            if (controller is None and hierarchy == "0") or (
                    controller is not None and controller in controllers.split(",")):
                return path
    return None


def _top(mount: str | None, own: str | None, data_dir: str) -> str:
    if mount is None or own is None:
        raise OSError("no such cgroup hierarchy")
    digest = hashlib.sha1(os.path.realpath(data_dir).encode()).hexdigest()[:12]
    return os.path.join(mount, own.lstrip("/"), f"zephserver-{digest}")


def _base(mount: str | None, own: str | None, data_dir: str, kind: str) -> str:
    base = os.path.join(_top(mount, own, data_dir), kind)
    os.makedirs(base, exist_ok=True)
    return base


def tops(data_dir: str) -> list[str]:
    """Where the groups of the daemon of ``data_dir`` are (or would be), per hierarchy."""
    found = []
    for mount, own in ((_mount("cgroup2"), _own_cgroup()),
                       (_mount("cgroup", "memory"), _own_cgroup("memory")),
                       (_mount("cgroup", "cpu"), _own_cgroup("cpu"))):
        with contextlib.suppress(OSError):
            found.append(_top(mount, own, data_dir))
    return found


class _Groups:
    """One group per launched tree, under one base directory of a cgroup hierarchy."""

    def __init__(self, base: str) -> None:
        self.base = base

    @classmethod
    def _detect(cls, kind: str, find_base: Callable[[], str], on: str, off: str) -> Any:
        """An instance, or None where the kernel or the daemon's rights do not allow one;
        the log says which (``on`` with the base, ``off`` with the reason)."""
        try:
            base = find_base()
            probe = os.path.join(base, ".probe")
            with contextlib.suppress(FileExistsError):
                os.mkdir(probe)
            os.rmdir(probe)
        except OSError as exc:
            log.info("%s: %s", kind, off.format(getattr(exc, "strerror", None) or exc))
            return None
        log.info("%s: %s", kind, on.format(base))
        return cls(base)

    def path(self, key: str) -> str:
        return os.path.join(self.base, key)

    def _make(self, key: str) -> None:
        try:  # the base is there but for the first group: one mkdir, not makedirs' lookups
            os.mkdir(self.path(key))
        except FileExistsError:
            pass
        except FileNotFoundError:
            os.makedirs(self.path(key), exist_ok=True)

    def finish(self, key: str) -> None:
        with contextlib.suppress(OSError):
            os.rmdir(self.path(key))

    def sweep(self, keep: set[str]) -> None:
        """Remove every group but ``keep`` (at start: what a stopped daemon left)."""
        try:
            names = [n for n in os.listdir(self.base) if os.path.isdir(self.path(n))]
        except OSError:
            return
        for name in names:
            if name not in keep:
                self.finish(name)

    def close(self) -> None:
        """The daemon stops: leave no empty directory behind (groups of jobs that keep
        running stay, for the next start to re-adopt)."""
        for path in (self.base, os.path.dirname(self.base)):
            with contextlib.suppress(OSError):
                os.rmdir(path)


class Cgroups(_Groups):
    @classmethod
    def detect(cls, data_dir: str, kind: str) -> "Cgroups | None":
        """Per-tree cgroups under ``<own cgroup>/zephserver-<DATA_DIR's digest>/<kind>``
        ("jobs", "agent": one daemon per DATA_DIR, so no other daemon's groups are ever
        touched), or None where the kernel or the daemon's rights do not allow them."""
        def find() -> str:
            base = _base(_mount("cgroup2"), _own_cgroup(), data_dir, kind)
            if not os.path.exists(os.path.join(base, "cgroup.kill")):
                raise OSError("the kernel has no cgroup.kill (Linux 5.14+)")
            return base
        return cls._detect(kind, find, "a stop reaches every descendant (cgroups under {})",
                           "a stop reaches the process group only (no cgroups: {})")

    def prepare(self, key: str) -> str:
        """Make ``key``'s group (again, if a restart left it); its cgroup.procs."""
        self._make(key)
        return self.procs(key)

    def procs(self, key: str) -> str:
        """``key``'s cgroup.procs, whether or not its group is made yet (the keeper makes
        what it enters)."""
        return os.path.join(self.path(key), "cgroup.procs")

    def enter(self, key: str, argv: list[str]) -> list[str]:
        """``argv``, started inside ``key``'s group."""
        return [SHELL, "-c", ENTER, self.prepare(key), *argv]

    def members(self, key: str) -> list[int]:
        try:
            with open(os.path.join(self.path(key), "cgroup.procs")) as f:
                return [int(pid) for pid in f.read().split()]
        except OSError:
            return []

    def signal(self, key: str, sig: int) -> bool:
        """Send ``sig`` to every process of the group; False if it has none."""
        if sig == signal.SIGKILL:
            return self.kill(key)
        sent = False
        for pid in self.members(key):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                sent = True
        return sent

    def kill(self, key: str) -> bool:
        """SIGKILL every process of the group at once; False if it had none."""
        if not self.members(key):
            return False  # (the common end: nothing left behind)
        with contextlib.suppress(OSError), open(os.path.join(self.path(key), "cgroup.kill"),
                                                 "w") as f:
            f.write("1")
        return True

    def finish(self, key: str) -> None:
        """The tree's leader ended: kill what it left behind, remove the group (or leave
        it for ``sweep`` while the killed are still being reaped)."""
        try:  # the common end, nothing left behind: one rmdir (no read of its members)
            os.rmdir(self.path(key))
            return
        except OSError:
            pass  # (busy: someone is left; gone already: kill finds no one)
        if self.kill(key):
            log.info("%s: killed the processes its leader left behind", key)
        super().finish(key)


class MemoryLimits(_Groups):
    """A hard memory limit per job (its ``resources.memory``) where the v1 memory
    controller is mounted. (A v2 one would need the daemon's own cgroup to hold no
    process, which a daemon run as a service's only process breaks.) A job that the
    kernel's OOM killer stopped is told so: ``oom_killed`` reads the group's count."""

    @classmethod
    def detect(cls, data_dir: str, kind: str) -> "MemoryLimits | None":
        return cls._detect(
            kind, lambda: _base(_mount("cgroup", "memory"), _own_cgroup("memory"), data_dir,
                                kind),
            "resources.memory is a hard limit (memory cgroups under {})",
            "resources.memory is counted, not enforced (no memory cgroup: {})")

    def prepare(self, key: str, mib: int) -> str:
        """``key``'s group limited to ``mib`` MiB; its cgroup.procs."""
        self._make(key)
        with open(os.path.join(self.path(key), "memory.limit_in_bytes"), "w") as f:
            f.write(str(mib * 1024 * 1024))
        return os.path.join(self.path(key), "cgroup.procs")

    def oom_killed(self, key: str) -> bool:
        try:
            with open(os.path.join(self.path(key), "memory.oom_control")) as f:
                counts = dict(line.split() for line in f if line.strip())
        except OSError:
            return False
        return int(counts.get("oom_kill", 0)) > 0


class CpuShare(_Groups):
    """One group that all the jobs of a node share in the v1 cpu controller, weighted as
    one process ``nice`` steps below the daemon: however many run, together they weigh
    that much against the daemon and the node's other users (each job's session in an
    autogroup of its own weighs as much as the daemon's: a hundred busy jobs took 90 %
    of the machine from an operator's shell). Within the group, jobs share by niceness.

    The keeper moves each job into it once started (the keeper itself stays out, and
    keeps its own weight); until then, and for whatever escapes it, the job's niceness
    and its autogroup's are JOB_NICE below the daemon as everywhere."""

    @classmethod
    def detect(cls, data_dir: str, kind: str, nice: int) -> "CpuShare | None":
        """The group, weighted (None: ``nice`` is 0, or no v1 cpu controller to use)."""
        if not nice:
            return None
        share = cls._detect(
            f"{kind} cpu", lambda: _base(_mount("cgroup", "cpu"), _own_cgroup("cpu"),
                                         data_dir, kind),
            "weighs as one process JOB_NICE steps down (cpu group {})",
            "weighs as its processes' sessions do (no cpu group: {})")
        if share is not None:
            try:
                with open(os.path.join(share.base, "cpu.shares"), "w") as f:
                    f.write(str(weight(nice)))
            except OSError as exc:
                log.info("%s cpu: no weight (%s)", kind, exc.strerror)
                return None
        return share

    @property
    def procs(self) -> str:
        return os.path.join(self.base, "cgroup.procs")


def weight(nice: int) -> int:
    """The kernel's weight of a process ``nice`` steps below the daemon's own niceness
    (its autogroup's, where there are autogroups): 1024 at 0, about 1.25 times less a
    step."""
    process, group = job_priority(nice)
    level = max(-20, min(19, group if group is not None else process or 0))  # (0: not lowered)
    return max(2, round(1024 / 1.25 ** level))


def signal_tree(pid: int, sig: int, cgroups: Cgroups | None, key: str) -> bool:
    """``sig`` to the whole tree led by ``pid``: its process group, and its cgroup (else
    every descendant: under a subreaper, those that left the group too). False if there
    was nobody to signal."""
    if cgroups is not None:
        return cgroups.signal(key, sig) | signal_group(pid, sig)
    tree = descendants(pid)  # first: once the leader dies, its children move away
    sent = signal_group(pid, sig)
    for child in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, sig)
            sent = True
    return sent
