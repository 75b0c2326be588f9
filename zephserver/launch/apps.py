"""Application definitions (the APPS setting): what may be launched, and how.

A client never sends a command line. It names an app and gives values for the
parameters that app declares; each value is checked against the declared type and
rule, then substituted into the administrator's argv/cwd/env templates one argv
element at a time (no shell ever sees it). ``parse_apps`` checks every definition at
settings time; ``App.prepare`` turns a client's request into a ``LaunchSpec``.
"""

import math
import os
import re
import string
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zephserver.launch.access import Access, allowed, parse_access
from zephserver.launch.interactive import (
    SESSION_GENERATED,
    SESSION_KEYS,
    SessionOptions,
    parse_session_options,
)

if TYPE_CHECKING:  # (launch.slurm is loaded where an app uses Slurm)
    from zephserver.launch.slurm import SlurmOptions

KINDS = ("batch", "session", "service")
PARAM_TYPES = ("int", "float", "str", "path")
# Variables every template may use besides the app's params and vars.
GENERATED = ("job_id", "job_dir", "data_dir", "python", "user", "node")
DEFAULT_INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "HOME")
MAX_STR_PARAM = 4096


class AppConfigError(Exception):
    """An app definition is wrong; ``problems`` lists every fault found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ParamError(ValueError):
    """A client value was refused; ``field`` names the parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any = None
    required: bool = False
    in_list: tuple | None = None
    regexp: re.Pattern | None = None
    minimum: float | None = None
    maximum: float | None = None
    root: str | None = None
    must_exist: bool = True
    description: str = ""

    def clean(self, value: Any) -> Any:
        """The checked value, or ParamError naming this parameter."""
        n = self.name
        if self.type in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ParamError(n, f"param {n!r} must be a number")
            if self.type == "int":
                if isinstance(value, float) and not value.is_integer():
                    raise ParamError(n, f"param {n!r} must be a whole number")
                value = int(value)
            elif not math.isfinite(value):
                raise ParamError(n, f"param {n!r} must be finite")
            if self.minimum is not None and value < self.minimum:
                raise ParamError(n, f"param {n!r} must be at least {self.minimum:g}")
            if self.maximum is not None and value > self.maximum:
                raise ParamError(n, f"param {n!r} must be at most {self.maximum:g}")
        else:
            if not isinstance(value, str):
                raise ParamError(n, f"param {n!r} must be a string")
            if "\0" in value or len(value) > MAX_STR_PARAM:
                raise ParamError(n, f"param {n!r} is not an acceptable string")
            if self.type == "path":
                value = self._inside_root(value)
        if self.in_list is not None and value not in self.in_list:
            raise ParamError(n, f"param {n!r} must be one of {list(self.in_list)}")
        if self.regexp is not None and not self.regexp.fullmatch(str(value)):
            raise ParamError(n, f"param {n!r} does not match {self.regexp.pattern!r}")
        return value

    def _inside_root(self, value: str) -> str:
        assert self.root is not None
        root = os.path.realpath(self.root)
        # realpath resolves '..' and every symlink, so what is checked is what is opened
        path = os.path.realpath(os.path.join(root, value))
        if os.path.commonpath([root, path]) != root:
            raise ParamError(self.name, f"param {self.name!r} escapes its root {self.root}")
        if self.must_exist and not os.path.exists(path):
            raise ParamError(self.name, f"param {self.name!r}: no such file {value!r}")
        return path

    def describe(self) -> dict:
        out: dict[str, Any] = {"type": self.type, "required": self.required}
        if not self.required:
            out["default"] = self.default
        for key, value in (("inList", self.in_list), ("min", self.minimum),
                           ("max", self.maximum), ("description", self.description or None)):
            if value is not None:
                out[key] = list(value) if key == "inList" else value
        if self.regexp is not None:
            out["regexp"] = self.regexp.pattern
        return out


@dataclass(frozen=True)
class Control:
    name: str
    file: str
    payload: str
    description: str = ""


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start one job, computed from the app and checked params."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    params: dict[str, Any]
    resources: dict[str, Any]


@dataclass(frozen=True)
class App:
    name: str
    kind: str
    argv: tuple[str, ...]
    cwd: str
    env: Mapping[str, str]
    inherit_env: tuple[str, ...]
    vars: Mapping[str, str]
    params: Mapping[str, Param]
    resources: Mapping[str, Any]
    grace: float
    wall_time: float | None
    parser: Any
    controls: Mapping[str, Control]
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys other modules add
    session: SessionOptions | None = None  # kind "session" only
    max_output: int | None = None  # bytes of log before the job is stopped (None: default)
    allow: Access | None = None  # who may launch it (None: every logged-in user)
    run_as: str | None = None  # the Unix account it runs as (launch.accounts; None: RUN_AS)
    executor: str = "local"  # who runs its processes: this node, or "slurm"
    slurm: "SlurmOptions | None" = None  # executor "slurm": the sbatch constants
    nodes: tuple[str, ...] | None = None  # cluster nodes it may run on (names or labels)
    requeue: bool = False  # run again elsewhere when its node is lost (held to its lease)

    def allows(self, user: Any) -> bool:
        return allowed(self.allow, user)

    def clean_params(self, given: Any) -> dict[str, Any]:
        """Declared params with defaults filled in; ParamError for anything else."""
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise ParamError("params", "params must be an object")
        for name in given:
            if name not in self.params:
                raise ParamError(name, f"param {name!r} is not declared by app {self.name!r}")
        out = {}
        for name, param in self.params.items():
            if name in given:
                out[name] = param.clean(given[name])
            elif param.required:
                raise ParamError(name, f"param {name!r} is required")
            else:
                out[name] = param.default
        return out

    def resources_for(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Cores, memory (MiB) and licences this app needs with these params."""
        def value(v: Any) -> int:
            if isinstance(v, str):
                v = params[v[1:]]
            return int(v)

        return {"cores": value(self.resources.get("cores", 1)),
                "memory": value(self.resources.get("memory", 0)),
                "licenses": {k: value(v) for k, v in self.resources.get("licenses", {}).items()}}

    def prepare(self, params: Mapping[str, Any], generated: Mapping[str, str]) -> LaunchSpec:
        """Substitute templates; ``params`` must come from ``clean_params``."""
        values = {**{k: str(v) for k, v in self.vars.items()},
                  **{k: "" if v is None else str(v) for k, v in params.items()},
                  "python": sys.executable, **generated}
        argv = [string.Template(a).substitute(values) for a in self.argv]
        env = {k: os.environ[k] for k in self.inherit_env if k in os.environ}
        env.update({k: string.Template(v).substitute(values) for k, v in self.env.items()})
        cwd = string.Template(self.cwd).substitute(values)
        return LaunchSpec(argv, cwd, env, dict(params), self.resources_for(params))

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "description": self.description,
                "params": {n: p.describe() for n, p in self.params.items()},
                "resources": dict(self.resources), "wall_time": self.wall_time,
                "controls": {n: c.description for n, c in self.controls.items()}}


# --- parsing the APPS setting -----------------------------------------------------------

APP_KEYS = {"description", "kind", "argv", "cmd", "cwd", "env", "inherit_env", "vars",
            "params", "sanitize", "resources", "grace", "wall_time", "max_output", "parser",
            "controls", "allow", "run_as", "executor", "slurm", "nodes", "requeue"}
EXECUTORS = ("local", "slurm")


def parse_apps(apps: Any, extra_keys: frozenset[str] = frozenset()) -> dict[str, App]:
    """Check every app definition; AppConfigError lists all problems at once."""
    if not isinstance(apps, dict):
        raise AppConfigError(["must be a dict of app name -> definition"])
    problems: list[str] = []
    out = {}
    for name, spec in apps.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            problems.append(f"app name {name!r} must be 1-64 letters, digits, '_', '.', '-'")
            continue
        found: list[str] = []
        app = _parse_app(name, spec, found, extra_keys)
        problems += [f"app {name!r}: {p}" for p in found]
        if app is not None and not found:
            out[name] = app
    if problems:
        raise AppConfigError(problems)
    return out


def parse_all_apps(apps: Any, launcher_config: str | None,
                   launcher_cwd: str | None = None) -> dict[str, App]:
    """APPS plus the session apps of a wslink launcher file (LAUNCHER_CONFIG); those
    that name no ``cwd`` run in ``launcher_cwd`` (wslink.effective_cwd)."""
    if launcher_config is None:
        return parse_apps(apps)
    from zephserver.launch.wslink import load_launcher_config

    try:
        extra = load_launcher_config(launcher_config).apps
    except ValueError:
        extra = {}  # reported by the LAUNCHER_CONFIG check
    if launcher_cwd is not None:  # (the loaded apps are cached: copied, not changed)
        extra = {name: {"cwd": launcher_cwd, **spec} for name, spec in extra.items()}
    clash = sorted(set(extra) & set(apps)) if isinstance(apps, dict) else []
    if clash:
        raise AppConfigError([f"app {n!r} is defined both in APPS and LAUNCHER_CONFIG"
                              for n in clash])
    return parse_apps({**apps, **extra}) if isinstance(apps, dict) else parse_apps(apps)


def _parse_app(name: str, spec: Any, problems: list[str],
               extra_keys: frozenset[str]) -> App | None:
    if not isinstance(spec, dict):
        problems.append("definition must be a dict")
        return None
    kind = spec.get("kind", "batch")
    if kind not in KINDS:
        problems.append(f"kind must be one of {', '.join(KINDS)}")
    allowed = APP_KEYS | extra_keys | (SESSION_KEYS if kind == "session" else frozenset())
    unknown = sorted(set(spec) - allowed)
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)}"
                        + (" (session keys need kind 'session')"
                           if set(unknown) & SESSION_KEYS else ""))
    argv = spec.get("argv", spec.get("cmd"))
    if (not isinstance(argv, list) or not argv
            or not all(isinstance(a, str) for a in argv)):
        problems.append("argv must be a non-empty list of strings (never a shell line)")
        argv = []
    vars_ = spec.get("vars", {})
    if not isinstance(vars_, dict) or not all(isinstance(k, str) for k in vars_):
        problems.append("vars must be a dict of name -> value")
        vars_ = {}
    params = {}
    raw_params = spec.get("params", {})
    if not isinstance(raw_params, dict):
        problems.append("params must be a dict of name -> rule")
        raw_params = {}
    if "sanitize" in spec:  # wslink's form of string params
        from zephserver.launch.wslink import sanitize_to_params

        raw_params = {**sanitize_to_params(spec["sanitize"], "sanitize", problems),
                      **raw_params}
    for pname, prule in raw_params.items():
        param = _parse_param(pname, prule, problems)
        if param is not None:
            params[pname] = param
    generated = set(GENERATED) | (set(SESSION_GENERATED) if kind == "session" else set())
    clash = sorted(set(params) & (set(vars_) | generated))
    if clash:
        problems.append(f"param(s) {', '.join(clash)} shadow a variable")
    known = set(params) | set(vars_) | generated
    env = spec.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        problems.append("env must be a dict of name -> string template")
        env = {}
    cwd = spec.get("cwd", "$job_dir")
    if not isinstance(cwd, str):
        problems.append("cwd must be a string template")
        cwd = "$job_dir"
    for where, template in ([("argv", a) for a in argv] + [("cwd", cwd)]
                            + [(f"env {k}", v) for k, v in env.items()]):
        _check_template(where, template, known, problems)
    inherit = spec.get("inherit_env", list(DEFAULT_INHERITED_ENV))
    if not isinstance(inherit, list | tuple) or not all(isinstance(v, str) for v in inherit):
        problems.append("inherit_env must be a list of variable names")
        inherit = []
    resources = _parse_resources(spec.get("resources", {}), params, problems)
    grace = spec.get("grace", 10.0)
    if isinstance(grace, bool) or not isinstance(grace, int | float) or grace < 0:
        problems.append("grace must be a number of seconds >= 0")
        grace = 10.0
    wall = spec.get("wall_time")
    if wall is not None and (isinstance(wall, bool) or not isinstance(wall, int | float)
                             or wall <= 0):
        problems.append("wall_time must be a number of seconds > 0, or None")
        wall = None
    max_output = spec.get("max_output")
    if max_output is not None and (isinstance(max_output, bool) or not isinstance(
            max_output, int) or max_output <= 0):
        problems.append("max_output must be a number of bytes > 0, or None")
        max_output = None
    parser = spec.get("parser")
    from zephserver.launch.parsers import check_parser_spec

    problems += check_parser_spec(parser)
    controls = _parse_controls(spec.get("controls", {}), problems)
    allow = parse_access(spec.get("allow"), "allow", problems)
    run_as = spec.get("run_as")
    if run_as is not None and (not isinstance(run_as, str) or not run_as):
        problems.append("run_as must be an account name, '$user' or 'root'")
        run_as = None
    extra = {k: spec[k] for k in extra_keys if k in spec}
    executor = spec.get("executor", "local")
    if executor not in EXECUTORS:
        problems.append(f"executor must be one of {', '.join(EXECUTORS)}")
        executor = "local"
    if kind == "service" and executor != "local":
        problems.append("an agent process runs on its node (executor 'local')")
    if "slurm" in spec and executor != "slurm":
        problems.append("slurm options need executor 'slurm'")
    slurm = None
    if executor == "slurm":
        from zephserver.launch.slurm import parse_slurm_options

        slurm = parse_slurm_options(spec.get("slurm", {}), problems)
    nodes = spec.get("nodes")
    if nodes is not None and (not isinstance(nodes, list) or not nodes or not all(
            isinstance(n, str) and n for n in nodes)):
        problems.append("nodes must be a non-empty list of node names or labels")
        nodes = None
    requeue = spec.get("requeue", False)
    if not isinstance(requeue, bool) or (requeue and (kind != "batch" or executor != "local")):
        problems.append("requeue must be True or False, and only for a batch app run by its "
                        "node (executor 'local')")
        requeue = False
    session = None
    if kind == "session":
        session = parse_session_options(spec, [*argv, cwd, *env.values()], known, problems,
                                        remote=executor != "local")
    return App(name, kind, tuple(argv), cwd, dict(env), tuple(inherit),
               {k: str(v) for k, v in vars_.items()}, params, resources, float(grace),
               None if wall is None else float(wall), parser, controls,
               str(spec.get("description", "")), extra, session, max_output, allow, run_as,
               executor, slurm, None if nodes is None else tuple(nodes), requeue)


def _check_template(where: str, template: str, known: set[str], problems: list[str]) -> None:
    t = string.Template(template)
    if not t.is_valid():
        problems.append(f"{where}: bad template {template!r} (write $$ for a literal $)")
        return
    missing = sorted(set(t.get_identifiers()) - known)
    if missing:
        problems.append(f"{where}: ${missing[0]} is neither a param, a var nor one of "
                        f"{', '.join(GENERATED)}")


def _parse_param(name: Any, rule: Any, problems: list[str]) -> Param | None:
    if not isinstance(name, str) or not name.isidentifier():
        problems.append(f"param name {name!r} must be an identifier")
        return None
    if not isinstance(rule, dict):
        problems.append(f"param {name!r}: rule must be a dict")
        return None
    where = f"param {name!r}"
    unknown = sorted(set(rule) - {"type", "default", "required", "inList", "regexp", "min",
                                  "max", "root", "must_exist", "description"})
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(unknown)}")
    ptype = rule.get("type", "str")
    if ptype not in PARAM_TYPES:
        problems.append(f"{where}: type must be one of {', '.join(PARAM_TYPES)}")
        return None
    regexp = None
    if "regexp" in rule:
        try:
            regexp = re.compile(rule["regexp"])
        except (re.error, TypeError) as exc:
            problems.append(f"{where}: bad regexp: {exc}")
    in_list = rule.get("inList")
    if in_list is not None and not isinstance(in_list, list | tuple):
        problems.append(f"{where}: inList must be a list")
        in_list = None
    if ptype == "str" and regexp is None and in_list is None:
        problems.append(f"{where}: a str param needs an inList or regexp rule")
    root = rule.get("root")
    if ptype == "path" and (not isinstance(root, str) or not os.path.isabs(root)):
        problems.append(f"{where}: a path param needs an absolute root")
    problems.extend(f"{where}: {bound} must be a number" for bound in ("min", "max")
                    if bound in rule and (isinstance(rule[bound], bool)
                                          or not isinstance(rule[bound], int | float)))
    if ptype in ("int", "float") and ("min" not in rule or "max" not in rule):
        problems.append(f"{where}: a number param needs min and max")
    required = bool(rule.get("required", "default" not in rule))
    param = Param(name, ptype, rule.get("default"), required,
                  None if in_list is None else tuple(in_list), regexp,
                  rule.get("min"), rule.get("max"), root,
                  bool(rule.get("must_exist", True)), str(rule.get("description", "")))
    if not required and param.default is not None and ptype != "path":
        try:
            param.clean(param.default)
        except ParamError as exc:
            problems.append(f"{where}: default refused by its own rule: {exc}")
    return param


def _parse_resources(raw: Any, params: Mapping[str, Param], problems: list[str]) -> dict:
    if not isinstance(raw, dict):
        problems.append("resources must be a dict")
        return {}
    unknown = sorted(set(raw) - {"cores", "memory", "licenses"})
    if unknown:
        problems.append(f"resources: unknown key(s) {', '.join(unknown)}")

    def check(where: str, v: Any) -> None:
        if isinstance(v, str):
            p = params.get(v[1:]) if v.startswith("$") else None
            if p is None or p.type != "int":
                problems.append(f"resources {where}: {v!r} must be an int or $<int param>")
        elif isinstance(v, bool) or not isinstance(v, int) or v < 0:
            problems.append(f"resources {where}: must be an int >= 0 or $<int param>")

    for key in ("cores", "memory"):
        if key in raw:
            check(key, raw[key])
    licenses = raw.get("licenses", {})
    if not isinstance(licenses, dict):
        problems.append("resources licenses: must be a dict of name -> count")
    else:
        for lname, v in licenses.items():
            check(f"licenses {lname}", v)
    return dict(raw)


def _parse_controls(raw: Any, problems: list[str]) -> dict[str, Control]:
    if not isinstance(raw, dict):
        problems.append("controls must be a dict of name -> {file, payload}")
        return {}
    out = {}
    for cname, c in raw.items():
        if (not isinstance(c, dict) or not isinstance(c.get("file"), str)
                or not isinstance(c.get("payload", ""), str)):
            problems.append(f"control {cname!r}: needs a file name and a payload string")
            continue
        if os.path.basename(c["file"]) != c["file"] or c["file"] in ("", ".", ".."):
            problems.append(f"control {cname!r}: file must be a plain name in the job directory")
            continue
        out[cname] = Control(cname, c["file"], c.get("payload", ""),
                             str(c.get("description", "")))
    return out
