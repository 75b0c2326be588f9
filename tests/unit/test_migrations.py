"""The models and their migrations agree: a model changed without its migration would
leave every existing database behind it."""

import subprocess
import sys

import pytest

from tests.support.daemon import script

pytestmark = pytest.mark.timeout(60)


def test_no_model_change_lacks_its_migration(tmp_path):
    settings = tmp_path / "s.py"
    settings.write_text(f"DATA_DIR = {str(tmp_path)!r}\nRUN_AS = 'root'\n")
    done = subprocess.run([script("zephserver-admin"), "--settings", str(settings),
                           "makemigrations", "--check", "--dry-run", "zephweb"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No changes detected" in done.stdout


CHECK = """
import sys
from zephserver.config import load_settings
from zephserver.web.django_setup import prepare_database
prepare_database(load_settings(sys.argv[1]))
print(sorted(m for m in sys.modules if ".migrations.0" in m))
"""


def test_a_current_schema_is_checked_without_loading_the_migrations(tmp_path):
    """The start's check reads the migration files' names and the applied ones: once the
    schema is current, no migration module is loaded (the daemon would keep them)."""
    settings = tmp_path / "s.py"
    settings.write_text(f"DATA_DIR = {str(tmp_path)!r}\nRUN_AS = 'root'\n")

    def check():
        done = subprocess.run([sys.executable, "-c", CHECK, str(settings)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert "zephserver.web.migrations.0001_initial" in check()  # migrated: loaded
    assert check() == "[]"
