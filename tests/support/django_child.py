"""Run a script against a real database of its own, in a child process (Django is set
up once per process, and the tests' own process never sets it up)."""

import subprocess
import sys
from pathlib import Path

PROLOGUE = """
import sys
from zephserver.config import load_settings
from zephserver.web.django_setup import prepare_database
prepare_database(load_settings(sys.argv[1]))
"""


def run_with_django(folder: Path, script: str, timeout: float = 60,
                    database_url: str | None = None) -> list[str]:
    """``script`` run once the database (SQLite under ``folder``, or ``database_url``) is
    migrated: the lines it printed (it must succeed)."""
    settings = folder / "s.py"
    settings.write_text(f"DATA_DIR = {str(folder)!r}\nRUN_AS = 'root'\n"
                        f"DATABASE_URL = {database_url!r}\n")
    if database_url is not None:  # (a shared database is migrated on purpose, never at start)
        from tests.support.web import admin

        admin(settings, "migrate", "-v0")
    done = subprocess.run([sys.executable, "-c", PROLOGUE + script, str(settings)],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()
