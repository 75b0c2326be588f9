"""The daemon's Python objects come from glibc (zephserver/allocator.py): the start runs
itself again under PYTHONMALLOC=malloc, and what it set is not passed on to children."""

import os
import subprocess
import sys

import pytest

from tests.support.daemon import REPO

pytestmark = pytest.mark.timeout(30)

# What the re-executed process reports: its allocator (pymalloc's statistics are empty
# under malloc), its environment, and a child's.
PROBE = """
import os, subprocess, sys
from zephserver import allocator
allocator.use_glibc()
r, w = os.pipe()
saved = os.dup(2); os.dup2(w, 2); os.close(w)
sys._debugmallocstats()
os.dup2(saved, 2); os.close(saved)
os.set_blocking(r, False)
try:
    stats = os.read(r, 1 << 20)
except BlockingIOError:
    stats = b""
pymalloc = b"arenas" in stats
seen = os.environ.get("PYTHONMALLOC")
allocator.keep_from_children()
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('PYTHONMALLOC'))"],
                       capture_output=True, text=True).stdout.strip()
print(pymalloc, seen, child, allocator.MARK in os.environ)
"""


def probe(**env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONMALLOC"}
    clean.update(env, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env=clean, timeout=20, check=True)
    return done.stdout.split()


@pytest.mark.skipif(not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only")
def test_the_start_runs_again_with_glibc_objects_and_children_do_not_inherit_it():
    assert probe() == ["False", "malloc", "None", "False"]


def test_an_operators_own_allocator_is_left_alone_and_passed_on():
    assert probe(PYTHONMALLOC="pymalloc") == ["True", "pymalloc", "pymalloc", "False"]
