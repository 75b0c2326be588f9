"""Command line: ``python main.py VERB``, ``python -m zephserver VERB`` or ``zephserver-VERB``.

Each verb is a thin module under the top-level ``commands`` package with
``add_arguments(parser)`` and ``run(args) -> exit code``.
"""

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from zephserver import __version__
from zephserver.config import Problem, Settings, check_settings, load_settings
from zephserver.errors import ExitCode, SettingsError

VERBS = ("start", "stop", "status", "command", "admin")


def verb_module(verb: str) -> ModuleType:
    return importlib.import_module(f"commands.{verb}")


def error(message: str, hint: str = "") -> None:
    """Print one ``zephserver: error: ...`` line to stderr."""
    print(f"zephserver: error: {message}" + (f" ({hint})" if hint else ""), file=sys.stderr)


def build_parser(verbs: Sequence[str] = VERBS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zephserver", description="zephserver daemon control")
    parser.add_argument("--version", action="version", version=f"zephserver {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--settings", metavar="FILE.py",
                        help="settings file (default $ZEPHSERVER_SETTINGS, then "
                             "settings/zephserversettings.py)")
    common.add_argument("--traceback", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in verbs:
        module = verb_module(verb)
        summary = (module.__doc__ or "").strip().split("\n")[0]
        p = sub.add_parser(verb, parents=[common], help=summary)
        module.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_verb(args)


def script_main(verb: str) -> int:
    """Entry point of the ``zephserver-<verb>`` console scripts."""
    parser = build_parser((verb,))
    args = parser.parse_args([verb, *sys.argv[1:]])
    return run_verb(args)


def run_verb(args: argparse.Namespace) -> int:
    try:
        return int(verb_module(args.verb).run(args))
    except SettingsError as exc:
        if args.traceback:
            raise
        report_problems(exc.problems)
        return ExitCode.BAD_SETTINGS
    except KeyboardInterrupt:
        return ExitCode.FAILED


def report_problems(problems: list[Problem]) -> None:
    for p in problems:
        level = "error" if p.is_error else "warning"
        print(f"zephserver: {level}: {p}", file=sys.stderr)


def settings_for(args: argparse.Namespace, check: bool = False) -> Settings:
    """Load the settings named on the command line; with ``check``, every problem at once.

    Raises:
        SettingsError: with every error found (warnings are printed and pass).
    """
    settings = load_settings(args.settings)
    if check:
        problems = check_settings(settings)
        errors = [p for p in problems if p.is_error]
        if errors:
            raise SettingsError(problems)
        report_problems(problems)
    return settings
