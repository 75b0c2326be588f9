"""Deferred imports (zephserver/deferred_imports.py): a stand-in until the first use,
one import whichever thread uses it first, the module's own answers after; what is not
installed is not deferred. Django set up as the daemon sets it up does without sqlparse
until its SQL is split, and then has it."""

import subprocess
import sys
import threading

import pytest

from tests.support.daemon import REPO
from zephserver import deferred_imports

pytestmark = pytest.mark.timeout(30)

MODULE = """
import sys, time
sys.zs_deferred_loads = getattr(sys, "zs_deferred_loads", 0) + 1
time.sleep(0.05)  # a slow import: threads that use it meanwhile wait for this one
ANSWER = 42
def double(n):
    return 2 * n
"""


@pytest.fixture
def deferred(tmp_path, monkeypatch):
    (tmp_path / "zs_deferred_probe.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(deferred_imports, "DEFERRED", ("zs_deferred_probe", "zs_not_installed"))
    monkeypatch.setattr(sys, "zs_deferred_loads", 0, raising=False)
    yield
    for name in ("zs_deferred_probe", "zs_not_installed"):
        sys.modules.pop(name, None)
        deferred_imports._loaded.pop(name, None)


def test_a_deferred_module_is_imported_by_its_first_use_once(deferred):
    deferred_imports.defer()
    import zs_deferred_probe

    assert (sys.zs_deferred_loads, deferred_imports.loaded("zs_deferred_probe")) == (0, False)
    answers = []
    users = [threading.Thread(target=lambda: answers.append(zs_deferred_probe.double(21)))
             for _ in range(8)]
    for user in users:
        user.start()
    for user in users:
        user.join(10)
    from zs_deferred_probe import ANSWER

    assert (answers, ANSWER, sys.zs_deferred_loads) == ([42] * 8, 42, 1)
    assert deferred_imports.loaded("zs_deferred_probe")
    assert sys.modules["zs_deferred_probe"] is not zs_deferred_probe  # (the module itself)


def test_a_module_not_installed_is_not_deferred(deferred):
    deferred_imports.defer()
    with pytest.raises(ImportError):
        import zs_not_installed  # noqa: F401


PROBE = """
import tempfile
from zephserver import deferred_imports
from zephserver.config import settings_from_values
from zephserver.web.django_setup import setup_django
setup_django(settings_from_values(DATA_DIR=tempfile.mkdtemp()))
from django.db import connection
before = deferred_imports.loaded("sqlparse")
print(before, connection.ops.prepare_sql_script("SELECT 1; -- one\\nSELECT 2;"),
      deferred_imports.loaded("sqlparse"))
"""


def test_django_does_without_sqlparse_until_it_splits_sql():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          cwd=REPO, timeout=25)
    assert done.stdout.strip() == "False ['SELECT 1;', 'SELECT 2;'] True", done.stderr[-2000:]
