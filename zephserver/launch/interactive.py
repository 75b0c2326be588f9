"""Interactive sessions (kind ``session``): what an app definition adds for them, and
the small pieces the job manager uses to run them.

A session is a job that serves a port: it gets a port from its app's ranges, a secret,
a URL for clients, and is "ready" (RUNNING) only when its ready line appears in its
output or, without one, when its port accepts a connection.
"""

import contextlib
import os
import re
import socket
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from zephserver.launch.ports import PortRange

# Variables a session's templates may use besides the app's own (wslink's names).
SESSION_GENERATED = ("id", "host", "port", "secret", "application")
SESSION_KEYS = frozenset({"ready_line", "timeout", "ports", "port_range", "host",
                          "session_url", "secret", "idle_timeout", "max_age", "queue",
                          "module", "protocol", "hash_algorithm", "fields", "session_data",
                          "log_dir"})
HASH_ALGORITHMS = ("scrypt", "apache_md5_digest")
DEFAULT_TIMEOUT = 30.0
DEFAULT_URL = "ws://$host:$port/ws"


@dataclass(frozen=True)
class SessionOptions:
    ports: tuple[PortRange, ...]
    ready_line: str | None
    timeout: float
    session_url: str
    uses_secret: bool
    idle_timeout: float | None
    max_age: float | None
    queue: bool
    module: str | None
    protocol: str
    hash_algorithm: str
    fields: tuple[str, ...] | None  # what the REST answer shows (wslink "fields")
    session_data: Mapping[str, str]
    log_dir: str | None
    # Run by another scheduler (Slurm): the port is chosen where it runs and read from
    # its ready line, a regular expression with a (?P<port>...) group.
    remote: bool = False


def _seconds(spec: dict, key: str, default: float | None, problems: list[str]) -> float | None:
    value = spec.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        problems.append(f"{key} must be a number of seconds > 0")
        return default
    return float(value)


def _parse_ports(spec: dict, problems: list[str]) -> tuple[PortRange, ...]:
    raw = spec.get("ports")
    if raw is None:
        raw = [{"host": spec.get("host", "localhost"), "port_range": spec.get("port_range")}]
    elif "port_range" in spec or "host" in spec:
        problems.append("give either ports or port_range/host, not both")
    out = []
    for item in raw if isinstance(raw, list) else [None]:
        rng = item.get("port_range") if isinstance(item, dict) else None
        host = item.get("host", "localhost") if isinstance(item, dict) else None
        if (not isinstance(host, str) or not host or not isinstance(rng, list | tuple)
                or len(rng) != 2 or not all(isinstance(p, int) and not isinstance(p, bool)
                                            for p in rng)
                or not 1024 <= rng[0] <= rng[1] <= 65535):
            problems.append("a session needs port_range [low, high] (1024-65535) or ports: "
                            "[{host, port_range}, ...]")
            return ()
        out.append(PortRange(host, rng[0], rng[1]))
    return tuple(out)


def parse_session_options(spec: dict, templates: list[str], known: set[str],
                          problems: list[str], remote: bool = False) -> SessionOptions:
    """Check the session keys of an app definition (``templates``: its argv, cwd, env;
    ``remote``: run by Slurm)."""
    ready = spec.get("ready_line")
    if ready is not None and (not isinstance(ready, str) or not ready or "\n" in ready):
        problems.append("ready_line must be a non-empty string (one line)")
        ready = None
    if remote:
        problems += _remote_problems(spec, ready)
    url = spec.get("session_url", DEFAULT_URL)
    data = spec.get("session_data", {})
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        problems.append("session_data must be a dict of name -> string template")
        data = {}
    if not isinstance(url, str):
        problems.append("session_url must be a string template")
        url = DEFAULT_URL
    for where, template in [("session_url", url)] + [(f"session_data {k}", v)
                                                     for k, v in data.items()]:
        t = string.Template(template)
        if not t.is_valid():
            problems.append(f"{where}: bad template {template!r}")
        elif set(t.get_identifiers()) - known:
            problems.append(f"{where}: ${sorted(set(t.get_identifiers()) - known)[0]} is "
                            "not a known variable")
    uses = bool(spec.get("secret", False)) or any(
        "secret" in string.Template(t).get_identifiers()
        for t in [*templates, url, *data.values()] if string.Template(t).is_valid())
    fields = spec.get("fields")
    if fields is not None and (not isinstance(fields, list)
                               or not all(isinstance(f, str) for f in fields)):
        problems.append("fields must be a list of key names")
        fields = None
    algo = spec.get("hash_algorithm", "scrypt")
    if algo not in HASH_ALGORITHMS:
        problems.append(f"hash_algorithm must be one of {', '.join(HASH_ALGORITHMS)}")
        algo = "scrypt"
    protocol = spec.get("protocol", "ws")
    if not isinstance(protocol, str) or not re.fullmatch(r"[a-z][a-z0-9+.-]*", protocol):
        problems.append("protocol must be a URL scheme such as ws, wss, http or https")
        protocol = "ws"
    module = spec.get("module")
    if module is not None:
        from zephserver.launch.broker import check_app_module

        problems += check_app_module(module)
    log_dir = spec.get("log_dir")
    if log_dir is not None and (not isinstance(log_dir, str) or not os.path.isabs(log_dir)):
        problems.append("log_dir must be an absolute directory")
        log_dir = None
    return SessionOptions(
        ports=() if remote else _parse_ports(spec, problems), ready_line=ready,
        timeout=_seconds(spec, "timeout", DEFAULT_TIMEOUT, problems) or DEFAULT_TIMEOUT,
        session_url=url, uses_secret=uses,
        idle_timeout=_seconds(spec, "idle_timeout", None, problems),
        max_age=_seconds(spec, "max_age", None, problems),
        queue=bool(spec.get("queue", False)), module=module, protocol=protocol,
        hash_algorithm=algo, fields=None if fields is None else tuple(fields),
        session_data=dict(data), log_dir=log_dir, remote=remote)


def _remote_problems(spec: dict, ready: str | None) -> list[str]:
    """What a session run by Slurm cannot have: its port is chosen on the compute node
    and told in its ready line; nothing of it can be watched on this machine."""
    problems = []
    try:
        pattern = re.compile(ready) if ready else None
    except re.error as exc:
        return [f"ready_line: a Slurm session's ready line is a regular expression: {exc}"]
    if pattern is None or "port" not in pattern.groupindex:
        problems.append("a Slurm session needs a ready_line regular expression with a "
                        "(?P<port>...) group: its port is chosen where it runs")
    problems += [f"{key} is not for a Slurm session ({why})" for key, why in (
        ("ports", "its port is chosen on the compute node"),
        ("port_range", "its port is chosen on the compute node"),
        ("idle_timeout", "its connections are not seen from here"),
        ("module", "an app module configures a port on this machine")) if key in spec]
    return problems


class ReadyScanner:
    """Finds a ready line in output that arrives in chunks (a line may straddle two)."""

    def __init__(self, line: str, found: Callable[[], None]) -> None:
        self.needle = line.encode()
        self.found = found
        self.done = False
        self._carry = b""

    def feed(self, offset: int, data: bytes) -> None:  # output thread
        if self.done:
            return
        window = self._carry + data
        if self.needle in window:
            self.done = True
            self.found()
            return
        self._carry = window[-(len(self.needle) - 1):] if len(self.needle) > 1 else b""


class ReadyMatch:
    """Finds the first line matching a regular expression in output that arrives in
    chunks; ``found`` gets its named groups (a remote session's port, maybe its host)."""

    def __init__(self, pattern: str, found: Callable[[dict[str, str]], None]) -> None:
        self.pattern = re.compile(pattern)
        self.found = found
        self.done = False
        self._partial = b""

    def feed(self, offset: int, data: bytes) -> None:  # output thread
        if self.done:
            return
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[-4096:]
        for raw in lines:
            match = self.pattern.search(raw.decode("utf-8", "replace"))
            if match is not None:
                self.done = True
                self.found({k: v for k, v in match.groupdict().items() if v is not None})
                return


def first_host(nodes: str) -> str:
    """The first host of a Slurm node list ("c[01-04,07]" -> "c01", "a,b" -> "a")."""
    head = re.match(r"([^,\[]*)(?:\[([^\]]*)\])?", nodes)
    if head is None or not head.group(2):
        return nodes.split(",")[0]
    first = head.group(2).split(",")[0].split("-")[0]
    return head.group(1) + first


def port_accepts(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port`` now (never blocks long:
    the session's port is on this machine)."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def has_connections(port: int) -> bool:
    """Whether any ESTABLISHED TCP connection uses local ``port`` (kernel tables)."""
    want = f":{port:04X} "
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if (len(fields) > 3 and fields[3] == "01"
                            and (fields[1] + " ").endswith(want)):
                        return True
        except OSError:
            continue
    return False


class ProxyMap:
    """The ``<id> <host>:<port>`` file a front proxy (Apache's RewriteMap) reads.

    Rewritten whole on every change, through a temporary file and a rename, so a reader
    sees the old map or the new one, never half of one.
    """

    def __init__(self, path: str, mode: int) -> None:
        self.path = path
        self.mode = mode
        self.entries: dict[int, tuple[str, int]] = {}
        try:
            with open(path) as f:
                self._written: str | None = f.read()
        except OSError:
            self._written = None

    def render(self) -> str:
        return "".join(f"{i} {h}:{p}\n" for i, (h, p) in sorted(self.entries.items()))

    def write(self) -> None:
        text = self.render()
        if text == self._written:
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, self.mode)
        try:
            os.fchmod(fd, self.mode)  # whatever the umask
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._written = text


WSLINK_ALWAYS = ("id", "sessionURL", "sessionManagerURL", "secret")


def wslink_answer(view: dict, fields: tuple[str, ...] | None) -> dict:
    """The launcher REST answer for a session ``view``. With the app's ``fields``
    (wslink's ``configuration.fields``), only those plus what wslink always returns; a
    session that is not running yet also says its state (queueing is ours)."""
    if fields is None:
        return view
    keep = {*fields, *WSLINK_ALWAYS}
    out = {k: v for k, v in view.items() if k in keep}
    if view.get("state") != "RUNNING":
        out.update({k: view[k] for k in ("state", "state_reason", "position") if k in view})
    return out


def substitute(template: str, values: Mapping[str, Any]) -> str:
    return string.Template(template).substitute({k: str(v) for k, v in values.items()})
