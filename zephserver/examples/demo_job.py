"""The `demo` app: prints a progress line per step, like a real solver would.

    python -m zephserver.examples.demo_job --steps 20 --delay 0.5
"""

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.5)
    parser.add_argument("--fail-at", type=int, default=0, help="exit 3 at this step")
    args = parser.parse_args(argv)
    print(f"demo: {args.steps} steps, {args.delay}s each", flush=True)
    for step in range(1, args.steps + 1):
        time.sleep(args.delay)
        print(f"step {step} of {args.steps}", flush=True)
        if step == args.fail_at:
            print(f"demo: failing at step {step} as asked", file=sys.stderr, flush=True)
            return 3
    print("demo: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
