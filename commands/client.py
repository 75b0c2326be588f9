"""What runs for me and how to reach it: my sessions, from any machine (seeds/002 client.py).

Talks to a zephserver over its WebSocket JSON-RPC API with an API token, from
$ZEPHSERVER_TOKEN, else --token-file, else ~/.config/zephserver/token (make one with
"zephserver-admin create_token USERNAME"). Example:
ZEPHSERVER_TOKEN=zt_... zephserver-client query --json --url http://host:5558
(several --url, or ZEPHSERVER_URL=http://n1:5558,http://n2:5558: the first node that
answers is used, as a cluster's nodes serve any request)
"""

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from zephserver.errors import ExitCode

DEFAULT_TOKEN_FILE = os.path.expanduser("~/.config/zephserver/token")


class ClientError(Exception):
    pass


class Unreachable(ClientError):
    """The node did not answer at all: another node of the cluster may."""


def read_token(args: argparse.Namespace) -> str:
    token = os.environ.get("ZEPHSERVER_TOKEN")
    if token:
        return token.strip()
    path = args.token_file or DEFAULT_TOKEN_FILE
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        raise ClientError(f"no token: set ZEPHSERVER_TOKEN or put one in {path} "
                          "(zephserver-admin create_token USERNAME)") from None


async def call(url: str, token: str, method: str, params: dict) -> Any:
    ws_url = url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    request = HTTPRequest(ws_url + "/ws", headers={"Authorization": f"Bearer {token}"},
                          request_timeout=15, connect_timeout=10)
    try:
        conn = await websocket_connect(request)
    except HTTPClientError as exc:
        if exc.code == 401:
            raise ClientError(f"{url} refused the token (invalid or revoked)") from None
        raise ClientError(f"{url} answered HTTP {exc.code}") from None
    except (OSError, TimeoutError) as exc:
        raise Unreachable(f"cannot reach {url}: {getattr(exc, 'strerror', None) or exc}"
                          ) from None
    try:
        await conn.write_message(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                                             "params": params}))
        while True:
            text = await asyncio.wait_for(conn.read_message(), 30)
            if text is None:
                raise ClientError(f"{url} closed the connection")
            message = json.loads(text)
            if message.get("id") == 1:
                if "error" in message:
                    raise ClientError(f"{method}: {message['error']['message']}")
                return message["result"]
    finally:
        conn.close()


async def call_any(urls: list[str], token: str, method: str, params: dict) -> Any:
    """``call`` on the first of ``urls`` (the nodes of one cluster) that answers; a node
    that refuses the token or the call is an answer, not a reason to try the next."""
    tried = []
    for url in urls:
        try:
            return await call(url, token, method, params)
        except Unreachable as exc:
            tried.append(str(exc))
    raise ClientError("no node answered: " + "; ".join(tried))


def render(sessions: list[dict]) -> str:
    if not sessions:
        return "no sessions running"
    rows = [("ID", "APP", "STATE", "PROTOCOL", "PORT", "URL")]
    rows += [(s["id"], s["application"], s["state"], str(s["job"]["protocol"] or "-"),
              str(s["job"]["port"] or "-"), s.get("sessionURL", "-")) for s in sessions]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  "
                     + r[-1] for r in rows)


# Talks to a server over HTTP, not to a local daemon: no --settings.
STANDALONE = True
EXIT_CODES = (ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", action="append", dest="urls", metavar="URL",
                        help="a node of the server; give several (a cluster) and the first "
                             "that answers is used (default $ZEPHSERVER_URL, comma-separated "
                             "URLs, or http://127.0.0.1:5558)")
    parser.add_argument("--token-file", help=f"file holding an API token "
                                             f"(default {DEFAULT_TOKEN_FILE})")
    verbs = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    query = verbs.add_parser("query", help="list my running sessions and how to reach each")
    query.add_argument("--json", action="store_true", help="print JSON for scripts")
    query.add_argument("--all", action="store_true", help="every user's sessions (staff)")


def run(args: argparse.Namespace) -> int:
    try:
        token = read_token(args)
        urls = args.urls or os.environ.get("ZEPHSERVER_URL",
                                           "http://127.0.0.1:5558").split(",")
        sessions = asyncio.run(call_any([u.strip() for u in urls if u.strip()], token,
                                        "sessions.list", {"all": args.all}))
    except ClientError as exc:
        print(f"zephserver-client: error: {exc}", file=sys.stderr)
        return ExitCode.FAILED
    if args.json:
        print(json.dumps([{"id": s["id"], "app": s["application"], "state": s["state"],
                           "url": s.get("sessionURL"), "host": s["job"]["host"],
                           "port": int(s["job"]["port"]) if s["job"]["port"] else None,
                           "protocol": s["job"]["protocol"],
                           "pid": s["job"]["pid"]} for s in sessions], indent=2))
    else:
        print(render(sessions))
    return ExitCode.OK


def main() -> int:
    from zephserver.cli import script_main
    return script_main("client")
