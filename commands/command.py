"""Send any control verb to the daemon: stop, status, services, restart-service NAME, help.

The verbs and their arguments are listed by "zephserver-command help"; the answer is
printed as text or JSON.
"""

import argparse
import json

from commands._client import NotRunning, connect
from zephserver.cli import error
from zephserver.errors import ExitCode, RpcCode, RpcError

EXIT_CODES = (ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE, ExitCode.NO_PERMISSION,
              ExitCode.BAD_SETTINGS, ExitCode.NOT_RUNNING)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("words", nargs="+", metavar="WORDS", help="verb and its arguments")


def run(args: argparse.Namespace) -> int:
    verb, *rest = args.words
    try:
        client = connect(args)
    except NotRunning as exc:
        return exc.code
    try:
        with client:
            result = client.call(verb, rest)
    except RpcError as exc:
        error(exc.message)
        usage = exc.code in (RpcCode.METHOD_NOT_FOUND, RpcCode.INVALID_PARAMS)
        return ExitCode.USAGE if usage else ExitCode.FAILED
    except OSError as exc:
        error(f"{verb} failed: {exc}")
        return ExitCode.FAILED
    print(result if isinstance(result, str) else json.dumps(result, indent=2))
    return ExitCode.OK


def main() -> int:
    from zephserver.cli import script_main
    return script_main("command")
