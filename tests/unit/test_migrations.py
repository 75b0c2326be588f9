"""The models and their migrations agree: a model changed without its migration would
leave every existing database behind it."""

import subprocess

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
