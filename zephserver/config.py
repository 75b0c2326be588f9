"""Loading a settings file over ``zephserver.defaults`` and checking it all at once.

One table, SPEC, declares every setting's validator and doc; ``check_settings`` runs them
all and returns every problem (Django system-check style) so an operator fixes a file in
one pass. Relative paths are resolved against the current directory at load time, and
number settings are read as floats, so services use values as they are.

Long because every setting is declared here, in one table, with its check.
"""

import importlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from zephserver import defaults
from zephserver.errors import SettingsError

ENV_VAR = "ZEPHSERVER_SETTINGS"
DEFAULT_SETTINGS_FILE = os.path.join("settings", "zephserversettings.py")
UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Problem(NamedTuple):
    """One thing wrong with the settings: a stable id, what is wrong, and a hint."""

    id: str
    message: str
    hint: str = ""
    level: str = "error"

    @property
    def is_error(self) -> bool:
        return self.level == "error"

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class Settings(Mapping[str, Any]):
    """Read-only settings: every default overlaid with what the file set.

    Read as attributes (``settings.PORT_ZEPH``) or as a mapping.
    """

    def __init__(self, values: Mapping[str, Any], path: str | None = None,
                 unknown: tuple[str, ...] = ()) -> None:
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "unknown", unknown)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("settings are read-only")

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some values changed (tests, derived values)."""
        return Settings({**self._values, **changes}, self.path, self.unknown)


def default_values() -> dict[str, Any]:
    return {k: v for k, v in vars(defaults).items() if k.isupper() and not k.startswith("_")}


def find_settings_file(explicit: str | None = None) -> str:
    """The settings file to use: --settings, then $ZEPHSERVER_SETTINGS, then the default."""
    if explicit:
        return explicit
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    if os.path.exists(DEFAULT_SETTINGS_FILE):
        return DEFAULT_SETTINGS_FILE
    spec = _find_spec("settings.zephserversettings")
    if spec and spec.origin:
        return spec.origin
    return DEFAULT_SETTINGS_FILE


def _find_spec(name: str) -> Any:
    import importlib.util  # (here: most starts never need it)

    return importlib.util.find_spec(name)


def _run_file(path: str) -> dict[str, Any]:
    """The names a settings file assigns, as ``runpy.run_path`` gives them (without its
    imports: every CLI command loads the settings)."""
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec")
    namespace: dict[str, Any] = {"__name__": "zephserver_settings", "__file__": path}
    exec(code, namespace)
    return namespace


def load_settings(path: str | None = None) -> Settings:
    """Read a settings file over the defaults and derive the paths left unset.

    Raises:
        SettingsError: the file is missing or cannot be executed.
    """
    path = find_settings_file(path)
    if not os.path.isfile(path):
        raise SettingsError([Problem("zeph.E001", f"settings file {path} does not exist",
                                     "pass --settings FILE.py or set " + ENV_VAR)])
    try:
        namespace = _run_file(path)
    except SyntaxError as exc:
        raise SettingsError([Problem("zeph.E002", f"settings file {path} line {exc.lineno}: "
                                     f"syntax error: {exc.msg}", "fix the Python syntax")]) from exc
    except Exception as exc:
        raise SettingsError([Problem("zeph.E002", f"settings file {path} raised "
                                     f"{type(exc).__name__}: {exc}",
                                     "a settings file only assigns names")]) from exc
    values = default_values()
    given = {k: v for k, v in namespace.items() if k.isupper() and not k.startswith("_")}
    unknown = tuple(sorted(k for k in given if k not in values))
    values.update(given)
    return Settings(_complete(values), os.path.abspath(path), unknown)


def settings_from_values(**values: Any) -> Settings:
    """Settings built in code (tests, embedding): defaults overlaid with ``values``."""
    merged = default_values()
    merged.update(values)
    return Settings(_complete(merged))


def _complete(values: dict[str, Any]) -> dict[str, Any]:
    """Paths derived from DATA_DIR where unset, made absolute; numbers as their type
    (``AGENT_GRACE = 2`` reads as 2.0), so no service casts a setting again."""
    for name, spec in SPEC.items():
        cast = getattr(spec.check, "cast", None)
        value = values.get(name)
        if cast is not None and isinstance(value, int) and not isinstance(value, bool):
            values[name] = cast(value)
    data_dir = values["DATA_DIR"]
    if isinstance(data_dir, str) and data_dir:
        data_dir = os.path.abspath(data_dir)
        values["DATA_DIR"] = data_dir
        for name, leaf in (("LOCK_FILE", "zephserver.pid"), ("LOG_PATH", "zephserver.log"),
                           ("CONFIGURATION_NETWORK_INTERFACE_SERVER", "zephserver.sock"),
                           ("JOBS_DIR", "jobs"), ("AGENT_DIR", "agent")):
            if values.get(name) is None:
                values[name] = os.path.join(data_dir, leaf)
    for name in ("LOCK_FILE", "LOG_PATH", "CONFIGURATION_NETWORK_INTERFACE_SERVER",
                 "CONFIGURATION_NETWORK_INTERFACE", "LAUNCHER_CONFIG", "JOBS_DIR",
                 "LAUNCHER_PROXY_FILE", "AGENT_DIR", "LAUNCHER_CWD"):
        if isinstance(values.get(name), str) and not values[name].startswith("$"):
            values[name] = os.path.abspath(values[name])
    if values.get("CONFIGURATION_NETWORK_INTERFACE") is None:
        values["CONFIGURATION_NETWORK_INTERFACE"] = values["CONFIGURATION_NETWORK_INTERFACE_SERVER"]
    return values


# --- resolving "dotted.module/ClassName" -------------------------------------------------


def resolve_class(path: str) -> type:
    """Import ``"dotted.module/ClassName"`` and return the class.

    Raises:
        ValueError: the path is malformed or does not name a class.
        ImportError: the module cannot be imported.
    """
    if not isinstance(path, str) or path.count("/") != 1:
        raise ValueError(f"{path!r} is not of the form 'dotted.module/ClassName'")
    module_name, class_name = path.split("/")
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise ValueError(f"module {module_name} has no class {class_name}")
    return cls


def _resolve_for_check(path: Any, what: str, needs: tuple[str, ...]) -> tuple[type | None, str]:
    """Resolve a class path for checking; returns (class, error message or '')."""
    try:
        cls = resolve_class(path)
    except ImportError as exc:
        return None, f"{what} {path!r}: cannot import: {exc}"
    except ValueError as exc:
        return None, f"{what} {path!r}: {exc}"
    except Exception as exc:
        return None, f"{what} {path!r}: importing it raised {type(exc).__name__}: {exc}"
    missing = [m for m in needs if not callable(getattr(cls, m, None))]
    if missing:
        return cls, f"{what} {path!r}: class {cls.__name__} has no method {', '.join(missing)}"
    return cls, ""


def service_name(cls: type, path: str) -> str:
    """A service's short name: its ``name`` attribute, else its SERVICE_LIST path."""
    name = getattr(cls, "name", None)
    return name if isinstance(name, str) and name else path


# --- validators: each returns a list of messages ------------------------------------------

Check = Callable[[Any, Settings], list[str]]


def _is_str(value: Any, s: Settings) -> list[str]:
    return [] if isinstance(value, str) and value else ["must be a non-empty string"]


def _str_list(value: Any, s: Settings) -> list[str]:
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return []
    return ["must be a list of strings"]


def _writable_dir(path: str) -> str:
    """'' if ``path`` is (or can be made) a writable directory, else why not."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        return f"cannot create directory {path}: {exc.strerror}"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"directory {path} is not writable"
    return ""


def _file_in_writable_dir(value: Any, s: Settings) -> list[str]:
    if not isinstance(value, str) or not value:
        return ["must be a file path"]
    why = _writable_dir(os.path.dirname(value) or ".")
    return [why] if why else []


def _data_dir(value: Any, s: Settings) -> list[str]:
    if not isinstance(value, str) or not value:
        return ["must be a directory path"]
    why = _writable_dir(value)
    return [why] if why else []


def _socket_path(value: Any, s: Settings) -> list[str]:
    errors = _file_in_writable_dir(value, s)
    if not errors and len(os.fsencode(value)) > UNIX_PATH_MAX:
        errors.append(f"{value} is longer than {UNIX_PATH_MAX} bytes, too long for a UNIX socket")
    return errors


def _log_level(value: Any, s: Settings) -> list[str]:
    if isinstance(value, str) and value.upper() in LOG_LEVELS:
        return []
    if isinstance(value, dict) and value:
        return [f"{name!r}: {level!r} is not one of {', '.join(LOG_LEVELS)}"
                for name, level in value.items()
                if not isinstance(name, str) or not isinstance(level, str)
                or level.upper() not in LOG_LEVELS]
    return [f"{value!r} is not one of {', '.join(LOG_LEVELS)} (nor a dict of logger "
            "name -> level)"]


def _port(value: Any, s: Settings) -> list[str]:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535:
        return []
    return [f"{value!r} is not a port number (0-65535; 0 picks a free port)"]


def _bind_address(value: Any, s: Settings) -> list[str]:
    if not isinstance(value, str) or not value:
        return ["must be an IP address or host name"]
    try:
        import ipaddress  # (here: a CLI command that loads settings needs it not)

        ipaddress.ip_address(value)
    except ValueError:
        if not all(part.isalnum() or "-" in part for part in value.split(".")):
            return [f"{value!r} is not an IP address or host name"]
    return []


def _number(minimum: float) -> Check:
    def check(value: Any, s: Settings) -> list[str]:
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= minimum:
            return []
        return [f"{value!r} must be a number >= {minimum}"]
    check.cast = float  # type: ignore[attr-defined]  # a number setting reads as a float
    return check


def _integer(minimum: int) -> Check:
    def check(value: Any, s: Settings) -> list[str]:
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return []
        return [f"{value!r} must be an integer >= {minimum}"]
    return check


def _integer_in(low: int, high: int) -> Check:
    def check(value: Any, s: Settings) -> list[str]:
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return []
        return [f"{value!r} must be an integer from {low} to {high}"]
    return check


def _service_list(value: Any, s: Settings) -> list[str]:
    if not isinstance(value, list | tuple):
        return ["must be a list of 'dotted.module/ClassName' strings"]
    errors = []
    names: dict[str, type] = {}
    for path in value:
        cls, why = _resolve_for_check(path, "service", ("main", "disable"))
        if why:
            errors.append(why)
        if cls is None:
            continue
        name = service_name(cls, path)
        if name in names:
            errors.append(f"service name {name!r} is used twice")
        names[name] = cls
    known = set(names) | {p for p in value if isinstance(p, str)}
    errors.extend(f"service {name!r} requires {dep!r}, which is not in SERVICE_LIST"
                  for name, cls in names.items()
                  for dep in getattr(cls, "requires", ()) or () if dep not in known)
    if not errors:
        try:
            dependency_order({n: tuple(getattr(c, "requires", ()) or ()) for n, c in names.items()})
        except ValueError as exc:
            errors.append(str(exc))
    return errors


def _tasks_path(value: Any, s: Settings) -> list[str]:
    if not isinstance(value, dict):
        return ["must be a dict of method name -> 'dotted.module/ClassName'"]
    errors = []
    for method, path in value.items():
        if not isinstance(method, str) or not method:
            errors.append(f"method name {method!r} must be a non-empty string")
            continue
        _, why = _resolve_for_check(path, f"task {method!r}", ("main",))
        if why:
            errors.append(why)
    return errors


def _cluster_secret(value: Any, s: Settings) -> list[str]:
    nodes = s.CLUSTER_SERVER_LIST
    if not isinstance(nodes, list | tuple) or len(nodes) < 2:
        return []
    if not isinstance(value, str) or len(value) < 16:
        return ["a cluster needs a shared secret of at least 16 characters (the same on "
                "every node)"]
    return []


def _nodes(s: Settings) -> int:
    nodes = s.CLUSTER_SERVER_LIST
    return len(nodes) if isinstance(nodes, list | tuple) else 0


def _database_url(value: Any, s: Settings) -> list[str]:
    from zephserver.database import DatabaseUrlError, django_database, is_embedded

    try:
        django_database(value, s.DATA_DIR if isinstance(s.DATA_DIR, str) else ".")
    except DatabaseUrlError as exc:
        return [str(exc)]
    if _nodes(s) >= 2 and is_embedded(value):
        return [f"the {_nodes(s)} nodes of CLUSTER_SERVER_LIST need one shared database, "
                "not SQLite: set DATABASE_URL = \"postgresql://user:password@host:5432/"
                "name\" on every node"]
    return []


def _secret_key(value: Any, s: Settings) -> list[str]:
    if value is None or (isinstance(value, str) and len(value) >= 32):
        return []
    return ["must be None or a string of at least 32 characters"]


def _is_http_url(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and \
        parts.path in ("", "/") and not parts.query


def _cluster_list(value: Any, s: Settings) -> list[str]:
    if not isinstance(value, list | tuple):
        return ["must be a list of {'hostname', 'address', 'port'} dicts"]
    errors = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            errors.append(f"entry {i} must be a dict")
            continue
        missing = [k for k in ("hostname", "address", "port") if k not in entry]
        if missing:
            errors.append(f"entry {i} lacks {', '.join(missing)}")
        elif _port(entry["port"], s) or entry["port"] == 0:
            errors.append(f"entry {i} port {entry['port']!r} is not a port number")
        labels = entry.get("labels", [])
        if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
            errors.append(f"entry {i} labels must be a list of names (what apps' nodes "
                          "may ask for)")
        url = entry.get("url")
        if url is not None and not (isinstance(url, str) and _is_http_url(url)):
            errors.append(f"entry {i} url {url!r} is not an http:// or https:// URL (where "
                          "clients reach that node)")
    hostnames = [e.get("hostname") for e in value if isinstance(e, dict)]
    if len(value) >= 2 and not errors and s.NODE_NAME not in hostnames:
        errors.append(f"NODE_NAME {s.NODE_NAME!r} is not a hostname in CLUSTER_SERVER_LIST")
    return errors


def _module_name(value: Any, s: Settings) -> list[str]:
    if not isinstance(value, str) or not value:
        return ["must be a dotted module name"]
    try:
        found = _find_spec(value)
    except (ImportError, ValueError):
        found = None
    return [] if found else [f"module {value!r} cannot be found"]


def _apps(value: Any, s: Settings) -> list[str]:
    from zephserver.launch.apps import AppConfigError, parse_all_apps

    try:
        from zephserver.launch.wslink import effective_cwd

        apps = parse_all_apps(value, s.LAUNCHER_CONFIG, effective_cwd(s))
    except AppConfigError as exc:
        return exc.problems
    return _placeable(apps, s)


def _placeable(apps: dict, s: Settings) -> list[str]:
    """Every app's ``nodes`` names a node (or a label of one) of the cluster."""
    entries = [e for e in s.CLUSTER_SERVER_LIST if isinstance(e, dict)] \
        if isinstance(s.CLUSTER_SERVER_LIST, list | tuple) and _nodes(s) >= 2 else []
    places = {s.NODE_NAME} if not entries else {
        p for e in entries for p in [e.get("hostname"), *(e.get("labels") or [])]}
    return [f"app {name!r}: nodes {list(app.nodes)} match no node (names and labels of "
            f"CLUSTER_SERVER_LIST: {', '.join(sorted(map(str, places)))})"
            for name, app in apps.items() if app.nodes and not set(app.nodes) & places]


def _launcher_config(value: Any, s: Settings) -> list[str]:
    if value is None:
        return []
    from zephserver.launch.wslink import load_launcher_config

    try:
        load_launcher_config(value)
    except ValueError as exc:
        return [str(exc)]
    return []


def _launcher_cwd(value: Any, s: Settings) -> list[str]:
    if value is None or value == "$job_dir" or (isinstance(value, str)
                                                 and os.path.isdir(value)):
        return []
    return ["must be None (the launcher file's directory), \"$job_dir\" or an existing "
            "directory"]


def _launcher_warnings(s: Settings) -> list[str]:
    """What a launcher file says that zephserver does not act on (reported, not fatal)."""
    if s.LAUNCHER_CONFIG is None:
        return []
    from zephserver.launch.wslink import load_launcher_config

    try:
        conf = load_launcher_config(s.LAUNCHER_CONFIG)
    except ValueError:
        return []  # already an error
    warnings = list(conf.warnings)
    if any("cwd" not in app for app in conf.apps.values()):
        where = (f"LAUNCHER_CWD ({s.LAUNCHER_CWD})" if s.LAUNCHER_CWD is not None
                 else f"the launcher file's directory {os.path.dirname(s.LAUNCHER_CONFIG)}")
        warnings.append(f"apps: they run in {where}, as wslink runs them in its own "
                        "working directory (relative paths in cmd are taken from there; "
                        "LAUNCHER_CWD = \"$job_dir\" runs each in its job directory)")
    if conf.port is not None and conf.port != s.PORT_ZEPH:
        warnings.append(f"configuration.port {conf.port}: the launcher is served on "
                        f"PORT_ZEPH ({s.PORT_ZEPH}); set PORT_ZEPH to change it")
    if conf.host is not None and conf.host not in ("localhost", s.BIND_ADDRESS):
        warnings.append(f"configuration.host {conf.host}: the launcher is served on "
                        f"BIND_ADDRESS ({s.BIND_ADDRESS})")
    if conf.endpoint and s.LAUNCHER_ENDPOINT and conf.endpoint != s.LAUNCHER_ENDPOINT:
        warnings.append(f"configuration.endpoint {conf.endpoint}: LAUNCHER_ENDPOINT "
                        f"({s.LAUNCHER_ENDPOINT}) takes precedence")
    return warnings


def _endpoint(value: Any, s: Settings) -> list[str]:
    if value is None or (isinstance(value, str) and re.fullmatch(r"/[A-Za-z0-9_.~/-]+", value)
                         and not value.endswith("/") and value not in ("/ws", "/accounts")):
        return []
    return ["must be None or a URL path such as /paraview (not /ws)"]


def _ops_address(value: Any, s: Settings) -> list[str]:
    if value is None:
        return []
    host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return [f"{value!r} is not HOST:PORT (or None: on PORT_ZEPH)"]
    return _bind_address(host, s)


def _share(value: Any, s: Settings) -> list[str]:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1
    return [] if ok else [f"{value!r} is not a number above 0 and at most 1"]


def _bool(value: Any, s: Settings) -> list[str]:
    return [] if isinstance(value, bool) else ["must be True or False"]


def _choice(*choices: str) -> Check:
    def check(value: Any, s: Settings) -> list[str]:
        return [] if value in choices else [f"must be one of {', '.join(choices)}"]
    return check


def _file_mode(value: Any, s: Settings) -> list[str]:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o777
    return [] if ok else ["must be a file mode such as 0o644"]


def _proxy_file(value: Any, s: Settings) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, str) or not value:
        return ["must be None or a file path"]
    parent = os.path.dirname(os.path.abspath(value))
    return [] if os.path.isdir(parent) else [f"directory {parent} does not exist"]


def _str_paths(value: Any, s: Settings) -> list[str]:
    if not isinstance(value, list | tuple):
        return ["must be a list of absolute directories"]
    return [f"{p!r} is not an absolute directory" for p in value
            if not isinstance(p, str) or not os.path.isabs(p) or not os.path.isdir(p)]


def _access(value: Any, s: Settings) -> list[str]:
    from zephserver.launch.access import parse_access

    problems: list[str] = []
    parse_access(value, "the rule", problems)
    return problems


def _url_rules(value: Any, s: Settings) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        return ["must be None or a list of URL prefixes or anchored regexps (^...)"]
    problems = []
    for rule in value:
        if rule.startswith("^"):
            try:
                re.compile(rule)
            except re.error as exc:
                problems.append(f"{rule!r} is not a regular expression: {exc}")
        elif not rule.startswith(("http://", "https://")):
            problems.append(f"{rule!r} must start with http:// or https:// (or ^ for a "
                            "regexp); file:// sources are AGENT_FILE_ROOTS'")
    return problems


def _run_as(value: Any, s: Settings) -> list[str]:
    """RUN_AS, and who every app and the agent run as (launch.accounts)."""
    if value is not None and (not isinstance(value, str) or not value):
        return ["must be None, an account name, '$user' or 'root'"]
    from zephserver.launch.accounts import check, effective
    from zephserver.launch.apps import AppConfigError, parse_all_apps
    from zephserver.launch.wslink import effective_cwd

    try:
        apps = parse_all_apps(s.APPS, s.LAUNCHER_CONFIG, effective_cwd(s))
    except (AppConfigError, ValueError, TypeError):
        return []  # APPS and LAUNCHER_CONFIG say what is wrong with them
    runs = {f"app {name!r}": effective(app.run_as, value) for name, app in apps.items()}
    if any("service.agent/" in entry for entry in s.SERVICE_LIST):
        runs["agent processes"] = value
    user_map = s.USER_MAP if isinstance(s.USER_MAP, dict) else {}
    return check(runs, user_map, [s.JOBS_DIR, s.AGENT_DIR])


def _down_after(value: Any, s: Settings) -> list[str]:
    problems = _number(0.5)(value, s)
    lost = s.NODE_LOST_AFTER
    if not problems and isinstance(lost, int | float) and value <= lost:
        problems.append(f"must be more than NODE_LOST_AFTER ({lost:g})")
    return problems


def _slurm_bin_dir(value: Any, s: Settings) -> list[str]:
    """SLURM_BIN_DIR, and that Slurm's commands are there when an app uses Slurm."""
    if value is not None and (not isinstance(value, str) or not os.path.isdir(value)):
        return [f"{value!r} is not a directory"]
    from zephserver.launch.apps import AppConfigError, parse_all_apps
    from zephserver.launch.wslink import effective_cwd

    try:
        apps = parse_all_apps(s.APPS, s.LAUNCHER_CONFIG, effective_cwd(s))
    except (AppConfigError, ValueError, TypeError):
        return []  # APPS and LAUNCHER_CONFIG say what is wrong with them
    users = sorted(name for name, app in apps.items() if app.executor == "slurm")
    if not users:
        return []
    from zephserver.launch.slurm import SlurmCommands  # (loaded only where Slurm is used)

    missing = SlurmCommands(value).missing()
    if missing:
        return [f"app(s) {', '.join(users)} run on Slurm, and {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not found "
                f"{'in ' + value if value else 'on PATH'} (install slurm-client)"]
    return []


def _user_map(value: Any, s: Settings) -> list[str]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in value.items()):
        return ["must be a dict of Django user name -> Unix account"]
    return []


def _resources(value: Any, s: Settings) -> list[str]:
    if not isinstance(value, dict) or set(value) - {"cores", "memory", "licenses"}:
        return ["must be a dict with cores, memory and licenses"]
    problems = [f"{k} must be None or an integer >= 1" for k in ("cores", "memory")
                if value.get(k) is not None and (isinstance(value[k], bool)
                                                 or not isinstance(value[k], int)
                                                 or value[k] < 1)]
    licenses = value.get("licenses", {})
    if not isinstance(licenses, dict):
        return [*problems, "licenses must be a dict of name -> count or {'command': [...]}"]
    for name, v in licenses.items():
        ok = (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or (
            isinstance(v, dict) and isinstance(v.get("command"), list) and v["command"]
            and all(isinstance(a, str) for a in v["command"]))
        if not ok:
            problems.append(f"licence {name!r} must be a count >= 0 or {{'command': [argv]}}")
    return problems


def _user_limits(value: Any, s: Settings) -> list[str]:
    if not isinstance(value, dict) or set(value) - {"running", "cores"}:
        return ["must be a dict with running and cores"]
    return [f"{k} must be an integer >= 0" for k, v in value.items()
            if isinstance(v, bool) or not isinstance(v, int) or v < 0]


def _optional_file(value: Any, s: Settings) -> list[str]:
    if value is None:
        return []
    return [] if isinstance(value, str) and os.path.isfile(value) else [f"{value!r} is not a file"]


class Spec(NamedTuple):
    check: Check
    doc: str


SPEC: dict[str, Spec] = {
    "DATA_DIR": Spec(_data_dir, "Directory for jobs, logs, the lock, the socket and SQLite."),
    "LOCK_FILE": Spec(_file_in_writable_dir, "Pid lock file; default DATA_DIR/zephserver.pid."),
    "LOG_LEVEL": Spec(_log_level, "DEBUG, INFO, WARNING, ERROR or CRITICAL; or a dict of "
                      "logger name -> level (\"\" the root)."),
    "LOG_FORMAT": Spec(_choice("text", "json"), "Log lines as text or as JSON objects."),
    "LOG_PATH": Spec(_file_in_writable_dir, "Log file; default DATA_DIR/zephserver.log."),
    "CONFIGURATION_NETWORK_INTERFACE_SERVER": Spec(
        _socket_path, "Control socket path; default DATA_DIR/zephserver.sock."),
    "CONFIGURATION_NETWORK_INTERFACE": Spec(
        _is_str, "Control socket the CLI talks to; default the server's."),
    "BIND_ADDRESS": Spec(_bind_address, "Address the HTTP/WebSocket server binds."),
    "PORT_ZEPH": Spec(_port, "HTTP + WebSocket port."),
    "HTTP_MAX_JSON_BODY": Spec(_integer(1024), "Largest body of a JSON API request "
                               "(/paraview, /agent/); larger: 413 (bytes)."),
    "HTTP_MAX_FORM_BODY": Spec(_integer(1024), "Largest body of a request to the web UI's "
                               "Django pages; larger: 413 (bytes)."),
    "OPS_ADDRESS": Spec(_ops_address, "HOST:PORT serving /healthz, /readyz and /metrics; "
                        "None serves them on PORT_ZEPH."),
    "OPS_REQUIRE_TOKEN": Spec(_bool, "/healthz, /readyz and /metrics want a staff user's "
                              "API token."),
    "SERVICE_LIST": Spec(_service_list, "Services to run, 'dotted.module/ClassName'."),
    "TASKS_PATH": Spec(_tasks_path, "JSON-RPC method name -> task class."),
    "SERVICE_BACKOFF_INITIAL": Spec(_number(0), "Delay before the first restart (s)."),
    "SERVICE_BACKOFF_FACTOR": Spec(_number(1), "Growth of the restart delay."),
    "SERVICE_BACKOFF_MAX": Spec(_number(0), "Cap of the restart delay (s)."),
    "SERVICE_MAX_RETRIES": Spec(_integer(0), "Consecutive failed runs before FATAL."),
    "SERVICE_MIN_UPTIME": Spec(_number(0), "A run this long resets the failure count (s)."),
    "SERVICE_STOP_TIMEOUT": Spec(_number(0), "Time a service has to stop after disable() (s)."),
    "SERVICE_START_TIMEOUT": Spec(_number(0), "Time start waits for every service (s)."),
    "WS_ALLOWED_ORIGINS": Spec(_str_list, "Origins allowed on /ws besides our own host."),
    "LEGACY_WS_PATH": Spec(_endpoint, "Path of the 2015 client's wire format; None: off."),
    "WS_MAX_MESSAGE_SIZE": Spec(_integer(1), "Largest WebSocket message (bytes)."),
    "WS_PING_INTERVAL": Spec(_number(0), "Keepalive ping interval (s; 0 = off)."),
    "WS_PING_TIMEOUT": Spec(_number(0), "Close when a pong is this late (s)."),
    "WS_MAX_BATCH": Spec(_integer(1), "Requests in one JSON-RPC batch."),
    "WS_MAX_IN_FLIGHT": Spec(_integer(1), "Requests in flight per connection."),
    "TASK_POOL_SIZE": Spec(_integer(1), "Task threads."),
    "TASK_QUEUE_SIZE": Spec(_integer(1), "Tasks waiting for a thread before -32004."),
    "TASK_POOL_USER_SHARE": Spec(_share, "Part of the task threads (and of the queue) one "
                                 "user or anonymous connection may hold, 0-1."),
    "TASK_SHUTDOWN_TIMEOUT": Spec(_number(0), "Time tasks get after interrupt() (s)."),
    "TASK_REPLY_TIMEOUT": Spec(_number(0.01), "Wait for a task's Future before -32012 (s)."),
    "SESSION_CACHE_TTL": Spec(_number(0), "Life of a cached session/token lookup (s)."),
    "WSGI_POOL_SIZE": Spec(_integer(1), "Threads running Django views."),
    "CLUSTER_SERVER_LIST": Spec(_cluster_list, "Cluster nodes ({hostname, address, port}, "
                                "optional labels and url); fewer than two = no cluster."),
    "CLUSTER_SECRET": Spec(_cluster_secret, "Shared secret the nodes' CURVE keys come from."),
    "CLUSTER_HEARTBEAT": Spec(_number(0.01), "Heartbeat interval to each peer (s)."),
    "CLUSTER_HEARTBEAT_TIMEOUT": Spec(_number(0.05), "Silence after which a peer is down (s)."),
    "CLUSTER_RETRY": Spec(_number(0.01), "Resend delay of unacknowledged messages (s)."),
    "CLUSTER_BUFFER_MESSAGES": Spec(_integer(1), "Messages kept per peer until acknowledged."),
    "CLUSTER_BUFFER_AGE": Spec(_number(0.1), "Age after which unacknowledged messages go (s)."),
    "CLUSTER_CALL_TIMEOUT": Spec(_number(0.05), "Wait for a node's answer to a forwarded "
                                 "request before -32007 (s)."),
    "CLUSTER_MAX_MESSAGE": Spec(_integer(1024), "Largest message frame from a peer (bytes)."),
    "NODE_NAME": Spec(_is_str, "This node's hostname in CLUSTER_SERVER_LIST."),
    "DJANGO_SETTINGS_MODULE": Spec(_module_name, "Django settings module."),
    "DATABASE_URL": Spec(_database_url, "The database; None is SQLite under DATA_DIR."),
    "SECRET_KEY": Spec(_secret_key, "Django's signing key; None is derived or kept in "
                       "DATA_DIR."),
    "APPS": Spec(_apps, "Applications that may be launched."),
    "LAUNCHER_CONFIG": Spec(_launcher_config, "wslink/ParaViewWeb launcher JSON file."),
    "LAUNCHER_CWD": Spec(_launcher_cwd, "Where LAUNCHER_CONFIG apps run; default the "
                         "file's directory."),
    "LAUNCHER_ENDPOINT": Spec(_endpoint, "Launcher REST path; default the file's or /paraview."),
    "LAUNCHER_PROXY_FILE": Spec(_proxy_file, "Proxy map file (<id> <host>:<port> lines)."),
    "LAUNCHER_PROXY_FILE_MODE": Spec(_file_mode, "File mode of the proxy map file."),
    "SESSION_CERT_KEY": Spec(_choice("ec-p256", "rsa-3072"), "Key type of session certs."),
    "SESSION_CERT_DAYS": Spec(_integer(1), "Validity of session certificates (days)."),
    "JOBS_DIR": Spec(_data_dir, "Directory of job directories; default DATA_DIR/jobs."),
    "JOB_ROOTS": Spec(_str_paths, "Extra directories job working directories may be in."),
    "DATA_DIR_MIN_FREE": Spec(_integer(0), "Free bytes under which DATA_DIR holds new work "
                              "(0: no watermark)."),
    "JOB_MAX_OUTPUT": Spec(_integer(0), "Log bytes after which a job is stopped, unless its "
                           "app sets max_output (0: no cap)."),
    "JOB_PROGRESS_INTERVAL": Spec(_number(0), "Time between persisted progress updates (s)."),
    "OUTPUT_CHUNK": Spec(_integer(4096), "Bytes read from a job log at once."),
    "OUTPUT_MAX_PENDING": Spec(_integer(4096), "Unsent output bytes a subscriber may have."),
    "RESOURCES": Spec(_resources, "Cores, memory (MiB) and licences this node offers."),
    "QUEUE_USER_LIMITS": Spec(_user_limits, "Per-user running jobs and cores (0 = none)."),
    "QUEUE_RESERVE_AFTER": Spec(_number(0), "Wait after which a job gets a reservation (s)."),
    "QUEUE_BACKFILL_DEPTH": Spec(_integer(1), "Queued jobs looked at per scheduling pass."),
    "QUEUE_TICK": Spec(_number(0.01), "Time between safety scheduling passes (s)."),
    "AGENT_DIR": Spec(_data_dir, "Directory of agent processes; default DATA_DIR/agent."),
    "AGENT_FILE_ROOTS": Spec(_str_paths, "Directories file:// source URLs may point into."),
    "RUN_AS": Spec(_run_as, "The Unix account work runs as when an app names none: an "
                   "account, '$user' (USER_MAP), 'root' on purpose; None: the daemon's "
                   "own (refused when that is root)."),
    "JOB_CGROUPS": Spec(_bool, "A cgroup per job and agent process where the kernel offers "
                        "one; False: process groups and a subreaper shim."),
    "JOB_NICE": Spec(_integer_in(0, 19), "Steps of niceness below the daemon that launched "
                     "processes and their sessions' scheduling groups run at (0: as the "
                     "daemon); with the v1 cpu controller, all jobs together weigh as one "
                     "process that far below."),
    "USER_MAP": Spec(_user_map, "Django user name -> Unix account, for run_as '$user'."),
    "NODE_LOST_AFTER": Spec(_number(0.5), "Seconds without a node's lease before the "
                            "others declare it lost (cluster)."),
    "NODE_DOWN_AFTER": Spec(_down_after, "Seconds without a node's lease before its "
                            "running jobs are LOST (cluster; more than NODE_LOST_AFTER)."),
    "SLURM_BIN_DIR": Spec(_slurm_bin_dir, "Directory of sbatch, squeue, scontrol and "
                          "scancel; None: PATH."),
    "SLURM_CONF": Spec(_optional_file, "The slurm.conf Slurm's commands read; None: "
                       "Slurm's default."),
    "SLURM_TICK": Spec(_number(0.05), "Time between looks (one squeue) at Slurm jobs (s)."),
    "SLURM_SUBMIT_RETRY": Spec(_number(0), "How long a submission keeps trying while "
                               "slurmctld is unreachable (s; 0: fail at once)."),
    "AGENT_ALLOW": Spec(_access, "Who may create agent processes: {groups, users, staff}; "
                        "None: every logged-in user."),
    "AGENT_SOURCE_ALLOW": Spec(_url_rules, "URL prefixes or anchored regexps an http(s) "
                               "source_url must match; None: any."),
    "AGENT_MAX_DOWNLOAD": Spec(_integer(1), "Largest source archive (bytes)."),
    "AGENT_MAX_UNPACKED": Spec(_integer(1), "Most bytes an archive may unpack to."),
    "AGENT_DOWNLOAD_TIMEOUT": Spec(_number(0.1), "Download stall timeout (s)."),
    "AGENT_BACKOFF_INITIAL": Spec(_number(0), "Delay before the first restart (s)."),
    "AGENT_BACKOFF_FACTOR": Spec(_number(1), "Growth of the restart delay."),
    "AGENT_BACKOFF_MAX": Spec(_number(0), "Cap of the restart delay (s)."),
    "AGENT_MIN_UPTIME": Spec(_number(0), "A run this long resets the backoff (s)."),
    "AGENT_MAX_RESTARTS": Spec(_integer(0), "Restarts in a row before fatal (0 = no limit)."),
    "AGENT_GRACE": Spec(_number(0), "SIGTERM to SIGKILL delay on delete (s)."),
    "AGENT_STOP_GRACE": Spec(_number(0), "SIGTERM to SIGKILL delay at daemon stop (s)."),
    "AGENT_KEEP_FILES": Spec(_bool, "Keep a deleted process's directory."),
    "AGENT_CONSOLE_REPLAY": Spec(_integer(0), "Log lines a console gets first."),
    "AGENT_CONSOLE_MAX_PENDING": Spec(_integer(1024), "Unsent characters before a console "
                                                      "skips ahead."),
    "AGENT_CONSOLE_MAX_RATE": Spec(_integer(0), "Bytes/s a console gets at most (0 = any)."),
}


def check_settings(settings: Settings) -> list[Problem]:
    """Every problem with ``settings``: errors first, then warnings."""
    problems = []
    for name, spec in SPEC.items():
        try:
            messages = spec.check(settings[name], settings)
        except Exception as exc:  # a validator bug must not hide the other problems
            messages = [f"could not be checked: {type(exc).__name__}: {exc}"]
        # one id per setting, so that a script or a silence list can name the problem
        problems += [Problem(f"zeph.E.{name}", f"{name}: {m}", _hint(name)) for m in messages]
    problems += [Problem("zeph.W001", f"unknown setting {name}", "check the spelling",
                         level="warning") for name in settings.unknown]
    problems += [Problem("zeph.W002", f"LAUNCHER_CONFIG: {w}", "see docs/sessions.md",
                         level="warning") for w in _launcher_warnings(settings)]
    return problems


def _hint(name: str) -> str:
    return SPEC[name].doc.rstrip(".")  # as written: "DEBUG, ...", "HTTP + WebSocket port"


def dependency_order(requires: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Names sorted so each comes after what it requires (stable for ties).

    Raises:
        ValueError: a cycle, naming the services in it.
    """
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*trail[trail.index(name):], name]
            raise ValueError("SERVICE_LIST has a dependency cycle: " + " -> ".join(cycle))
        state[name] = 1
        for dep in requires.get(name, ()):
            if dep in requires:
                visit(dep, [*trail, name])
        state[name] = 2
        order.append(name)

    for name in requires:
        visit(name, [])
    return order
