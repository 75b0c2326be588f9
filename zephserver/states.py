"""Service lifecycle states and the one table of allowed transitions."""

from enum import StrEnum

from zephserver.errors import IllegalTransition


class ServiceState(StrEnum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    FATAL = "FATAL"


S = ServiceState

SERVICE_TRANSITIONS: dict[ServiceState, frozenset[ServiceState]] = {
    # STOPPED -> STARTING: the manager starts the service (boot or restart-service).
    S.STOPPED: frozenset({S.STARTING}),
    # STARTING -> RUNNING: main() entered (or ready() called); -> BACKOFF/FATAL: crashed early.
    S.STARTING: frozenset({S.RUNNING, S.BACKOFF, S.FATAL, S.STOPPING}),
    # RUNNING -> BACKOFF/FATAL: main() raised or returned while not stopping.
    S.RUNNING: frozenset({S.BACKOFF, S.FATAL, S.STOPPING}),
    # BACKOFF -> STARTING: the delay passed; -> STOPPED: stopped while waiting.
    S.BACKOFF: frozenset({S.STARTING, S.STOPPED}),
    # STOPPING -> STOPPED: main() returned after disable().
    S.STOPPING: frozenset({S.STOPPED}),
    # FATAL -> STARTING: an operator asked for restart-service.
    S.FATAL: frozenset({S.STARTING}),
}


def check_service_transition(old: ServiceState, new: ServiceState) -> None:
    """Raise IllegalTransition unless ``old -> new`` is in SERVICE_TRANSITIONS."""
    if new not in SERVICE_TRANSITIONS[old]:
        raise IllegalTransition(f"service state {old} -> {new} is not allowed")
