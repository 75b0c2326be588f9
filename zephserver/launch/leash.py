"""The leash: what holds a ``requeue: True`` job to its daemon's lease.

A job the cluster may run again elsewhere when its node is lost must not go on running
here meanwhile. Its program runs under a small watcher that looks at the daemon's beat
file (``DATA_DIR/lease.beat``, touched each time the daemon renews its lease in the
database). When the beat is older than its limit (half of NODE_LOST_AFTER) the daemon is
dead, frozen or cut off from the database: the watcher sends SIGTERM to the program's
process group, SIGKILL a quarter of NODE_LOST_AFTER later, and exits with the program's
status. So the program is gone before any other node may declare this one lost and start
the job again. A signal the watcher gets (a cancel) is passed on to the program.
"""

import sys

# argv: beat file, limit (s), kill delay (s), then the program's argv. Python, not a
# shell: it must watch a file's age and a child at once. (Only in this string: the
# watcher runs in its own interpreter, -S, importing nothing of zephserver.)
WATCHER = r"""
import os, signal, sys, time
beat, limit, after = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
child = os.fork()
if child == 0:
    os.setpgid(0, 0)
    os.execvp(sys.argv[4], sys.argv[4:])
def forward(sig, frame):
    try:
        os.killpg(child, sig)
    except ProcessLookupError:
        pass
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, forward)
termed = None
while True:
    pid, status = os.waitpid(child, os.WNOHANG)
    if pid:
        os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status)
                 else 128 + os.WTERMSIG(status))
    try:
        age = time.time() - os.stat(beat).st_mtime
    except OSError:
        age = float("inf")
    now = time.monotonic()
    if age > limit and termed is None:
        sys.stderr.write("[zephserver] the daemon's lease is %.0fs old: stopping this job "
                         "(requeue: it may run again on another node)\n" % age)
        sys.stderr.flush()
        termed = now
        forward(signal.SIGTERM, None)
    elif termed is not None and now - termed > after:
        forward(signal.SIGKILL, None)
    time.sleep(0.2)
"""

BEAT_FILE = "lease.beat"


def leash(beat: str, lost_after: float) -> list[str]:
    """What a requeue job's argv is prefixed with."""
    return [sys.executable, "-S", "-c", WATCHER, beat, f"{lost_after / 2:g}",
            f"{lost_after / 4:g}"]
