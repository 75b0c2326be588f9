"""Another checkout's launch path (A, before) beside this one's (B, after), in one run
(issue 22: each row before and after, A/B in the same run). On a shared machine a
figure drifts by 2x in minutes; here the two daemons take turns (ABBA...), each turn
beside its own floor measured just before, so a difference between them is not the
machine's.

    python bench/ab_jobs.py OTHER_CHECKOUT     (ROUNDS=6; a `git worktree add` of the
                                                revision to compare, sharing this .venv)

Each round, for each daemon: 40 jobs one at a time (submit -> RUNNING, p50, vs
posix_spawn+wait of /bin/true), 3 bursts of 100 (median, each vs the 100 posix_spawns
just before it), 400 short jobs released from the queue (vs sequential Popen). Prints
each round's ratios and, per figure, the median ratio of each checkout and the median of
B / A over the rounds.
"""

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path

from _common import REPO, daemon_running, median, until_idle
from bench_jobs import (
    bench_settings,
    burst,
    floor_popen_rate,
    floor_spawn_many,
    floor_spawn_ms,
    lone_starts,
    queue_release,
)

import tests.support.daemon as support
from tests.support.daemon import short_tmpdir
from tests.support.web import Ws

ROUNDS = int(os.environ.get("ROUNDS", "6"))
LONE, BURSTS, SHORT = 40, 3, 400
FIGURES = ("lone start", "100 at once", "short jobs")  # (ratios to the floor; the last: rate)


class Side:
    """One checkout's daemon."""

    def __init__(self, name: str, checkout: Path) -> None:
        self.name, self.checkout = name, checkout
        self.ratios: dict[str, list[float]] = {f: [] for f in FIGURES}

    def start(self, stack: contextlib.ExitStack) -> None:
        """Its daemon, stopped (and its folder removed) when ``stack`` closes."""
        self.work = short_tmpdir(f"zab{self.name}")
        support.REPO = self.checkout  # (the daemon's PYTHONPATH and working directory)
        try:
            self.daemon, self.token = stack.enter_context(
                daemon_running(bench_settings(self.work, str(self.work / "jobs"))))
        finally:
            support.REPO = REPO
        self.pid = json.loads(self.daemon.cli("zephserver-status", "--json").stdout)["pid"]

    async def round(self, ws: Ws, others: list[int]) -> None:
        for pid in [self.pid, *others]:  # (the last turn's cancels and exits done)
            await until_idle(pid, deadline=5)
        floor = median(floor_spawn_ms(100))
        self.ratios["lone start"].append(median(await lone_starts(ws, LONE)) / floor)
        bursts = []
        for _ in range(BURSTS):
            await until_idle(self.pid, deadline=5)
            floor = floor_spawn_many()
            took, _, _ = await burst(ws, self.pid, str(self.work))
            bursts.append(took / floor)
        self.ratios["100 at once"].append(median(bursts))
        await until_idle(self.pid, deadline=5)
        floor = floor_popen_rate(300)
        rate, _, _ = await queue_release(ws, self.pid, str(self.work), SHORT)
        self.ratios["short jobs"].append(rate / floor)


async def compare(a: Side, b: Side) -> None:
    sockets = {}
    for side in (a, b):
        sockets[side.name] = await Ws.connect(side.daemon.url, token=side.token)
        await sockets[side.name].call("jobs.subscribe", {})
    for r in range(ROUNDS):
        order = (a, b) if r % 2 == 0 else (b, a)
        for side in order:
            other = b if side is a else a
            await side.round(sockets[side.name], [other.pid])
        print(f"round {r + 1}: " + " | ".join(
            f"{f} A {a.ratios[f][-1]:.2f} B {b.ratios[f][-1]:.2f}" for f in FIGURES),
            flush=True)
    for ws in sockets.values():
        await ws.aclose()
    goals = {"lone start": "at most 5x the floor", "100 at once": "at most 2x the floor",
             "short jobs": "at least 0.60 of Popen"}
    for f in FIGURES:
        paired = [y / x for x, y in zip(a.ratios[f], b.ratios[f], strict=True)]
        print(f"{f}: A ({a.checkout}) median {median(a.ratios[f]):.2f} | B ({b.checkout}) "
              f"median {median(b.ratios[f]):.2f} | B/A median of the rounds "
              f"{median(paired):.2f} | goal {goals[f]}", flush=True)


def main() -> None:
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "zephserver").is_dir():
        sys.exit("usage: ab_jobs.py OTHER_CHECKOUT (a directory holding zephserver/)")
    os.chdir(REPO)
    a, b = Side("A", Path(sys.argv[1]).resolve()), Side("B", REPO)
    with contextlib.ExitStack() as stack:
        a.start(stack)
        b.start(stack)
        asyncio.run(compare(a, b))


if __name__ == "__main__":
    main()
