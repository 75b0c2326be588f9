"""Cluster benchmark (issue 7): two nodes in two processes on 127.0.0.1, each figure
beside raw pyzmq measured in the same run.

1. ``say`` throughput, 100-byte payloads (messages/s seen by the receiving node's
   subscriber), vs raw PUB/SUB of 100-byte messages between two processes.
2. say-and-reply round trip at light load (one at a time), p50/p99, vs a raw
   DEALER/ROUTER ping-pong.

    python bench/bench_cluster.py      (N=200000 by default)
"""

import multiprocessing as mp
import os
import threading
import time

from _common import median, pct

from tests.support.sessions import free_port_range

N = int(os.environ.get("N", "200000"))
PINGS = 2000
PAYLOAD = "x" * 100


class Settings:
    def __init__(self, node: str, low: int) -> None:
        self.NODE_NAME = node
        self.CLUSTER_SERVER_LIST = [
            {"hostname": "a", "address": "127.0.0.1", "port": low},
            {"hostname": "b", "address": "127.0.0.1", "port": low + 1}]
        self.CLUSTER_SECRET = "benchmark secret of the cluster"
        self.CLUSTER_HEARTBEAT = 1.0
        self.CLUSTER_HEARTBEAT_TIMEOUT = 3.0
        self.CLUSTER_RETRY = 0.5
        self.CLUSTER_BUFFER_MESSAGES = 10 ** 7
        self.CLUSTER_BUFFER_AGE = 300.0
        self.CLUSTER_MAX_MESSAGE = 64 << 20


def node(name: str, low: int, role: str, out: mp.Queue, go: mp.Event) -> None:
    from zephserver.infra.cluster import ClusterManager

    cm = ClusterManager(Settings(name, low))
    up = threading.Event()
    cm.subscribe("cluster.node_up", lambda d: up.set())
    if role == "receiver":
        seen = {"n": 0, "first": 0.0}
        done = threading.Event()

        def count(_data: object) -> None:
            if seen["n"] == 0:
                seen["first"] = time.perf_counter()
            seen["n"] += 1
            if seen["n"] == N:
                seen["last"] = time.perf_counter()
                done.set()

        cm.subscribe("load", count)
        cm.subscribe("ping", lambda i: cm.say("pong", i))
    else:
        pongs: dict[int, float] = {}
        got = threading.Event()

        def pong(i: int) -> None:
            pongs[i] = time.perf_counter()
            got.set()

        cm.subscribe("pong", pong)
    cm.start()
    cm.open()
    up.wait(10)
    out.put((name, "up"))
    go.wait()
    if role == "receiver":
        done.wait(300)
        out.put(("throughput", N / (seen["last"] - seen["first"])))
        time.sleep(PINGS * 0.01 + 5)  # answer the pings
    else:
        t = time.perf_counter()
        for _ in range(N):
            cm.say("load", PAYLOAD)
        out.put(("say_rate", N / (time.perf_counter() - t)))
        time.sleep(2)
        rtts = []
        for i in range(PINGS):
            got.clear()
            t = time.perf_counter()
            cm.say("ping", i)
            got.wait(5)
            rtts.append((pongs[i] - t) * 1e3)
        out.put(("rtt", rtts))
    cm.stop()


def raw_pubsub(low: int, out: mp.Queue) -> None:
    import zmq

    def sub() -> None:
        ctx = zmq.Context()
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.setsockopt(zmq.RCVHWM, 0)
        s.bind(f"tcp://127.0.0.1:{low + 2}")
        s.recv()  # warm-up
        first = None
        for _ in range(N):
            s.recv()
            first = first or time.perf_counter()
        out.put(("raw_throughput", N / (time.perf_counter() - first)))

    p = mp.Process(target=sub)
    p.start()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    pub.connect(f"tcp://127.0.0.1:{low + 2}")
    time.sleep(0.5)  # the slow joiner
    pub.send(b"warm")
    msg = PAYLOAD.encode()
    for _ in range(N + 1000):
        pub.send(msg)
    p.join(60)
    pub.close(linger=0)


def raw_pingpong(low: int) -> list[float]:
    import zmq

    def echo() -> None:
        ctx = zmq.Context()
        r = ctx.socket(zmq.ROUTER)
        r.bind(f"tcp://127.0.0.1:{low + 3}")
        for _ in range(PINGS):
            r.send_multipart(r.recv_multipart())

    p = mp.Process(target=echo)
    p.start()
    ctx = zmq.Context()
    d = ctx.socket(zmq.DEALER)
    d.connect(f"tcp://127.0.0.1:{low + 3}")
    rtts = []
    for _ in range(PINGS):
        t = time.perf_counter()
        d.send(PAYLOAD.encode())
        d.recv()
        rtts.append((time.perf_counter() - t) * 1e3)
    p.join(10)
    d.close(linger=0)
    return rtts


def main() -> None:
    low, _ = free_port_range(4, 32000)
    out: mp.Queue = mp.Queue()
    raw_pubsub(low, out)
    raw = out.get(timeout=60)[1]
    raw_rtt = raw_pingpong(low)
    go = mp.Event()
    procs = [mp.Process(target=node, args=("b", low, "receiver", out, go)),
             mp.Process(target=node, args=("a", low, "sender", out, go))]
    for p in procs:
        p.start()
    for _ in procs:
        out.get(timeout=30)
    go.set()
    results = dict(out.get(timeout=600) for _ in range(3))
    for p in procs:
        p.join(60)
    ours = results["throughput"]
    print(f"say throughput, 100-byte payloads, {N:,} messages: {ours:,.0f} msgs/s "
          f"(the sender's say() calls: {results['say_rate']:,.0f}/s) | baseline raw PUB/SUB "
          f"{raw:,.0f} msgs/s | ratio {ours / raw:.2f} | goal >= 0.25", flush=True)
    rtt = results["rtt"]
    print(f"say-and-reply round trip, {PINGS} one at a time: p50 {median(rtt):.3f} ms, p99 "
          f"{pct(rtt, 99):.3f} ms | baseline raw DEALER/ROUTER ping-pong p50 "
          f"{median(raw_rtt):.3f} ms, p99 {pct(raw_rtt, 99):.3f} ms | ratio p50 "
          f"{median(rtt) / median(raw_rtt):.2f} | goal p50 < 1 ms", flush=True)


if __name__ == "__main__":
    main()
