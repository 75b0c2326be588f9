"""Command line: ``python main.py VERB``, ``python -m zephserver VERB`` or ``zephserver-VERB``.

Each verb is a thin module under the top-level ``commands`` package with
``add_arguments(parser)`` and ``run(args) -> exit code``.
"""

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from zephserver import __version__
from zephserver.config import Problem, Settings, check_settings, load_settings
from zephserver.errors import EXIT_CODE_MEANINGS, ExitCode, SettingsError

# Every console script, as a verb of ``zephserver VERB`` too.
VERBS = ("start", "stop", "status", "command", "admin", "client")
DESCRIPTION = ("zephserver launches, queues and watches work for authenticated users: "
               "batch jobs, interactive sessions and supervised processes, on one machine "
               "or a cluster. Each verb is also a console script, zephserver-VERB.")


def verb_module(verb: str) -> ModuleType:
    return importlib.import_module(f"commands.{verb}")


def error(message: str, hint: str = "") -> None:
    """Print one ``zephserver: error: ...`` line to stderr."""
    print(f"zephserver: error: {message}" + (f" ({hint})" if hint else ""), file=sys.stderr)


def exit_codes_epilog(codes: Sequence[int]) -> str:
    return "exit codes: " + "; ".join(f"{int(c)} {EXIT_CODE_MEANINGS[ExitCode(c)]}"
                                      for c in codes)


def _summary(module: ModuleType) -> tuple[str, str]:
    """The first line of a verb module's docstring, and the docstring as one paragraph
    (read from its source where the interpreter runs without docstrings: the daemon's,
    zephserver/interpreter.py)."""
    doc = (module.__doc__ or _source_docstring(module)).strip()
    return doc.split("\n")[0], " ".join(doc.split())


def _source_docstring(module: ModuleType) -> str:
    if sys.flags.optimize < 2 or not module.__file__:
        return ""
    import ast

    with open(module.__file__, encoding="utf-8") as f:
        return ast.get_docstring(ast.parse(f.read()), clean=False) or ""


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--settings", metavar="FILE.py",
                        help="settings file (default $ZEPHSERVER_SETTINGS, then "
                             "settings/zephserversettings.py)")
    common.add_argument("--traceback", action="store_true", help="show tracebacks of errors")
    return common


def _verb_parser(verb: str, **kwargs: object) -> argparse.ArgumentParser:
    """``zephserver-VERB``'s own parser (also a subparser of ``zephserver``)."""
    module = verb_module(verb)
    _, description = _summary(module)
    return argparse.ArgumentParser(
        description=description, epilog=exit_codes_epilog(module.EXIT_CODES),
        parents=[] if getattr(module, "STANDALONE", False) else [_common()], **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zephserver", description=DESCRIPTION,
                                     epilog=exit_codes_epilog(list(ExitCode)))
    parser.add_argument("--version", action="version", version=f"zephserver {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        module = verb_module(verb)
        summary, description = _summary(module)
        p = sub.add_parser(verb, help=summary, description=description,
                           epilog=exit_codes_epilog(module.EXIT_CODES),
                           parents=[] if getattr(module, "STANDALONE", False) else [_common()])
        p.add_argument("--version", action="version", version=f"zephserver {__version__}")
        module.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return quiet_on_broken_pipe(lambda: run_verb(build_parser().parse_args(argv)))


def script_main(verb: str) -> int:
    """Entry point of the ``zephserver-<verb>`` console scripts."""
    def run() -> int:
        parser = _verb_parser(verb, prog=f"zephserver-{verb}")
        parser.add_argument("--version", action="version", version=f"zephserver {__version__}")
        verb_module(verb).add_arguments(parser)
        args = parser.parse_args(sys.argv[1:])
        args.verb = verb
        return run_verb(args)
    return quiet_on_broken_pipe(run)


def quiet_on_broken_pipe(run: Callable[[], int]) -> int:
    """Output piped into ``head`` ends quietly: the reader left, there is nobody to tell."""
    try:
        try:
            return run()
        finally:  # also after --help's SystemExit: the buffer is written here, not at exit
            sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null first (the
        # documented recipe), or that flush prints the same traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.OK


def run_verb(args: argparse.Namespace) -> int:
    try:
        return int(verb_module(args.verb).run(args))
    except SettingsError as exc:
        if getattr(args, "traceback", False):
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
