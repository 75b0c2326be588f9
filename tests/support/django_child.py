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


def run_with_django(folder: Path, script: str, timeout: float = 60) -> list[str]:
    """``script`` run once the SQLite database under ``folder`` is migrated: the lines it
    printed (it must succeed)."""
    settings = folder / "s.py"
    settings.write_text(f"DATA_DIR = {str(folder)!r}\nRUN_AS = 'root'\n")
    done = subprocess.run([sys.executable, "-c", PROLOGUE + script, str(settings)],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()
