"""What a create-process request must come with, checked before anything is fetched: a
caller who may create processes (-32002 otherwise) and smartmob-agent's fields (-32602
naming the field for anything else)."""

import re
from typing import Any

from zephserver.errors import RpcCode, RpcError
from zephserver.launch.access import Access, allowed
from zephserver.launch.accounts import OWNER
from zephserver.launch.sources import check_url

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PROCESS_TYPE = re.compile(r"[A-Za-z0-9_-]+")
FIELDS = frozenset({"app", "node", "process_type", "source_url", "env", "max_restarts",
                    "runs_on"})


def _bad(message: str, field: str | None = None) -> RpcError:
    return RpcError(RpcCode.INVALID_PARAMS, message, {"field": field} if field else None)


def check_creator(user: Any, allow: Access | None, run_as: str | None,
                  user_map: dict[str, str]) -> None:
    """-32002 unless ``user`` may create agent processes (AGENT_ALLOW) and has an account
    for them to run as (RUN_AS '$user': USER_MAP)."""
    if not allowed(allow, user):
        raise RpcError(RpcCode.FORBIDDEN, f"{user.username} may not create agent processes "
                       "(AGENT_ALLOW)")
    if run_as == OWNER and user.username not in user_map:
        raise RpcError(RpcCode.FORBIDDEN, f"agent processes run as their user's own Unix "
                       f"account, and {user.username} has none (USER_MAP)")


def check_create_request(body: Any, file_roots: list[str],
                         source_allow: list[str] | None) -> dict:
    """The request's fields, checked (``source_allow``: AGENT_SOURCE_ALLOW)."""
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    for key in ("app", "node", "process_type", "source_url"):
        if key not in body:
            raise _bad(f"missing field {key!r}", key)
        if not isinstance(body[key], str):
            raise _bad(f"{key!r} must be a string", key)
    for key in ("app", "node"):
        if not NAME.fullmatch(body[key]):
            raise _bad(f"{key!r} must be 1-64 letters, digits, '_', '.', '-'", key)
    if not PROCESS_TYPE.fullmatch(body["process_type"]):
        raise _bad("'process_type' must be a Procfile name", "process_type")
    why = check_url(body["source_url"], file_roots, source_allow)
    if why:
        raise _bad(why, "source_url")
    env = body.get("env") or {}
    if not isinstance(env, dict) or not all(
            isinstance(k, str) and ENV_NAME.fullmatch(k) and isinstance(v, str)
            and "\0" not in v for k, v in env.items()):
        raise _bad("'env' must map variable names to strings", "env")
    max_restarts = body.get("max_restarts")
    if max_restarts is not None and (isinstance(max_restarts, bool) or not isinstance(
            max_restarts, int) or max_restarts < 1):
        raise _bad("'max_restarts' must be an integer >= 1", "max_restarts")
    runs_on = body.get("runs_on")
    if runs_on is not None and (not isinstance(runs_on, str) or not NAME.fullmatch(runs_on)):
        raise _bad("'runs_on' must be a node's name", "runs_on")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise _bad(f"unknown field {unknown[0]!r}", unknown[0])
    return {"app": body["app"], "node": body["node"], "process_type": body["process_type"],
            "source_url": body["source_url"], "env": env, "max_restarts": max_restarts,
            "runs_on": runs_on}
