"""Exception tree and the stable numeric codes users and scripts depend on."""

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of the CLI (LSB style, as supervisorctl)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    NOT_RUNNING_STATUS = 3
    NO_PERMISSION = 4
    DEGRADED = 5  # running, but a service is not RUNNING or the database does not answer
    BAD_SETTINGS = 6
    NOT_RUNNING = 7


EXIT_CODE_MEANINGS = {
    ExitCode.OK: "ok",
    ExitCode.FAILED: "failed",
    ExitCode.USAGE: "bad usage",
    ExitCode.NOT_RUNNING_STATUS: "not running",
    ExitCode.NO_PERMISSION: "no permission (lock, socket or control socket)",
    ExitCode.DEGRADED: "running but degraded (a service not RUNNING, or the database "
                       "not answering)",
    ExitCode.BAD_SETTINGS: "bad settings (every problem is listed)",
    ExitCode.NOT_RUNNING: "not running",
}


class RpcCode(IntEnum):
    """JSON-RPC 2.0 error codes; never renumbered."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    SHUTTING_DOWN = -32000
    NOT_AUTHENTICATED = -32001
    FORBIDDEN = -32002
    SERVICE_UNAVAILABLE = -32003
    QUEUE_FULL = -32004
    NOT_FOUND = -32005
    CONFLICT = -32006
    NODE_UNREACHABLE = -32007  # the node that runs it did not answer (or is down)
    TASK_FAILED = -32010
    TASK_CANCELLED = -32011
    TASK_TIMEOUT = -32012


class ZephError(Exception):
    """Base of every error zephserver raises on purpose."""


class SettingsError(ZephError):
    """The settings file could not be loaded or is invalid; carries every problem found."""

    def __init__(self, problems: list) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


class LockError(ZephError):
    """The lock file could not be taken for a reason other than a live daemon."""


class AlreadyRunning(ZephError):
    """A live daemon already holds the lock."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"already running (pid {pid})")
        self.pid = pid


class HaltServer(ZephError):
    """Stop the daemon with a reason and an exit code (gunicorn's HaltServer)."""

    def __init__(self, reason: str, exit_code: int = ExitCode.FAILED) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code


class IllegalTransition(ZephError):
    """A state change that the transition table does not allow."""


class ServiceUnavailable(ZephError):
    """The named service does not exist or is not RUNNING."""


class RpcError(ZephError):
    """An error with a JSON-RPC code, sent to the client as is."""

    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(message)
        self.code = int(code)
        self.message = message
        self.data = data

    def to_json(self) -> dict:
        """The JSON-RPC ``error`` member."""
        error: dict = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error
