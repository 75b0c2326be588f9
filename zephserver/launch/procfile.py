"""Procfile parsing (https://devcenter.heroku.com/articles/procfile, smartmob RFC 1).

One process type per line, ``name: command``; blank lines and ``#`` comments are
skipped. The command is a shell command line written by the application's author, and
runs as ``/bin/sh -c <command>``: an ``env`` or ``VAR=value`` prefix works as in any
shell. Names are letters, digits, ``_`` and ``-``; a name given twice is an error.
"""

import re

NAME = re.compile(r"[A-Za-z0-9_-]+")
LINE = re.compile(r"^([A-Za-z0-9_-]+)\s*:\s*(.*\S)\s*$")


class ProcfileError(ValueError):
    pass


def parse_procfile(text: str) -> dict[str, str]:
    """Process type -> command line. ProcfileError names the first bad line."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = LINE.match(stripped)
        if m is None:
            raise ProcfileError(f"Procfile line {number}: expected 'name: command'")
        name, command = m.groups()
        if name in out:
            raise ProcfileError(f"Procfile line {number}: process type {name!r} given twice")
        out[name] = command
    if not out:
        raise ProcfileError("the Procfile declares no process type")
    return out
