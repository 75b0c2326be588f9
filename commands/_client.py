"""What the client commands share: reaching the daemon's control socket."""

import argparse
import errno

from zephserver.cli import error, settings_for
from zephserver.errors import ExitCode
from zephserver.infra.control_protocol import ControlClient


class NotRunning(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def connect(args: argparse.Namespace, timeout: float = 10.0,
            not_running_code: int = ExitCode.NOT_RUNNING) -> ControlClient:
    """A connected client, or NotRunning after printing why."""
    settings = settings_for(args)
    path = settings.CONFIGURATION_NETWORK_INTERFACE
    try:
        return ControlClient(path, timeout).connect()
    except PermissionError:
        error(f"no permission to use the control socket {path}", "run as the daemon's user")
        raise NotRunning(ExitCode.NO_PERMISSION) from None
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
            print(f"zephserver: not running (no daemon answers on {path})")
            raise NotRunning(not_running_code) from None
        error(f"cannot reach the daemon on {path}: {exc.strerror}")
        raise NotRunning(ExitCode.FAILED) from None
