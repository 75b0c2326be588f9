"""The daemon's heap once started (zephserver/settled_heap.c, memory.settle): what the
start built stays where pymalloc packed it and can still grow, shrink and be freed; what
comes after is taken from glibc's heap, so a burst's memory is given back even where a
few of its objects survive, as it is not under pymalloc alone."""

import os

import pytest

from tests.support.daemon import fresh_interpreter
from zephserver import interpreter

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only"),
    pytest.mark.skipif(not os.path.exists(interpreter.SETTLED_HEAP),
                       reason="settled_heap.so is built by make"),
]

# Started as the daemon is (interpreter.start_lean, memory.one_arena); the start's own
# objects built, then settled, or not when the operator chose pymalloc. Then the start's
# objects change (lists grow from empty and from full, strings are resized, half of them
# go) and five bursts of 200,000 objects come, each leaving one in 1,000 alive; each is
# collected and given back. Prints the RSS after the start and after each burst (MiB).
PROBE = """
import gc, json, os, sys
from zephserver import interpreter
interpreter.start_lean()
from zephserver import memory
memory.one_arena()

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

start = [[i] * (i % 50) if i < 100_000 else [] for i in range(110_000)]  # (some empty)
words = ["x" * (i % 300) for i in range(50_000)]
gc.collect()
settled = memory.settle()
for i, items in enumerate(start):
    items.extend(range(i % 7 * 20))
for i in range(0, len(words), 2):
    words[i] += "y" * (i % 100)
del start[::2], words[1::2]
intact = (all(items == ([i] * (i % 50) if i < 100_000 else []) + list(range(i % 7 * 20))
              for i, items in zip(range(1, 110_000, 2), start))
          and all(w == "x" * (i % 300) + "y" * (i % 100)
                  for i, w in zip(range(0, 50_000, 2), words)))
gc.collect()
memory.give_back_now()
after_start = rss()
survivors, after_bursts = [], []
for _ in range(5):
    burst = [{"n": i, "items": [i, str(i)]} for i in range(200_000)]
    survivors.extend(burst[::1000])
    del burst
    gc.collect()
    memory.give_back_now()
    after_bursts.append(rss())
print(json.dumps({"settled": settled, "intact": intact, "start": after_start,
                  "bursts": after_bursts}))
"""


def run(**env: str) -> dict:
    return fresh_interpreter(PROBE, 50, **env)


def test_a_settled_heap_gives_a_bursts_memory_back_around_its_survivors():
    settled, unsettled = run(), run(PYTHONMALLOC="pymalloc")
    assert (settled["settled"], unsettled["settled"]) == (True, False)
    assert (settled["intact"], unsettled["intact"]) == (True, True)
    # 200 survivors a burst keep 200 pages of glibc's heap, not 200 arenas of pymalloc
    grown = settled["bursts"][-1] - settled["start"]
    kept = unsettled["bursts"][-1] - unsettled["start"]
    assert grown < 8, settled
    assert kept > 30, unsettled
