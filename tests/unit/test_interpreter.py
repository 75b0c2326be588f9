"""The daemon's interpreter (zephserver/interpreter.py): the start runs itself again
under pymalloc to settle (glibc's malloc where settled_heap.so is not built), without
docstrings or column positions, and what it set is not passed on to children."""

import os

import pytest

from tests.support.daemon import fresh_interpreter
from zephserver import interpreter

pytestmark = pytest.mark.timeout(30)
glibc_only = pytest.mark.skipif(not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only")
built = pytest.mark.skipif(not os.path.exists(interpreter.SETTLED_HEAP),
                           reason="settled_heap.so is built by make")

# What the re-executed process reports: whether pymalloc serves its objects (its
# statistics are empty otherwise) before and after memory.settle(), its environment and
# a child's, its flags and a child's.
PROBE = """
import json, os, subprocess, sys
from zephserver import interpreter
if os.environ.get("PROBE_NOT_BUILT"):
    interpreter.SETTLED_HEAP = "/nonexistent/settled_heap.so"
interpreter.start_lean()
if os.environ.get("PROBE_BROKEN"):  # (after the start chose pymalloc to settle)
    interpreter.SETTLED_HEAP = os.environ["PROBE_BROKEN"]
from zephserver import memory

def pymalloc():
    r, w = os.pipe()
    saved = os.dup(2); os.dup2(w, 2); os.close(w)
    sys._debugmallocstats()
    os.dup2(saved, 2); os.close(saved)
    os.set_blocking(r, False)
    try:
        return b"arenas" in os.read(r, 1 << 20)
    except BlockingIOError:
        return False
    finally:
        os.close(r)

def child(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True).stdout.split()

seen = {"allocator": os.environ.get("PYTHONMALLOC"),
        "tunables": os.environ.get("GLIBC_TUNABLES"), "pymalloc": pymalloc()}
memory.one_arena()  # (what the daemon's start does first: takes its settings back)
seen.update(mark=interpreter.MARK in os.environ, settled=memory.settle(),
            pymalloc_after=pymalloc(),
            child_env=child("import os; print(os.environ.get('PYTHONMALLOC'),"
                            " os.environ.get('GLIBC_TUNABLES'))"),
            optimize=sys.flags.optimize, ranges="no_debug_ranges" not in sys._xoptions,
            child_flags=child("import sys; print(sys.flags.optimize,"
                              " 'no_debug_ranges' not in sys._xoptions)"))
print(json.dumps(seen))
"""


def probe(**env: str) -> dict:
    return fresh_interpreter(PROBE, 20, **env)


LEAN = {"tunables": "glibc.malloc.tcache_count=0", "mark": False,
        "child_env": ["None", "None"], "optimize": 2, "ranges": False,
        "child_flags": ["0", "True"]}


@glibc_only
@built
def test_the_start_runs_again_under_pymalloc_and_settles_and_children_inherit_none_of_it():
    assert probe() == {**LEAN, "allocator": "pymalloc", "pymalloc": True, "settled": True,
                       "pymalloc_after": False}


@glibc_only
def test_without_the_library_the_start_runs_again_with_glibc_objects():
    assert probe(PROBE_NOT_BUILT="1") == {**LEAN, "allocator": "malloc", "pymalloc": False,
                                          "settled": False, "pymalloc_after": False}


@glibc_only
@built
def test_a_library_that_cannot_be_loaded_leaves_pymalloc_in_place(tmp_path):
    broken = tmp_path / "settled_heap.so"
    broken.write_bytes(b"not a shared library")
    seen = probe(PROBE_BROKEN=str(broken))
    assert (seen["allocator"], seen["settled"], seen["pymalloc_after"]) == (
        "pymalloc", False, True)


@glibc_only
def test_an_operators_optimization_level_is_kept():
    assert probe(PYTHONOPTIMIZE="0")["optimize"] == 0
    assert probe(PYTHONOPTIMIZE="1")["optimize"] == 1


@glibc_only
def test_an_operators_tunables_are_kept_beside_the_daemons_and_passed_on_alone():
    theirs = "glibc.malloc.arena_max=2"
    seen = probe(GLIBC_TUNABLES=theirs)
    assert (seen["tunables"], seen["child_env"]) == (
        f"{theirs}:glibc.malloc.tcache_count=0", ["None", theirs])
    own_cache = "glibc.malloc.tcache_count=3"
    seen = probe(GLIBC_TUNABLES=own_cache)
    assert (seen["tunables"], seen["child_env"]) == (own_cache, ["None", own_cache])


def test_an_operators_own_allocator_is_left_alone_and_passed_on():
    seen = probe(PYTHONMALLOC="pymalloc")
    assert (seen["allocator"], seen["pymalloc"], seen["settled"], seen["pymalloc_after"],
            seen["child_env"][0], seen["optimize"], seen["ranges"]) == (
        "pymalloc", True, False, True, "pymalloc", 0, True)
