"""The control verbs: one declaration each (name, arguments, doc, read-only), then the code.

Positional params are mapped onto the declared argument names, so
``zephserver-command restart-service router`` sends ``["router"]``.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from zephserver.errors import RpcCode, RpcError, ServiceUnavailable


class Daemon(Protocol):
    """What the verbs use of the daemon (``infra.bootstrap.Daemon``)."""

    pid: int
    stopping: bool
    manager: Any  # the ServiceManager

    def status(self) -> dict: ...

    def request_stop(self, why: str) -> None: ...

    def reload(self) -> dict: ...


@dataclass(frozen=True)
class ControlCommand:
    name: str
    args: tuple[str, ...]
    doc: str
    read_only: bool
    run: Callable[["Daemon", dict], Any]


COMMANDS: dict[str, ControlCommand] = {}


def command(name: str, doc: str, args: tuple[str, ...] = (), read_only: bool = True
            ) -> Callable[[Callable[["Daemon", dict], Any]], Callable[["Daemon", dict], Any]]:
    """Declare a verb. ``doc`` is its help line, what ``help`` answers: not the function's
    docstring, which the daemon runs without (zephserver/interpreter.py)."""
    def register(func: Callable[["Daemon", dict], Any]) -> Callable[["Daemon", dict], Any]:
        COMMANDS[name] = ControlCommand(name, args, doc, read_only, func)
        return func
    return register


def dispatch(daemon: "Daemon", method: str, params: Any) -> Any:
    """Validate ``params`` against the verb's declaration and run it."""
    cmd = COMMANDS.get(method)
    if cmd is None:
        raise RpcError(RpcCode.METHOD_NOT_FOUND,
                       f"unknown command {method!r} (try 'help')", {"method": method})
    if isinstance(params, list):
        if len(params) > len(cmd.args):
            raise RpcError(RpcCode.INVALID_PARAMS,
                           f"{method} takes {len(cmd.args)} argument(s): {' '.join(cmd.args)}")
        params = dict(zip(cmd.args, params, strict=False))
    missing = [a for a in cmd.args if a not in params]
    extra = [k for k in params if k not in cmd.args]
    if missing or extra:
        what = f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(extra)}"
        raise RpcError(RpcCode.INVALID_PARAMS, f"{method}: {what} (usage: {method} "
                       f"{' '.join(a.upper() for a in cmd.args)})".replace(" )", ")"))
    if daemon.stopping and not cmd.read_only:
        raise RpcError(RpcCode.SHUTTING_DOWN, "the daemon is shutting down")
    if not daemon.booted.is_set() and not cmd.read_only:
        raise RpcError(RpcCode.SERVICE_UNAVAILABLE, f"{method}: the daemon is still booting "
                       "(try again once zephserver-status no longer says so)")
    return cmd.run(daemon, params)


@command("ping", "Answer 'pong' (is the daemon there?).")
def ping(daemon: "Daemon", params: dict) -> str:
    return "pong"


@command("help", "List the control commands with their arguments.")
def help_(daemon: "Daemon", params: dict) -> list[dict]:
    return [{"name": c.name, "args": list(c.args), "doc": c.doc} for c in COMMANDS.values()]


@command("status", "The daemon's pid, uptime, node, and each service's state and restart count.")
def status(daemon: "Daemon", params: dict) -> dict:
    return daemon.status()


@command("services", "Each service's state and restart count.")
def services(daemon: "Daemon", params: dict) -> list[dict]:
    return daemon.manager.status() if daemon.manager is not None else []


# read-only: repeatable while stopping (it answers, it does not refuse)
@command("stop", "Stop the daemon gracefully (returns at once; the daemon exits soon after).",
         read_only=True)
def stop(daemon: "Daemon", params: dict) -> dict:
    daemon.request_stop("control command")
    return {"pid": daemon.pid, "stopping": True}


@command("reload", "Re-read the settings file and hand it to the services that can take it "
         "(also SIGHUP).", read_only=False)
def reload(daemon: "Daemon", params: dict) -> dict:
    return daemon.reload()


@command("restart-service", "Stop one service and start it again with its failure count "
         "reset (also from FATAL).", args=("name",), read_only=False)
def restart_service(daemon: "Daemon", params: dict) -> dict:
    name = params["name"]
    if not isinstance(name, str):
        raise RpcError(RpcCode.INVALID_PARAMS, "restart-service: NAME must be a string")
    try:
        return daemon.manager.restart_service(name)
    except ServiceUnavailable as exc:
        raise RpcError(RpcCode.NOT_FOUND, str(exc), {"name": name}) from None
    except TimeoutError as exc:
        raise RpcError(RpcCode.CONFLICT, str(exc), {"name": name}) from None
