"""A tiny interactive session for trying the launcher: a WebSocket echo server.

It listens on --port, prints a ready line, and answers on /ws: the first message must
be the session's secret (as a wslink client authenticates with its authKey), then every
message is echoed. Started by the "echo" app of settings/zephserversettings.py.
"""

import argparse
import asyncio
import hmac
import os
import signal

import tornado.web
import tornado.websocket


class Echo(tornado.websocket.WebSocketHandler):
    def initialize(self, secret: str) -> None:
        self.secret = secret
        self.authenticated = False

    def on_message(self, message: str | bytes) -> None:
        text = message.decode() if isinstance(message, bytes) else message
        if self.authenticated:
            self.write_message(f"echo: {text}")
        elif hmac.compare_digest(text.encode(), self.secret.encode()):
            self.authenticated = True
            self.write_message("welcome")
        else:
            self.close(4001, "wrong secret")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    # from the environment by default: argv is visible to every local user in ps
    parser.add_argument("--secret", default=os.environ.get("ZEPH_SESSION_SECRET"))
    parser.add_argument("--ready-line", default="Starting factory")
    args = parser.parse_args()
    if not args.secret:
        parser.error("give --secret or set ZEPH_SESSION_SECRET")
    app = tornado.web.Application([(r"/ws", Echo, {"secret": args.secret})])
    app.listen(args.port, "127.0.0.1")
    print(args.ready_line, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("echo session: stopping", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
