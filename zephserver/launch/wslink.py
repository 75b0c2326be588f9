"""Reading a wslink / ParaViewWeb launcher configuration file (LAUNCHER_CONFIG) as is.

The file is JSON with ``//`` and ``/* */`` comments. Its apps become session apps
beside APPS: ``properties`` become each app's vars, ``configuration.sanitize`` its
params (a client value reaches a command only through a declared, checked param),
``resources`` its port ranges. Keys zephserver does not act on are reported, never
silently ignored.
"""

import functools
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

TOKENS = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.DOTALL)
CONFIGURATION_KEYS = {"host", "port", "endpoint", "content", "proxy_file", "sessionURL",
                      "timeout", "log_dir", "fields", "sanitize", "upload_dir",
                      "upload_port"}
TOP_KEYS = {"configuration", "resources", "properties", "apps", "sessionData"}
APP_KEYS = {"cmd", "ready_line", "cwd"}  # cwd: ours (wslink runs apps where it runs)


@dataclass
class LauncherConfig:
    apps: dict[str, dict] = field(default_factory=dict)  # in the APPS format
    endpoint: str | None = None
    proxy_file: str | None = None
    host: str | None = None
    port: int | None = None
    warnings: list[str] = field(default_factory=list)


def sanitize_to_params(rules: Any, where: str, problems: list[str]) -> dict[str, dict]:
    """wslink ``sanitize`` rules as APPS params (str with inList or regexp). Unlike
    wslink, a value that fails its rule is refused, never replaced by the default."""
    if not isinstance(rules, dict):
        problems.append(f"{where} must be an object of name -> rule")
        return {}
    params = {}
    for name, rule in rules.items():
        if not isinstance(rule, dict) or rule.get("type") not in ("inList", "regexp"):
            problems.append(f"{where}.{name}: type must be inList or regexp")
            continue
        param: dict[str, Any] = {"type": "str"}
        if rule["type"] == "inList":
            param["inList"] = rule.get("list")
        else:
            param["regexp"] = rule.get("regexp")
        if "default" in rule:
            param["default"] = rule["default"]
        params[name] = param
    return params


def strip_comments(text: str) -> str:
    """JSON text without comments (newlines kept, so error line numbers stay right)."""
    def keep(m: re.Match) -> str:
        s = m.group(0)
        return s if s.startswith('"') else "\n" * s.count("\n")
    return TOKENS.sub(keep, text)


def load_launcher_config(path: str) -> LauncherConfig:
    """The file's apps and settings. ValueError lists every problem found.

    The settings check, the apps, the endpoint and the proxy map all ask for it at start:
    the file is read and converted once per version of it (its mtime and size).
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    return _load(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int, size: int) -> LauncherConfig:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.loads(strip_comments(f.read()))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON (line {exc.lineno}: {exc.msg})") from None
    return convert(raw)


def convert(raw: Any) -> LauncherConfig:
    problems: list[str] = []
    out = LauncherConfig()
    if not isinstance(raw, dict):
        raise ValueError("must be a JSON object")
    out.warnings += [f"{k}: not a wslink launcher key, ignored" for k in sorted(set(raw)
                                                                               - TOP_KEYS)]
    conf = raw.get("configuration", {})
    if not isinstance(conf, dict):
        raise ValueError("configuration must be an object")
    for key in sorted(set(conf) - CONFIGURATION_KEYS):
        out.warnings.append(f"configuration.{key}: not a wslink launcher key, ignored")
    for key in ("content", "upload_dir", "upload_port"):
        if key in conf:
            out.warnings.append(f"configuration.{key}: not supported (serve static content "
                                "and uploads with your web server); ignored")
    out.host, out.port = conf.get("host"), conf.get("port")
    endpoint = conf.get("endpoint")
    if endpoint is not None:
        if not isinstance(endpoint, str) or not re.fullmatch(r"/?[A-Za-z0-9_.~-]+", endpoint):
            problems.append("configuration.endpoint must be a plain path segment")
        else:
            out.endpoint = "/" + endpoint.lstrip("/")
    out.proxy_file = conf.get("proxy_file")
    if out.proxy_file is not None and not isinstance(out.proxy_file, str):
        problems.append("configuration.proxy_file must be a path")
    params = sanitize_to_params(conf.get("sanitize") or {}, "configuration.sanitize",
                                problems)
    ports = raw.get("resources", [])
    if not isinstance(ports, list) or not ports:
        problems.append("resources must be a non-empty list of {host, port_range}")
    properties = raw.get("properties", {})
    if not isinstance(properties, dict):
        problems.append("properties must be an object")
        properties = {}
    session_data = raw.get("sessionData", {})
    apps = raw.get("apps", {})
    if not isinstance(apps, dict) or not apps:
        problems.append("apps must be a non-empty object")
        apps = {}
    log_dir = conf.get("log_dir")
    if log_dir is not None:
        log_dir = os.path.abspath(log_dir)
    for name, app in apps.items():
        if not isinstance(app, dict):
            problems.append(f"apps.{name} must be an object")
            continue
        for key in sorted(set(app) - APP_KEYS):
            out.warnings.append(f"apps.{name}.{key}: not a wslink launcher key, ignored")
        spec: dict[str, Any] = {
            "kind": "session", "argv": app.get("cmd"), "vars": properties,
            "params": params, "ports": ports, "resources": {"cores": 0},
            "description": f"from the launcher configuration ({name})"}
        given = {"ready_line": app.get("ready_line"), "cwd": app.get("cwd"),
                 "session_url": conf.get("sessionURL"),
                 "timeout": conf.get("timeout"), "fields": conf.get("fields"),
                 "session_data": session_data or None, "log_dir": log_dir}
        spec.update({k: v for k, v in given.items() if v is not None})
        out.apps[name] = spec
    if problems:
        raise ValueError("; ".join(problems))
    return out


def effective_endpoint(settings: object) -> str:
    """LAUNCHER_ENDPOINT, else the launcher file's endpoint, else /paraview."""
    endpoint = getattr(settings, "LAUNCHER_ENDPOINT", None)
    path = getattr(settings, "LAUNCHER_CONFIG", None)
    if endpoint is None and path is not None:
        endpoint = load_launcher_config(path).endpoint
    return endpoint or "/paraview"


def effective_cwd(settings: object) -> str | None:
    """Where the apps of LAUNCHER_CONFIG run (those that name no ``cwd``): LAUNCHER_CWD,
    else the launcher file's directory. wslink runs its apps in its own working
    directory, so real launcher files name their scripts by relative paths."""
    path = getattr(settings, "LAUNCHER_CONFIG", None)
    if path is None:
        return None
    cwd = getattr(settings, "LAUNCHER_CWD", None)
    return cwd if cwd is not None else os.path.dirname(os.path.abspath(path))


def effective_proxy_file(settings: object) -> str | None:
    """LAUNCHER_PROXY_FILE, else the launcher file's proxy_file."""
    proxy = getattr(settings, "LAUNCHER_PROXY_FILE", None)
    path = getattr(settings, "LAUNCHER_CONFIG", None)
    if proxy is None and path is not None:
        proxy = load_launcher_config(path).proxy_file
    return os.path.abspath(proxy) if proxy else None
