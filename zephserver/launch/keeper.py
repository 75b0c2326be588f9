"""The keeper: one small process per DATA_DIR that starts the daemon's jobs, is their
parent, and outlives the daemon, as container shims do.

It replaces the per-job ``/bin/sh`` shim where jobs get cgroups: a job then costs one
``posix_spawn`` of its own program, with nothing in between (the shim cost a shell and a
fork per job, more than the program ``/bin/true`` itself). The keeper keeps the shim's
promises: it records each job's pid (and start time) when it starts it and its exit
status when it reaps it, so a daemon that was down meanwhile still learns how its jobs
ended. Not in two files a job, as the shim does, but in its ledger (``Ledger``): one
file beside its socket that it appends to. A new file cost 30 us on a quiet disk and up
to 1 ms where many had been removed in the last 30 s (ext4 without a journal), and
their removal once the daemon had a job's end made every later new file slower still.

- A job is born in its own cgroup (the unified hierarchy's, made first), by clone3's
  CLONE_INTO_CGROUP (``Births``: ``spawn_into.c``, built by make). Where that is not
  built or the kernel refuses it, and for a v1 group (a memory limit), the keeper moves
  itself into the group, spawns, and moves back (30-100 us a move, under a lock every
  fork and exit on the machine waits for). It is single-threaded, so nothing else of it
  is ever inside a job's group. Born that way, a job execs while the keeper starts the
  next ones (a chunk's execs are awaited together); by posix_spawn, the keeper waits for
  each exec.
- Its working directory is the job's for the spawn (posix_spawn cannot change it). When
  asked to, it makes the job's directory just before the spawn, by renaming a spare one
  into place (``launch.spares``) or else making it: a burst's first jobs then start
  while the next ones' directories are still to be made.
- It talks to one daemon at a time over a UNIX socket that only its own user may use:
  frames of a 4-byte length and JSON, on two connections: on "requests" the daemon asks
  ``spawn`` (a batch) and the keeper answers ``spawned``, CHUNK jobs at a time (read by
  the thread that asked, with no hop through another; it records a chunk while the next
  one starts); on "events" it reports each ``exit`` as it reaps it.
- It exits once no daemon is connected and it has no child left.

Run as a script (``python -I -S keeper.py SOCKET``): it imports nothing of zephserver.
Long because of that: what the daemon shares with it (its frames, its ledger) is here,
and what it calls in ``spawn_into.c`` (``Births``).
"""

import collections
import contextlib
import errno
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time

VERSION = 5  # 3: it makes a job's group it is asked to enter; 4: and its "dir"; 5: ledger
HEADER = struct.Struct("!I")
MAX_FRAME = 256 << 20
FIRST_CONNECTION_WAIT = 30.0  # seconds a keeper nobody connected to yet waits
SETTLE_WITHIN = 0.5  # seconds a started job's line in the ledger may wait for a quiet moment
CHUNK = 16  # spawns answered at a time in a batch (16, not 8: the manager's time a job -5 %)
LEDGER = "keeper.ledger"  # beside the keeper's socket
# The ledger is written again with only what is still needed once this much was appended
# and most of it is of jobs forgotten.
COMPACT_AFTER = 1 << 20
# What a program starts with at its default (ignored ones stay ignored across exec: the
# keeper's own, Python's SIGPIPE and SIGXFSZ, and SIGQUIT from the shell that started it).
DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT,
                   signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD)


_encode = json.JSONEncoder(separators=(",", ":")).encode  # one encoder: no setup per call


def frame(message: dict) -> bytes:
    body = _encode(message).encode()
    return HEADER.pack(len(body)) + body


class Frames:
    """Messages out of a byte stream of frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._ready: collections.deque[dict] = collections.deque()

    def add(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer)
            if size > MAX_FRAME:
                raise ValueError(f"frame of {size} bytes")
            if len(self._buffer) < HEADER.size + size:
                break
            self._ready.append(json.loads(self._buffer[HEADER.size:HEADER.size + size]))
            del self._buffer[:HEADER.size + size]

    def take(self) -> dict | None:
        """The next whole message, or None until more data comes."""
        return self._ready.popleft() if self._ready else None

    def feed(self, data: bytes) -> list[dict]:
        """``data`` added; every whole message so far."""
        self.add(data)
        found = list(self._ready)
        self._ready.clear()
        return found


def exit_code(status: int) -> int:
    """As the shim (and a shell) reported it: a program killed by signal N is 128+N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, text.encode())
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def ledger_path(socket_path: str) -> str:
    """The ledger of the keeper listening on ``socket_path``."""
    return os.path.join(os.path.dirname(socket_path), LEDGER)


def started_record(key: str, pid: int) -> str:
    """The ledger's line for job ``key`` started as ``pid`` (with its start time, by which
    a restarted daemon knows the process: a read that waits while its exec is under way,
    so written once the daemon has its answer)."""
    return _start_line(key, pid, start_time(pid))


def _start_line(key: str, pid: int, start: int | None) -> str:
    return f"s {key} {pid} {'-' if start is None else start}\n"


def _end_line(key: str, pid: int, code: int) -> str:
    return f"e {key} {pid} {code}\n"


class Ledger:
    """What the keeper recorded of its jobs: a file of one line each time something
    happened to one, ``s KEY PID START`` once it started (START: its start time, "-"
    unknown), ``e KEY PID CODE`` once it was reaped, ``d KEY`` once the daemon had its end
    (``forget``: nothing needs it any more). ``entries``: what each job came to, by its
    key, as (pid, start time, exit code or None); a job run again has its last run's.

    ``read`` parses only what was appended since it last read (the whole file again when
    the keeper has written a new one, ``Keeper._compact``), so a daemon that looks up each
    job it re-adopts reads the file once."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.entries: dict[str, tuple[int, int | None, int | None]] = {}
        self.size = 0  # bytes read
        self._file: tuple[int, int] | None = None  # (device, inode) read
        self._rest = b""  # the start of a line not whole yet

    def read(self) -> dict[str, tuple[int, int | None, int | None]]:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            self.entries, self.size, self._file, self._rest = {}, 0, None, b""
            return self.entries
        with f:
            st = os.fstat(f.fileno())
            if (st.st_dev, st.st_ino) != self._file or st.st_size < self.size:
                self.entries, self.size, self._rest = {}, 0, b""
                self._file = (st.st_dev, st.st_ino)
            f.seek(self.size)
            data = f.read()
        self.size += len(data)
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        for line in lines:
            self.apply(line)
        return self.entries

    @property
    def torn(self) -> bool:
        """Whether its last line is not whole (a keeper killed while it wrote)."""
        return bool(self._rest)

    def apply(self, line: bytes) -> None:
        """One line into ``entries`` (a torn one is skipped)."""
        words = line.split()
        try:
            kind, key = words[0], words[1].decode()
            if kind == b"s":
                self.entries[key] = (int(words[2]),
                                     None if words[3] == b"-" else int(words[3]), None)
            elif kind == b"e":
                entry = self.entries.get(key)
                if entry is not None and entry[0] == int(words[2]):
                    self.entries[key] = (entry[0], entry[1], int(words[3]))
            elif kind == b"d":
                self.entries.pop(key, None)
        except (IndexError, ValueError, UnicodeDecodeError):
            pass


def _enter(procs: str, pid: int = 0) -> None:
    """Move process ``pid`` (0: this one) into the cgroup whose ``cgroup.procs`` is
    ``procs``."""
    fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(pid).encode())
    finally:
        os.close(fd)


def _make_group(procs: str) -> str:
    """The directory of the cgroup whose ``cgroup.procs`` is ``procs``, made if it is not
    there (the daemon leaves a job's own group to the keeper: a mkdir in cgroupfs waits
    for the cgroup mutex, which a migration holds through an RCU grace period; made here,
    in turn with the keeper's own migrations, it never waits on one of those)."""
    group = os.path.dirname(procs)
    with contextlib.suppress(FileExistsError):
        os.mkdir(group)
    return group


def _make_and_enter(procs: str) -> None:
    """Enter the cgroup whose ``cgroup.procs`` is ``procs``, made first if need be."""
    _make_group(procs)
    _enter(procs)


def _move(pid: int, procs: str) -> None:
    """Move job ``pid`` into the cgroup whose ``cgroup.procs`` is ``procs``. After its
    start, not by the keeper entering it first: under vfork the keeper waits for the
    child's exec, which would run at the group's small weight. (It is lowered by its
    niceness meanwhile.) One that has ended already is no loss; anything else is
    logged, and the job runs on outside it."""
    try:
        _enter(procs, pid)
    except ProcessLookupError:
        pass
    except OSError as exc:
        print(f"keeper: cannot move pid {pid} into {procs}: {exc.strerror}", file=sys.stderr,
              flush=True)


class Homes:
    """The keeper's own cgroup in each hierarchy: where it goes back to after a spawn."""

    def __init__(self) -> None:
        own = {}
        with open("/proc/self/cgroup") as f:
            for line in f:
                hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
                own["" if hierarchy == "0" else controllers] = path
        self._mounts = []  # (mount point, the keeper's cgroup.procs there)
        self.unified: str | None = None  # where the unified (v2) hierarchy is mounted
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                sep = fields.index("-")
                fstype, options = fields[sep + 1], fields[sep + 3].split(",")
                if fstype == "cgroup2":
                    key = ""
                    self.unified = fields[4]
                elif fstype == "cgroup":
                    key = next((k for k in own if k and set(k.split(",")) & set(options)),
                               None)
                else:
                    continue
                if key in own:
                    self._mounts.append((fields[4], os.path.join(
                        fields[4], own[key].lstrip("/"), "cgroup.procs")))
        self._mounts.sort(key=lambda m: -len(m[0]))

    def of(self, procs: str) -> str:
        for mount, home in self._mounts:
            if procs.startswith(mount + "/"):
                return home
        raise OSError(f"{procs} is in no cgroup hierarchy of the keeper")


def _make_dir(path: str, spare: str | None) -> str:
    """The job's directory made, or ``spare`` (one made ahead: launch.spares) renamed into
    its place; "" or the error."""
    if spare:
        try:
            os.rename(spare, path)
            return ""
        except OSError:  # (gone, or the job's directory is there already)
            pass
    try:
        os.mkdir(path)
    except FileExistsError:
        pass
    except OSError as exc:
        return f"cannot create the job directory {path}: {exc.strerror}"
    return ""


class Births:
    """Jobs born in their cgroup of the unified hierarchy (``spawn_into.c``: clone3 with
    CLONE_INTO_CGROUP), started without waiting for their exec: ``start`` returns once the
    child exists, ``started`` says how its exec went (a chunk's jobs are started, then
    their execs awaited: the keeper prepares the next job while the last one execs on
    another core). Where the library is not built, or once the kernel has refused clone3
    itself (too old, or a seccomp filter), ``takes`` nothing: the keeper moves itself
    into the group around a posix_spawn."""

    CWD = 5  # the step spawn_into.c names when the working directory is refused (AT_CWD)
    ABI = 2  # spawn_into.c's zs_abi(): the calls below, as they are

    def __init__(self, unified: str | None, library: str | None = None) -> None:
        self.unified = unified
        self._start = None
        if unified is None:
            return
        import ctypes  # (only here: a keeper without the library loads nothing more)
        path = library or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                       "spawn_into.so")
        try:
            lib = ctypes.CDLL(path)
            abi = lib.zs_abi()
        except (OSError, AttributeError):  # (not built; or older than zs_abi)
            abi = None
        if abi != self.ABI:
            if os.path.exists(path):
                print(f"keeper: {path} is of another version ({abi}, not {self.ABI}; "
                      "make builds it again): jobs enter their group by migration",
                      file=sys.stderr, flush=True)
            return
        strings = ctypes.POINTER(ctypes.c_char_p)
        start, started = lib.zs_start, lib.zs_started
        start.restype = ctypes.c_long
        start.argtypes = [ctypes.c_int, ctypes.c_char_p, strings, strings, ctypes.c_char_p,
                          ctypes.c_int, ctypes.c_uint64, ctypes.POINTER(ctypes.c_int),
                          ctypes.POINTER(ctypes.c_void_p)]
        started.restype = ctypes.c_int
        started.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p,
                            ctypes.POINTER(ctypes.c_int)]
        self._ctypes, self._start, self._started = ctypes, start, started
        self._defaults = sum(1 << (sig - 1) for sig in DEFAULT_SIGNALS)

    def takes(self, procs: str) -> bool:
        """Whether a job can be born in the group whose ``cgroup.procs`` is ``procs``."""
        return self._start is not None and procs.startswith(self.unified + "/")

    def start(self, group: int, request: dict, log_fd: int) -> tuple | None:
        """Start ``request``'s program in the group open as ``group``: what ``started``
        takes (its pid first); None if the kernel refused clone3 itself (then ``takes``
        nothing more). Any other refusal raises OSError (the cgroup's)."""
        assert self._start is not None
        c = self._ctypes
        argv, env = request["argv"], request["env"]
        args = (c.c_char_p * (len(argv) + 1))(*map(os.fsencode, argv), None)
        envp = (c.c_char_p * (len(env) + 1))(
            *(os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()), None)
        program, cwd = os.fsencode(request["exe"]), os.fsencode(request["cwd"])
        report, handle = c.c_int(-1), c.c_void_p()
        pid = self._start(group, program, args, envp, cwd, log_fd, self._defaults,
                          c.byref(report), c.byref(handle))
        if pid >= 0:  # (what the child reads stays referenced until its exec is done)
            return pid, report.value, handle, (args, envp, program, cwd)
        if -pid in (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG):
            print(f"keeper: clone3 into a cgroup refused ({os.strerror(-pid)}): jobs "
                  "enter their group by migration", file=sys.stderr, flush=True)
            self._start = None
            return None
        raise OSError(-pid, os.strerror(-pid))

    def started(self, birth: tuple) -> OSError | None:
        """None once the program of ``birth`` (``start``'s) has been exec'd; else why not
        (the step that failed as its ``filename``)."""
        pid, report, handle, _ = birth
        error = self._ctypes.c_int(0)
        step = self._started(pid, report, handle, self._ctypes.byref(error))
        return OSError(error.value, os.strerror(error.value), step) if step else None


def _open_group(procs: str) -> int:
    """The directory of the cgroup whose ``cgroup.procs`` is ``procs``, made if need be
    and open (for clone3)."""
    return os.open(_make_group(procs), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def begin(request: dict, homes: Homes, births: Births) -> dict:
    """Start one job: its pid (with its "birth" while its exec may be under way: then
    ``finish`` says how that went), or the error."""
    key, program = request["key"], request["exe"]
    if request.get("dir"):  # the job's directory, here just before its spawn
        error = _make_dir(request["dir"], request.get("spare"))
        if error:
            return {"key": key, "error": error}
    try:
        log_fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                         0o640)
    except OSError as exc:
        return {"key": key, "error": f"cannot open log {request['log']}: {exc.strerror}"}
    entered: list[str] = []
    born_in: tuple[str, int] | None = None  # (cgroup.procs, its directory open)
    pid, moved, birth = None, False, None  # (moved: into the job's working directory)
    try:
        for procs in request["groups"]:
            try:
                if born_in is None and births.takes(procs):
                    born_in = (procs, _open_group(procs))
                    continue
                _make_and_enter(procs)
            except OSError as exc:
                return {"key": key, "error": f"cannot enter the cgroup {procs}: "
                                             f"{exc.strerror}"}
            entered.append(procs)
        if born_in is not None:
            try:
                birth = births.start(born_in[1], request, log_fd)
            except OSError as exc:
                return {"key": key, "error": f"cannot enter the cgroup {born_in[0]}: "
                                             f"{exc.strerror}"}
            if birth is None:  # (clone3 refused: by migration, from now on)
                _enter(born_in[0])
                entered.append(born_in[0])
            else:
                pid = birth[0]
        if pid is None:
            try:
                os.chdir(request["cwd"])
                moved = True
            except OSError:
                return {"key": key,
                        "error": f"working directory not found: {request['cwd']}"}
            pid = os.posix_spawn(program, request["argv"], request["env"], setsid=True,
                                 setsigdef=DEFAULT_SIGNALS, file_actions=[
                                     (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                                     (os.POSIX_SPAWN_DUP2, log_fd, 1),
                                     (os.POSIX_SPAWN_DUP2, log_fd, 2)])
    except OSError as exc:
        return {"key": key, "error": _refusal(exc, request)}
    finally:
        os.close(log_fd)
        if born_in is not None:
            os.close(born_in[1])
        if moved:
            with contextlib.suppress(OSError):
                os.chdir("/")
        for procs in reversed(entered):
            _enter(homes.of(procs))  # (failing here, the keeper must not go on)
    if birth is not None:
        return {"key": key, "pid": pid, "birth": birth}
    _prioritize(request, pid)
    return {"key": key, "pid": pid}


def finish(result: dict, request: dict, births: Births) -> dict:
    """``begin``'s result once the job's exec is done: its pid, or the error its exec
    met."""
    birth = result.pop("birth", None)
    if birth is None:
        return result
    error = births.started(birth)
    if error is not None:
        return {"key": result["key"], "error": _refusal(error, request)}
    _prioritize(request, result["pid"])
    return result


def _refusal(exc: OSError, request: dict) -> str:
    """What a job that could not start is told."""
    program = request["exe"]
    if exc.filename == Births.CWD:
        return f"working directory not found: {request['cwd']}"
    if isinstance(exc, FileNotFoundError):
        return f"program not found: {program}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {program}"
    return f"cannot start {program}: {exc.strerror}"


def _prioritize(request: dict, pid: int) -> None:
    """Its niceness if it did not inherit it, and its autogroup's (its session has one of
    its own, at 0: once it has exec'd, its setsid is done): at once, so a busy job never
    runs level with the daemon."""
    nice = request.get("nice")
    if nice is not None and nice != os.getpriority(os.PRIO_PROCESS, 0):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, pid, nice)
    if request.get("autogroup") is not None:
        with contextlib.suppress(OSError):
            _write(f"/proc/{pid}/autogroup", str(request["autogroup"]))


def take_nice(nice: int | None) -> None:
    """Run at the niceness jobs are to have, so they inherit it (a call less a job).
    Where each session has an autogroup, the keeper is alone in its own: its niceness
    weighs against nothing. Elsewhere it keeps its own and sets each job's."""
    if nice is not None and os.path.exists("/proc/self/autogroup"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, nice)


class Keeper:
    def __init__(self, path: str) -> None:
        self.path = path
        self.homes = Homes()
        self.births = Births(self.homes.unified)
        self.children: dict[int, str] = {}  # pid -> its job's key
        self.unsettled: dict[int, str] = {}  # pid -> its key: not in the ledger yet
        self.unsettled_since = 0.0  # monotonic: when the oldest of them was answered
        self.selector = selectors.DefaultSelector()
        self.conns: dict[str, socket.socket] = {}  # role ("requests", "events") -> it
        self.frames: dict[socket.socket, Frames] = {}
        self.ever_connected = False
        self.niced = False
        self.born = time.monotonic()
        self.listener: socket.socket | None = None
        self.ledger = Ledger(ledger_path(path))
        self._ledger_fd = -1
        self._ledger_failed = False  # its last write failed (then a line may be torn)

    def open_ledger(self) -> None:
        """Read what earlier keepers recorded (kept when it is written again), and open it
        to append."""
        self.ledger.read()
        self._ledger_fd = os.open(self.ledger.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND
                                  | os.O_CLOEXEC, 0o600)
        self._ledger_failed = self.ledger.torn

    def _note(self, lines: list[str]) -> None:
        """``lines`` appended to the ledger, in one write."""
        if not lines:
            return
        data = ("\n" if self._ledger_failed else "") + "".join(lines)
        try:
            _write_all(self._ledger_fd, data.encode())
            self._ledger_failed = False
        except OSError as exc:
            if not self._ledger_failed:
                print(f"keeper: cannot write its ledger {self.ledger.path}: {exc.strerror}",
                      file=sys.stderr, flush=True)
            self._ledger_failed = True
        self.ledger.size += len(data)
        for line in lines:
            self.ledger.apply(line.encode())

    def _forget(self, keys: list[str]) -> None:
        """The daemon has these jobs' ends; the ledger is written again, with only what is
        still needed, once it is mostly what is not."""
        self._note([f"d {key}\n" for key in keys if key in self.ledger.entries])
        if self.ledger.size >= COMPACT_AFTER and \
                len(self.ledger.entries) * 200 < self.ledger.size:
            self._compact()

    def _compact(self) -> None:
        """The ledger written again as its entries (a new file renamed over it: a daemon
        reading it meanwhile reads the one or the other, each whole)."""
        lines = []
        for key, (pid, start, code) in self.ledger.entries.items():
            lines.append(_start_line(key, pid, start))
            if code is not None:
                lines.append(_end_line(key, pid, code))
        data = "".join(lines).encode()
        new = self.ledger.path + ".new"
        try:
            fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
            os.rename(new, self.ledger.path)
        except OSError as exc:  # (the old one goes on)
            print(f"keeper: cannot write its ledger again: {exc.strerror}", file=sys.stderr,
                  flush=True)
            return
        os.close(self._ledger_fd)
        self._ledger_fd = os.open(self.ledger.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.ledger.size, self._ledger_failed = len(data), False

    def listen(self) -> None:
        old = os.umask(0o077)
        try:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            listener.bind(self.path)
        finally:
            os.umask(old)
        listener.listen(4)
        self.listener = listener
        self.selector.register(listener, selectors.EVENT_READ, "listen")
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_w)
        self.selector.register(wake_r, selectors.EVENT_READ, "child")
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # it goes when its children have

    def run(self) -> None:
        while not self._done():
            # Starts go in the ledger when nothing waits (a batch asked meanwhile starts
            # first), and at the latest SETTLE_WITHIN after their answer.
            ready = self.selector.select(0 if self.unsettled else 1.0)
            if self.unsettled and (not ready or time.monotonic() - self.unsettled_since
                                   >= SETTLE_WITHIN):
                self._settle(list(self.unsettled))
            for key, _ in ready:
                if key.data == "listen":
                    self._accept()
                elif key.data == "child":
                    with contextlib.suppress(BlockingIOError):
                        os.read(key.fd, 4096)
                    self._reap()
                else:
                    self._read(key.fileobj)
            self._reap()  # (a SIGCHLD between the reap and the select is seen here)

    def _done(self) -> bool:
        if self.conns or self.frames or self.children:
            return False
        return self.ever_connected or time.monotonic() - self.born > FIRST_CONNECTION_WAIT

    def _accept(self) -> None:
        assert self.listener is not None
        conn, _ = self.listener.accept()
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid not in (os.getuid(), 0):
            conn.close()
            return
        conn.setblocking(True)
        self.frames[conn], self.ever_connected = Frames(), True
        self.selector.register(conn, selectors.EVENT_READ, "conn")

    def _drop(self, conn: socket.socket) -> None:
        self.selector.unregister(conn)
        self.frames.pop(conn, None)
        for role in [r for r, c in self.conns.items() if c is conn]:
            del self.conns[role]
        conn.close()

    def _send(self, role: str, *messages: dict) -> None:
        conn = self.conns.get(role)
        if conn is None or not messages:
            return
        try:
            conn.sendall(b"".join(map(frame, messages)))
        except OSError:
            self._drop(conn)

    def _read(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(1 << 16)  # (under the mmap threshold: 1 MiB was mapped per read)
            messages = self.frames[conn].feed(data) if data else None
        except (OSError, ValueError):
            messages = None
        if messages is None:
            self._drop(conn)
            return
        for message in messages:
            self._handle(conn, message)

    def _handle(self, conn: socket.socket, message: dict) -> None:
        op = message.get("op")
        if op == "hello":  # a daemon's connection: a new one replaces the old one's
            role = message.get("role", "requests")
            old = self.conns.get(role)
            if old is not None and old is not conn:
                self._drop(old)
            self.conns[role] = conn
            self._send(role, {"op": "hello", "version": VERSION, "pid": os.getpid(),
                              "children": sorted(self.children)})
        elif op == "spawn":
            jobs = message["jobs"]
            if not self.niced and jobs:
                take_nice(jobs[0].get("nice"))
                self.niced = True
            self._forget(message.get("forget", []))  # (first: a job run again among jobs)
            self._spawn_batch(jobs, message.get("groups", []))
        elif op == "forget":
            self._forget(message["keys"])
        elif op == "warm":  # (KeeperClient.warm)
            with contextlib.suppress(OSError):
                _enter(self.homes.of(message["procs"]))
        elif op == "retire":  # a daemon of another version: it starts its own keeper
            self._retire()

    def _spawn_batch(self, jobs: list[dict], shared: list[str]) -> None:
        """Start ``jobs``, answering CHUNK at a time; each is moved into the cgroups
        ``shared`` (the node's cpu group) once it has started. Their starts go in the ledger
        later, when the keeper has nothing else to do (``run``): their start times read
        between chunks (each waits for its exec) held each next chunk back, as the pid
        files they went in did (27 ms of a 100-job batch). A job that ends first still has
        its start written before its end (``_reap``); only a keeper killed in between
        leaves them unwritten, as it did for the last chunk before."""
        if not jobs:
            self._send("requests", {"op": "spawned", "more": False, "results": []})
        for at in range(0, len(jobs), CHUNK):
            # All started, then each one's exec awaited: a job's exec runs on while the
            # keeper prepares and starts the next ones.
            begun = [(request, begin(request, self.homes, self.births))
                     for request in jobs[at:at + CHUNK]]
            chunk = [(request, finish(result, request, self.births))
                     for request, result in begun]
            started = [(request, result["pid"]) for request, result in chunk
                       if "pid" in result]
            for request, pid in started:
                self.children[pid] = request["key"]
                for procs in shared:
                    _move(pid, procs)
            # the daemon records these while the next ones start
            self._send("requests", {"op": "spawned", "more": at + CHUNK < len(jobs),
                                    "results": [r for _, r in chunk]})
            if started and not self.unsettled:
                self.unsettled_since = time.monotonic()
            self.unsettled.update((pid, request["key"]) for request, pid in started)
            # The ends of short jobs go out while a long batch starts.
            self._reap()

    def _settle(self, pids: list[int]) -> None:
        self._note(self._started(pids))

    def _started(self, pids: list[int]) -> list[str]:
        """The ledger's lines for those of ``pids`` not in it yet."""
        return [started_record(key, pid) for pid in pids
                if (key := self.unsettled.pop(pid, None)) is not None]

    def _retire(self) -> None:
        if self.listener is not None:
            self.selector.unregister(self.listener)
            self.listener.close()
            self.listener = None
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        for conn in list(self.frames):
            self._drop(conn)

    def _reap(self) -> None:
        """Report each child that has ended. One not in the ledger yet is written there
        first, its start time read while it is a zombie still: an exit never comes without
        its start. The ledger's lines in one write, then the reports."""
        lines: list[str] = []
        reports = []
        while True:
            try:
                ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                break
            if ended is None or not ended.si_pid:
                break
            lines += self._started([ended.si_pid])
            pid, status = os.waitpid(ended.si_pid, 0)
            code = exit_code(status)
            key = self.children.pop(pid, None)
            if key is not None:
                lines.append(_end_line(key, pid, code))
            reports.append({"op": "exit", "pid": pid, "code": code})
        self._note(lines)
        self._send("events", *reports)


def main(argv: list[str]) -> int:
    keeper = Keeper(argv[1])
    keeper.open_ledger()
    keeper.listen()
    try:
        keeper.run()
    finally:
        if keeper.listener is not None:
            with contextlib.suppress(OSError):
                os.unlink(keeper.path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
