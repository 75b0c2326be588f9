"""Clients for the daemon's HTTP and WebSocket endpoints (real sockets, no mocks)."""

import asyncio
import collections
import http.cookiejar
import json
import re
import urllib.parse
import urllib.request
from typing import Any

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.support.daemon import run_cli


def admin(daemon_settings, *args: str, env: dict | None = None) -> str:
    result = run_cli("zephserver-admin", "--settings", str(daemon_settings), *args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def django_shell(daemon_settings, code: str, env: dict) -> str:
    return admin(daemon_settings, "shell", "-c", code, env=env)


USERS = """
import json
from django.contrib.auth.models import User
from zephserver.web.models import ApiToken
out = {}
for name, staff in [("alice", False), ("bob", False), ("boss", True)]:
    u = User.objects.create_user(name, password=name + "-pw-123", is_staff=staff)
    out[name] = ApiToken.issue(u)[1]
out["revokable"] = ApiToken.issue(User.objects.get(username="bob"), "to revoke")[1]
print(json.dumps(out))
"""


def create_users(daemon_settings, env: dict) -> dict[str, str]:
    """Users alice, bob (plus a second, revokable token) and boss (staff); their tokens."""
    return json.loads(django_shell(daemon_settings, USERS, env).splitlines()[-1])


def start_with_users(settings_path, env: dict):
    """Migrate a fresh database, create the test users (alice, bob, boss: the same ids on
    every fresh database), start the daemon; their tokens are in ``.tokens``."""
    from tests.support.daemon import DaemonProcess

    admin(settings_path, "migrate", "-v0", env=env)
    tokens = create_users(settings_path, env)
    daemon = DaemonProcess(settings_path, env).start()
    daemon.tokens = tokens
    return daemon


def login(base_url: str, username: str, password: str) -> str:
    """Log in through the real form (CSRF token included); return the sessionid cookie."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(base_url + "/accounts/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode({"username": username, "password": password,
                                   "csrfmiddlewaretoken": token, "next": "/"}).encode()
    request = urllib.request.Request(base_url + "/accounts/login/", data=body,
                                     headers={"Referer": base_url + "/accounts/login/"})
    opener.open(request, timeout=10).read()
    cookies = {c.name: c.value for c in jar}
    assert "sessionid" in cookies, "login failed"
    return cookies["sessionid"]


class Ws:
    """An async JSON-RPC client over one WebSocket connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.next_id = 0
        self.notes: collections.deque = collections.deque()  # seen while awaiting a reply

    @classmethod
    async def connect(cls, base_url: str, token: str | None = None, session: str | None = None,
                      origin: str | None = None) -> "Ws":
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if session:
            headers["Cookie"] = f"sessionid={session}"
        if origin:
            headers["Origin"] = origin
        url = base_url.replace("http://", "ws://") + "/ws"
        conn = await asyncio.wait_for(websocket_connect(HTTPRequest(url, headers=headers)), 10)
        return cls(conn)

    async def send(self, message: Any) -> None:
        await self.conn.write_message(message if isinstance(message, str | bytes)
                                      else json.dumps(message), binary=isinstance(message, bytes))

    async def recv(self, timeout: float = 10) -> Any:
        text = await asyncio.wait_for(self.conn.read_message(), timeout)
        return None if text is None else json.loads(text)

    async def call(self, method: str, params: Any = None, timeout: float = 10) -> dict:
        """Send a request and return its response (notifications on the way are kept for
        ``until``)."""
        self.next_id += 1
        request = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            request["params"] = params
        await self.send(request)
        while True:
            message = await self.recv(timeout)
            if message is None:
                raise ConnectionError(f"closed with {self.conn.close_code}")
            if isinstance(message, dict) and message.get("id") == self.next_id:
                return message
            if isinstance(message, dict) and "method" in message:
                self.notes.append(message)

    async def until(self, method: str, timeout: float = 10) -> dict:
        """The next notification named ``method``."""
        while self.notes:
            message = self.notes.popleft()
            if message.get("method") == method:
                return message["params"]
        while True:
            message = await self.recv(timeout)
            if message is None:
                raise ConnectionError("closed")
            if message.get("method") == method:
                return message["params"]

    async def aclose(self) -> None:
        await close_ws(self.conn)


async def close_ws(conn: Any) -> None:
    """Close a client WebSocket and wait for the server's close frame: no half-closed
    socket left behind for a later garbage collection to warn about."""
    conn.close()
    try:
        while await asyncio.wait_for(conn.read_message(), 5) is not None:
            pass
    except TimeoutError:
        pass


def readyz(url: str) -> tuple[int, dict]:
    """A daemon's /readyz: (HTTP status, its JSON body)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/readyz", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def run(coro: Any) -> Any:
    return asyncio.run(coro)


__all__ = ["Ws", "admin", "close_ws", "create_users", "django_shell", "login", "readyz",
           "run"]
