"""The daemon's interpreter (zephserver/interpreter.py): the start runs itself again with
its Python objects from glibc and without docstrings, and what it set is not passed on
to children."""

import os
import subprocess
import sys

import pytest

from tests.support.daemon import REPO

pytestmark = pytest.mark.timeout(30)

# What the re-executed process reports: its allocator (pymalloc's statistics are empty
# under malloc), its environment, and a child's; then its optimization level and a
# child's.
PROBE = """
import os, subprocess, sys
from zephserver import interpreter
interpreter.start_lean()
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
tunables = os.environ.get("GLIBC_TUNABLES")
interpreter.keep_from_children()
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('PYTHONMALLOC'),"
                        " os.environ.get('GLIBC_TUNABLES'))"],
                       capture_output=True, text=True).stdout.strip()
print(pymalloc, seen, tunables, child, interpreter.MARK in os.environ)
child = subprocess.run([sys.executable, "-c", "import sys; print(sys.flags.optimize)"],
                       capture_output=True, text=True).stdout.strip()
print(sys.flags.optimize, child)
"""


def probe(**env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("PYTHONMALLOC", "GLIBC_TUNABLES", "PYTHONOPTIMIZE")}
    clean.update(env, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env=clean, timeout=20, check=True)
    return done.stdout.split()


@pytest.mark.skipif(not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only")
def test_the_start_runs_again_with_glibc_objects_and_children_do_not_inherit_it():
    assert probe() == ["False", "malloc", "glibc.malloc.tcache_count=0", "None", "None",
                       "False", "2", "0"]


@pytest.mark.skipif(not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only")
def test_an_operators_optimization_level_is_kept():
    assert probe(PYTHONOPTIMIZE="0")[-2:] == ["0", "0"]
    assert probe(PYTHONOPTIMIZE="1")[-2:] == ["1", "1"]


@pytest.mark.skipif(not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only")
def test_an_operators_tunables_are_kept_beside_the_daemons_and_passed_on_alone():
    theirs = "glibc.malloc.arena_max=2"
    assert probe(GLIBC_TUNABLES=theirs) == [
        "False", "malloc", f"{theirs}:glibc.malloc.tcache_count=0", "None", theirs, "False",
        "2", "0"]
    own_cache = "glibc.malloc.tcache_count=3"
    assert probe(GLIBC_TUNABLES=own_cache) == [
        "False", "malloc", own_cache, "None", own_cache, "False", "2", "0"]


def test_an_operators_own_allocator_is_left_alone_and_passed_on():
    assert probe(PYTHONMALLOC="pymalloc") == ["True", "pymalloc", "None", "pymalloc", "None",
                                              "False", "0", "0"]
