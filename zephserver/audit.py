"""One greppable line for every act that changes what runs or who may: a launch, a
cancel, a delete, a token made or revoked.

``grep 'audit:' zephserver.log`` lists them, each as
``audit: <action> by <user>: <what> from <where>``; in JSON logs the same line carries
``audit``, ``user``, ``target`` and ``origin`` fields. Where is the client's address and
connection (``127.0.0.1 ws n1-17``, ``10.0.0.5 POST /paraview``), from the request the
calling thread serves; a node serving another node's request says so.
"""

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from zephserver import logs

log = logging.getLogger("zephserver.audit")


def audit(action: str, user: Any, target: str, origin: str | None = None) -> None:
    """``user``: a UserInfo or a user name."""
    name = getattr(user, "username", user) or "-"
    where = origin or logs.current_origin() or "the daemon"
    log.info("audit: %s by %s: %s from %s", action, name, target, where,
             extra={"audit": action, "user": name, "target": target, "origin": where})


def audit_when_done(future: Future, action: str, user: Any,
                    target: Callable[[Any], str]) -> Future:
    """Audit ``action`` once ``future`` succeeds (``target(result)`` names what it made),
    with the origin of the request that asked, captured now."""
    where = logs.current_origin() or "the daemon"

    def done(f: Future) -> None:
        if not f.cancelled() and f.exception() is None:
            audit(action, user, target(f.result()), where)
    future.add_done_callback(done)
    return future
