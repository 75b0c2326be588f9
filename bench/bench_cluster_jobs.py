"""One system across nodes (issue 16): three daemons on one real PostgreSQL, each figure
beside its same-run baseline (the same thing served by the node that owns the job).

1. jobs.get and jobs.cancel of a job running on n1, asked of n2 (cancel is forwarded
   to n1) vs asked of n1: p50/p99.
2. job.output of a job on n1 printing LINES lines, to a subscriber on n2 vs one on n1:
   lines/s until every byte has arrived.
3. job.updated fan-out: a subscriber on each node; the delay between the owner's own
   subscriber and the others seeing each update, p50/p99.

    python bench/bench_cluster_jobs.py      (N=200 requests, LINES=500000, ROUNDS=5)
"""

import asyncio
import os
import time

from _common import median, pct

from tests.support.cluster import node_settings, prepare_database, start_nodes, stop_nodes
from tests.support.daemon import child_env, short_tmpdir
from tests.support.postgres import Postgres
from tests.support.sessions import free_port_range
from tests.support.web import Ws

N = int(os.environ.get("N", "200"))
LINES = int(os.environ.get("LINES", "500000"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
APPS = {"nap": {"argv": ["/bin/sh", "-c", "exec sleep 600"], "resources": {"cores": 0},
                "grace": 1},
        "print": {"argv": ["/bin/sh", "-c", f"seq -f 'line %08g of the benchmark output' "
                           f"1 {LINES}; exec sleep 600"], "resources": {"cores": 0},
                  "grace": 1}}


async def timed(ws: Ws, method: str, params: dict) -> float:
    started = time.perf_counter()
    answer = await ws.call(method, params)
    assert "result" in answer, answer
    return (time.perf_counter() - started) * 1000


async def requests(nodes: dict, token: str) -> None:
    owner = await Ws.connect(nodes["n1"].url, token=token)
    other = await Ws.connect(nodes["n2"].url, token=token)
    jobs = [(await owner.call("jobs.submit", {"app": "nap"}))["result"]["id"]
            for _ in range(2 * N)]
    for ws in (owner, other):  # warm both paths
        await ws.call("jobs.get", {"id": jobs[0]})
    for label, method, ids in (("jobs.get", "jobs.get", (jobs[:N], jobs[:N])),
                               ("jobs.cancel", "jobs.cancel", (jobs[:N], jobs[N:]))):
        local = [await timed(owner, method, {"id": i}) for i in ids[0]]
        remote = [await timed(other, method, {"id": i}) for i in ids[1]]
        print(f"{label} of a job on n1 asked of n2: p50 {median(remote):.2f} ms, "
              f"p99 {pct(remote, 99):.2f} ms | baseline asked of n1 (the owner): p50 "
              f"{median(local):.2f} ms, p99 {pct(local, 99):.2f} ms | remote p50 - local "
              f"p50 {median(remote) - median(local):.2f} ms | goal under 2 ms", flush=True)
    await owner.aclose()
    await other.aclose()


async def output_rate(nodes: dict, token: str, subscriber: str) -> float:
    owner = await Ws.connect(nodes["n1"].url, token=token)
    job = (await owner.call("jobs.submit", {"app": "print"}))["result"]["id"]
    ws = await Ws.connect(nodes[subscriber].url, token=token)
    size = LINES * len("line 00000001 of the benchmark output\n")
    started = time.perf_counter()
    await ws.call("jobs.subscribe", {"id": job, "offset": 0})
    got = 0
    while got < size:
        note = await ws.until("job.output", timeout=60)
        if note["id"] == job:
            got = note["next_offset"]
    took = time.perf_counter() - started
    await owner.call("jobs.cancel", {"id": job})
    await ws.aclose()
    await owner.aclose()
    return LINES / took


async def fan_out(nodes: dict, token: str) -> None:
    subs = {name: await Ws.connect(d.url, token=token) for name, d in nodes.items()}
    for ws in subs.values():
        await ws.call("jobs.subscribe", {})
    delays: dict[str, list[float]] = {"n2": [], "n3": []}

    async def seen(ws: Ws, job: int, state: str) -> float:
        while True:
            note = await ws.until("job.updated", timeout=30)
            if note["id"] == job and note["state"] == state:
                return time.perf_counter()

    for _ in range(N // 2):
        job = (await subs["n1"].call("jobs.submit", {"app": "nap"}))["result"]["id"]
        at = dict(zip(subs, await asyncio.gather(*(seen(ws, job, "RUNNING")
                                                    for ws in subs.values())), strict=True))
        for name in delays:
            delays[name].append((at[name] - at["n1"]) * 1000)
        await subs["n1"].call("jobs.cancel", {"id": job})
    every = delays["n2"] + delays["n3"]
    print(f"job.updated fan-out to subscribers on n2 and n3 after n1's own: p50 "
          f"{median(every):.2f} ms, p99 {pct(every, 99):.2f} ms ({len(every)} updates) | "
          f"goal p99 under 20 ms", flush=True)
    for ws in subs.values():
        await ws.aclose()


def main() -> None:
    work = short_tmpdir("zbc")
    low, _ = free_port_range(3, 25000)
    nodes = [{"hostname": f"n{i}", "address": "127.0.0.1", "port": low + i - 1}
             for i in (1, 2, 3)]
    env = child_env()
    daemons: dict = {}
    with Postgres() as pg:
        try:
            url = pg.database("bench")
            paths = {n["hostname"]: node_settings(work, n["hostname"], nodes, url, APPS=APPS,
                                                  LOG_LEVEL="WARNING") for n in nodes}
            tokens = prepare_database(paths["n1"], env)
            start_nodes(paths, env, tokens, daemons)
            token = tokens["alice"]
            asyncio.run(requests(daemons, token))
            ratios, rates = [], {"n1": [], "n2": []}
            for _ in range(ROUNDS):  # alternated, so both see the same machine
                for name in rates:
                    rates[name].append(asyncio.run(output_rate(daemons, token, name)))
                ratios.append(rates["n2"][-1] / rates["n1"][-1])
            print(f"job.output of {LINES} lines to a subscriber on n2: "
                  f"{median(rates['n2']) / 1e6:.2f} M lines/s | baseline a subscriber on n1 "
                  f"(the owner): {median(rates['n1']) / 1e6:.2f} M lines/s | ratio median "
                  f"{median(ratios):.2f} of {ROUNDS} rounds ("
                  f"{', '.join(f'{r:.2f}' for r in ratios)}) | goal at least 0.5", flush=True)
            asyncio.run(fan_out(daemons, token))
        finally:
            stop_nodes(daemons, work)


if __name__ == "__main__":
    main()
