"""Progress parser throughput (issue 22), beside the rate a job prints at, same run.

The floor is the capture rate: one Python program printing 80-byte lines into a file,
as a job does. Each parser is fed the same kind of output in the 1 MiB chunks the output
thread reads: a regex parser whose progress line is every line (dense) or one in a
thousand (sparse), and the LS-DYNA parser on a log where every line is a time step.

    python bench/bench_parsers.py      (LINES=2000000 by default, RUNS=3)
"""

import os
import subprocess
import sys
import tempfile
import time

from _common import median

from zephserver.launch.parsers import LsDynaParser, RegexParser

LINES = int(os.environ.get("LINES", "2000000"))
RUNS = int(os.environ.get("RUNS", "3"))
CHUNK = 1 << 20
PRINTER = """
import sys
n = int(sys.argv[1])
line = b"x" * 79 + b"\\n"
write = sys.stdout.buffer.write
for _ in range(n):
    write(line)
"""
REGEX = {"progress": r"step (?P<value>\d+) of (?P<total>\d+)", "status": r"^phase: (?P<status>.+)"}


def capture_rate() -> float:
    """Lines/s of a Python program printing lines one by one into a file (what the log
    grows at)."""
    with tempfile.TemporaryFile() as f:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", PRINTER, str(LINES)], stdout=f, check=True)
        return LINES / (time.perf_counter() - t)


def log(kind: str) -> bytes:
    if kind == "lsdyna":
        head = b" termination time = 2.0000E+01\n added mass = 1.0E-03\n"
        return head + b"".join(b" %8d t %.4E dt 1.00E-05 write d3plot file      11/22/26\n"
                               % (i, 20.0 * i / LINES) for i in range(LINES))
    every = 1 if kind == "dense" else 1000
    line = b"x" * 79 + b"\n"
    return b"".join((b"step %d of %d %s\n" % (i, LINES, b"x" * 58)) if i % every == 0
                    else line for i in range(LINES))


def parse_rate(make, data: bytes) -> tuple[float, float]:
    """(lines/s, longest time one chunk held the thread in ms)"""
    parser = make()
    worst = 0.0
    t = time.perf_counter()
    for at in range(0, len(data), CHUNK):
        c = time.perf_counter()
        parser.feed(data[at:at + CHUNK], time.time(), None)
        worst = max(worst, time.perf_counter() - c)
    parser.finish(time.time(), None)
    if not (parser.percent or 0) > 99:
        raise SystemExit(f"the parser did not reach the end: {parser.snapshot()}")
    return data.count(b"\n") / (time.perf_counter() - t), worst * 1e3


def main() -> None:
    floors = [capture_rate() for _ in range(RUNS)]
    floor = median(floors)
    print(f"capture floor: one Python job prints {floor / 1e6:.2f} M lines/s "
          f"(runs {', '.join(f'{x / 1e6:.2f}' for x in floors)})", flush=True)
    for kind, make in (("regex, every line a progress line", lambda: RegexParser(REGEX)),
                       ("regex, one line in 1,000", lambda: RegexParser(REGEX)),
                       ("lsdyna, every line a time step", LsDynaParser)):
        data = log("dense" if "every" in kind and "regex" in kind
                   else "sparse" if "regex" in kind else "lsdyna")
        runs = [parse_rate(make, data) for _ in range(RUNS)]
        rate = median([r for r, _ in runs])
        print(f"parser {kind}: {rate / 1e6:.2f} M lines/s, one 1 MiB chunk holds the thread "
              f"at most {max(w for _, w in runs):.1f} ms | baseline capture {floor / 1e6:.2f} M "
              f"lines/s | ratio {rate / floor:.2f} | goal >= 1.00 (at least the capture rate)",
              flush=True)


if __name__ == "__main__":
    main()
