"""Start the daemon (foreground unless --daemon).

Takes the lock, checks the settings (every problem at once), prepares the database
(the embedded SQLite is migrated, with a copy kept aside), starts every service and
prints one line, "zephserver ready on URL", once they run; with --daemon it detaches and
returns then. A live daemon already holding the lock is reported and left alone.
"""

import argparse
import sys

# The daemon colours no terminal: tornado's log module would load curses and ncurses
# (0.7 MiB of the daemon's memory) only to ask whether it could.
sys.modules.setdefault("curses", None)

from zephserver.errors import ExitCode  # noqa: E402
from zephserver.interpreter import start_lean  # noqa: E402

EXIT_CODES = (ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE, ExitCode.NO_PERMISSION,
              ExitCode.DEGRADED, ExitCode.BAD_SETTINGS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--daemon", action="store_true",
                        help="detach; return once the daemon is ready")


def run(args: argparse.Namespace) -> int:
    start_lean()
    from zephserver.cli import settings_for
    from zephserver.infra.bootstrap import Daemon
    from zephserver.web.django_setup import prepare_database

    settings = settings_for(args, check=True)
    return Daemon(settings, prepare=prepare_database).run(daemonize=args.daemon)


def main() -> int:
    start_lean()  # before the imports, which it would pay twice
    from zephserver.cli import script_main
    return script_main("start")
