"""The Slurm executor (issue 18) against a real one-node Slurm, each figure beside its
same-run baseline.

1. Submit -> RUNNING seen by a client through zephserver, vs ``sbatch`` + polling
   ``squeue`` by hand every 50 ms, rounds alternated: p50/p99 (goal: zephserver's p50
   within 1.2x the baseline's plus one SLURM_TICK).
2. 100 jobs submitted at once: seconds until all are RUNNING, and the Slurm commands the
   daemon ran meanwhile (from /metrics): goal one squeue per tick whatever the number of
   jobs.

    python bench/bench_slurm.py      (ROUNDS=15, JOBS=100, TICK=0.5; needs root)
"""

import asyncio
import os
import subprocess
import time
import urllib.request

from _common import median, pct

from tests.support import slurm as slurm_support
from tests.support.daemon import child_env, short_tmpdir, write_settings
from tests.support.jobs import stop_site
from tests.support.web import Ws, start_with_users

ROUNDS = int(os.environ.get("ROUNDS", "15"))
JOBS = int(os.environ.get("JOBS", "100"))
TICK = float(os.environ.get("TICK", "0.5"))
APPS = {"nap": {"executor": "slurm", "argv": ["sleep", "600"], "grace": 1}}


def by_hand(slurm) -> float:
    """sbatch, then squeue every 50 ms until RUNNING: seconds."""
    env = {**os.environ, **slurm.env}
    started = time.perf_counter()
    slurm_id = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "--wrap",
                               "exec sleep 600"], env=env, capture_output=True, text=True,
                              check=True).stdout.strip()
    while subprocess.run(["squeue", "-h", "-j", slurm_id, "-o", "%T"], env=env,
                         capture_output=True, text=True).stdout.strip() != "RUNNING":
        time.sleep(0.05)
    took = time.perf_counter() - started
    subprocess.run(["scancel", slurm_id], env=env, check=True)
    return took


async def until_running(ws: Ws, job_ids: list[int], within: float = 120) -> None:
    deadline = time.monotonic() + within
    todo = set(job_ids)
    while todo:
        for job_id in list(todo):
            if (await ws.call("jobs.get", {"id": job_id}))["result"]["state"] == "RUNNING":
                todo.discard(job_id)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(todo)} job(s) not RUNNING after {within}s")
        await asyncio.sleep(0.02)


async def through_zephserver(ws: Ws) -> float:
    started = time.perf_counter()
    job = (await ws.call("jobs.submit", {"app": "nap"}))["result"]
    await until_running(ws, [job["id"]])
    took = time.perf_counter() - started
    await ws.call("jobs.cancel", {"id": job["id"]})
    return took


def commands(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("zephserver_slurm_commands_total{"):
            name = line.split('command="')[1].split('"')[0]
            out[name] = float(line.rsplit(" ", 1)[1])
    return out


async def main(daemon, slurm) -> None:
    ws = await Ws.connect(daemon.url, token=daemon.tokens["alice"])
    await through_zephserver(ws)  # warm
    ours, theirs = [], []
    for _ in range(ROUNDS):
        theirs.append(await asyncio.to_thread(by_hand, slurm))
        ours.append(await through_zephserver(ws))
    goal = 1.2 * median(theirs) + TICK
    print(f"submit -> RUNNING through zephserver: p50 {median(ours) * 1000:.0f} ms, p99 "
          f"{pct(ours, 99) * 1000:.0f} ms | baseline sbatch + squeue by hand (50 ms polls): "
          f"p50 {median(theirs) * 1000:.0f} ms, p99 {pct(theirs, 99) * 1000:.0f} ms | goal "
          f"p50 within 1.2x the baseline plus one tick ({TICK:g} s) = {goal * 1000:.0f} ms: "
          f"{'met' if median(ours) <= goal else 'NOT met'}", flush=True)

    clients = [await Ws.connect(daemon.url, token=daemon.tokens["alice"])
               for _ in range(JOBS)]  # one request in flight per connection
    before = commands(daemon.url)
    started = time.perf_counter()
    answers = await asyncio.gather(*[c.call("jobs.submit", {"app": "nap"}) for c in clients])
    ids = [a["result"]["id"] for a in answers]
    await until_running(ws, ids, 300)
    took = time.perf_counter() - started
    after = commands(daemon.url)
    ran = {k: int(after.get(k, 0) - before.get(k, 0)) for k in after}
    ticks = took / TICK
    print(f"{JOBS} jobs submitted at once: all RUNNING after {took:.2f} s | Slurm commands "
          f"run meanwhile: {ran} | squeue {ran.get('squeue', 0)} in {ticks:.1f} ticks | goal "
          f"one squeue per tick whatever the jobs (at most {int(ticks) + 1}): "
          f"{'met' if ran.get('squeue', 0) <= int(ticks) + 1 else 'NOT met'}", flush=True)
    await asyncio.gather(*[c.call("jobs.cancel", {"id": i})
                           for c, i in zip(clients, ids, strict=True)])
    for c in clients:
        await c.aclose()
    await ws.aclose()


if __name__ == "__main__":
    why = slurm_support.available()
    if why:
        raise SystemExit(f"bench_slurm: {why}")
    with slurm_support.Slurm(cpus=JOBS + 8) as slurm:
        work = short_tmpdir("zb")
        daemon = start_with_users(write_settings(
            work, APPS=APPS, SLURM_CONF=str(slurm.conf), SLURM_TICK=TICK,
            DJANGO_SETTINGS_MODULE="tests.support.django_test_settings"), child_env())
        try:
            asyncio.run(main(daemon, slurm))
        finally:
            stop_site(daemon, work)
