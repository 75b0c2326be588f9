"""Show the daemon's pid, uptime, node and each service's state.

Also the database, the cluster's peers and nodes; --json prints it all for scripts,
with "degraded": true when a service is not RUNNING or the database does not answer.
"""

import argparse
import json
import time

from commands._client import NotRunning, connect
from zephserver.cli import error
from zephserver.errors import ExitCode, RpcError

EXIT_CODES = (ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE, ExitCode.NOT_RUNNING_STATUS,
              ExitCode.NO_PERMISSION, ExitCode.DEGRADED, ExitCode.BAD_SETTINGS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the raw status as JSON")


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def render(status: dict) -> str:
    lines = [f"zephserver running: pid {status['pid']}, up {format_duration(status['uptime'])}, "
             f"node {status['node']}, {status['url']}"
             + (" (stopping)" if status.get("stopping") else "")
             + (" (booting)" if status.get("booting") else "")
             + (f" (degraded: {', '.join(status['problems'])})" if status.get("degraded")
                else "")]
    services = status.get("services", [])
    if services:
        width = max(len("SERVICE"), *(len(s["name"]) for s in services))
        lines.append(f"{'SERVICE':<{width}}  {'STATE':<8}  RESTARTS  FOR")
        now = time.time()
        for s in services:
            line = (f"{s['name']:<{width}}  {s['state']:<8}  {s['restarts']:>8}  "
                    f"{format_duration(now - s['since'])}")
            if s["state"] in ("FATAL", "BACKOFF") and s.get("last_error"):
                line += f"  {s['last_error']}"
            lines.append(line)
    now = time.time()
    for peer in status.get("cluster", {}).get("peers", []):
        seen = (f"last seen {format_duration(now - peer['last_seen'])} ago"
                if peer.get("last_seen") else "never seen")
        lines.append(f"peer {peer['node']}: {peer['state']}, {seen}, "
                     f"{peer.get('buffered', 0)} buffered, {peer.get('lost', 0)} lost")
    database = status.get("database")
    if database:
        lines.append(f"database: {database['state']} ({database['url']})"
                     + (f": {database['reason']}" if database.get("reason") else ""))
    nodes = status.get("nodes", [])
    if nodes:
        lines.append(f"{'NODE':<12}  {'STATE':<11}  JOBS  {'CORES FREE':>10}  "
                     f"{'MEMORY FREE':>11}  QUEUED")
        for n in nodes:
            free, cap = n.get("free", {}), n.get("capacity", {})
            cores = f"{free['cores']}/{cap['cores']}" if cap else "-"
            memory = f"{free['memory']}/{cap['memory']}" if cap else "-"
            lines.append(f"{n['node']:<12}  {n['state']:<11}  {n['jobs_running']:>4}  "
                         f"{cores:>10}  {memory:>11}  {n.get('queued', '-'):>6}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        client = connect(args, not_running_code=ExitCode.NOT_RUNNING_STATUS)
    except NotRunning as exc:
        return exc.code
    try:
        with client:
            status = client.call("status")
    except (RpcError, OSError) as exc:
        error(f"status failed: {exc}")
        return ExitCode.FAILED
    print(json.dumps(status, indent=2) if args.json else render(status))
    return ExitCode.DEGRADED if status.get("degraded") else ExitCode.OK


def main() -> int:
    from zephserver.cli import script_main
    return script_main("status")
