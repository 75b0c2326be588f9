"""Start the daemon (foreground unless --daemon)."""

import argparse

from zephserver.cli import settings_for
from zephserver.infra.bootstrap import Daemon


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--daemon", action="store_true",
                        help="detach; return once the daemon is ready")


def run(args: argparse.Namespace) -> int:
    settings = settings_for(args, check=True)
    from zephserver.web.django_setup import prepare_database

    return Daemon(settings, prepare=prepare_database).run(daemonize=args.daemon)


def main() -> int:
    from zephserver.cli import script_main
    return script_main("start")
