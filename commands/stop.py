"""Stop the daemon and wait until it has exited.

Asks the daemon through its control socket to stop gracefully (services in reverse
order, jobs left running to be re-adopted at the next start) and waits until its
process is gone, at most --timeout seconds.
"""

import argparse
import os
import select
import time

from commands._client import NotRunning, connect
from zephserver.cli import error
from zephserver.errors import ExitCode, RpcError
from zephserver.lock import pid_alive

EXIT_CODES = (ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE, ExitCode.NO_PERMISSION,
              ExitCode.BAD_SETTINGS, ExitCode.NOT_RUNNING)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="seconds to wait for the daemon to exit (default 60)")


def wait_for_exit(pid: int, timeout: float) -> bool:
    """True once ``pid`` has exited; woken by a pidfd, not a polling loop, where possible."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:
        deadline = time.monotonic() + timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def run(args: argparse.Namespace) -> int:
    try:
        client = connect(args)
    except NotRunning as exc:
        return exc.code
    try:
        with client:
            reply = client.call("stop")
    except (RpcError, OSError) as exc:
        error(f"stop failed: {exc}")
        return ExitCode.FAILED
    pid = reply["pid"]
    if not wait_for_exit(pid, args.timeout):
        error(f"the daemon (pid {pid}) has not exited after {args.timeout:.0f}s",
              "see its log; zephserver-stop again or kill it")
        return ExitCode.FAILED
    print(f"zephserver stopped (pid {pid})")
    return ExitCode.OK


def main() -> int:
    from zephserver.cli import script_main
    return script_main("stop")
