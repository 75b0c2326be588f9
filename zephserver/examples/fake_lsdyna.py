"""Prints what LS-DYNA prints on stdout, for trying the `lsdyna` parser without LS-DYNA.

    python -m zephserver.examples.fake_lsdyna --end 10 --steps 20 --delay 0.2 [--error]
It also obeys the sense switches: `sw1` in ./d3kil stops it with a restart dump.
"""

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--end", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--error", action="store_true")
    parser.add_argument("--ncpu", type=int, default=1)
    args = parser.parse_args(argv)
    out = sys.stdout
    out.write(f" Date: 2026-11-22  ncpu = {args.ncpu}\n")
    out.write(f" termination time                 =  {args.end:.4E}\n")
    out.write(" added mass          =   1.2345E-03\n")
    out.write(" percentage increase =   5.0000E-01\n\n")
    out.flush()
    for i in range(args.steps + 1):
        t = args.end * i / args.steps
        kind = "write d3plot file" if i % 2 == 0 else "flush i/o buffers"
        out.write(f" {1000 * i:8d} t {t:.4E} dt 1.00E-05 {kind}           11/22/26 10:00:00\n")
        out.flush()
        if os.path.exists("d3kil"):
            with open("d3kil") as f:
                switch = f.read().strip()
            os.unlink("d3kil")
            out.write(f" sense switch {switch} received\n")
            if switch == "sw1":
                out.write(" write d3dump01 file\n\n N o r m a l    t e r m i n a t i o n\n")
                return 0
        if args.error and i == args.steps // 2:
            out.write("\n E r r o r   t e r m i n a t i o n\n")
            return 1
        time.sleep(args.delay)
    out.write("\n N o r m a l    t e r m i n a t i o n                   11/22/26 10:00:05\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
