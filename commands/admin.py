"""Run a Django management command (migrate, createsuperuser, create_token USERNAME, ...).

The command runs against the daemon's own database (DATABASE_URL, else the SQLite
file under DATA_DIR); "zephserver-admin help" lists every command.
"""

import argparse

from zephserver.cli import settings_for
from zephserver.errors import ExitCode

EXIT_CODES = (ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE, ExitCode.BAD_SETTINGS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("management", nargs=argparse.REMAINDER, metavar="COMMAND",
                        help="the management command and its arguments")


def run(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    from django.core.management import execute_from_command_line

    from zephserver.web.django_setup import setup_django

    setup_django(settings)
    execute_from_command_line(["zephserver-admin", *(args.management or ["help"])])
    return 0


def main() -> int:
    from zephserver.cli import script_main
    return script_main("admin")
