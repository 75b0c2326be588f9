"""Submit a job and follow it live: its output as it is written, then its final state.

    ZEPH_TOKEN=zt_... python -m zephserver.examples.submit demo steps=10 delay=0.2
    (--url ws://127.0.0.1:5558/ws by default)
"""

import argparse
import asyncio
import json
import os
import sys

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "LOST"}


def parse_value(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


async def follow(url: str, token: str, app: str, params: dict) -> int:
    request = HTTPRequest(url, headers={"Authorization": f"Bearer {token}"})
    ws = await websocket_connect(request)

    async def call(method: str, **p: object) -> dict:
        await ws.write_message(json.dumps({"jsonrpc": "2.0", "id": method, "method": method,
                                           "params": p}))
        while True:
            message = json.loads(await ws.read_message())
            if message.get("id") == method:
                if "error" in message:
                    raise SystemExit(f"{method}: {message['error']['message']}")
                return message["result"]
            pending.append(message)

    pending: list[dict] = []
    job = await call("jobs.submit", app=app, params=params)
    print(f"job {job['id']} {job['state']}: {job['state_reason']}", file=sys.stderr)
    await call("jobs.subscribe", id=job["id"])
    final, eof = None, False
    while final is None or not eof:
        message = pending.pop(0) if pending else json.loads(await ws.read_message())
        params_ = message.get("params", {})
        if message.get("method") == "job.output" and params_.get("id") == job["id"]:
            sys.stdout.write(params_["data"])
            sys.stdout.flush()
            eof = eof or bool(params_.get("eof"))
        elif message.get("method") == "job.updated" and params_.get("id") == job["id"]:
            progress = params_.get("progress") or {}
            if params_["state"] in TERMINAL:
                final = params_
            elif progress.get("percent") is not None:
                print(f"[{params_['state']} {progress['percent']}% eta {progress.get('eta')}s]",
                      file=sys.stderr)
    print(f"job {final['id']} {final['state']}: {final['state_reason']}", file=sys.stderr)
    ws.close()
    return 0 if final["state"] == "SUCCEEDED" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("app")
    parser.add_argument("params", nargs="*", help="name=value (values parsed as JSON)")
    parser.add_argument("--url", default="ws://127.0.0.1:5558/ws")
    args = parser.parse_args(argv)
    token = os.environ.get("ZEPH_TOKEN")
    if not token:
        parser.error("set ZEPH_TOKEN to an API token (zephserver-admin create_token USER)")
    params = {}
    for item in args.params:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"param {item!r} must be name=value")
        params[name] = parse_value(value)
    return asyncio.run(follow(args.url, token, args.app, params))


if __name__ == "__main__":
    sys.exit(main())
