import asyncio
import json
import re
import shutil
import socket
import time

import pytest
from tornado.httpclient import HTTPClientError

from tests.support.daemon import child_env, short_tmpdir, write_settings
from tests.support.sessions import rest
from tests.support.web import Ws, admin, create_users, login, run, start_with_users
from zephserver import defaults

pytestmark = pytest.mark.e2e
T = "tests.support.tasks"
TASKS = {**defaults.TASKS_PATH, "echo": f"{T}/EchoRequestTask", "boom": f"{T}/BoomTask",
         "refuse": f"{T}/RefuseTask", "staff.only": f"{T}/StaffOnlyTask",
         "a.only": f"{T}/ATask", "slow": f"{T}/SlowTask", "long": f"{T}/LongTask",
         "later": f"{T}/LaterTask"}
@pytest.fixture(scope="module")
def server():
    work = short_tmpdir()
    env = child_env(ZEPH_TEST_INTERRUPTED=str(work / "interrupted"))
    settings = write_settings(
        work, TASKS_PATH=TASKS, DJANGO_SETTINGS_MODULE="tests.support.django_test_settings",
        # a pool of 2 that one user may fill (these tests are about one client's limits)
        TASK_POOL_SIZE=2, TASK_QUEUE_SIZE=8, TASK_POOL_USER_SHARE=1.0,
        WS_MAX_IN_FLIGHT=4, WS_MAX_BATCH=100,
        SESSION_CACHE_TTL=1.0, WS_MAX_MESSAGE_SIZE=64 * 1024, TASK_REPLY_TIMEOUT=3.0)
    daemon = start_with_users(settings, env)
    daemon.work = work
    yield daemon
    daemon.cli("zephserver-stop")
    daemon.close()
    print(daemon.output[-5000:])
    shutil.rmtree(work, ignore_errors=True)


def test_login_form_then_cookie_websocket(server):
    """Log in through the real form with CSRF, then the sessionid authenticates /ws."""
    session = login(server.url, "alice", "alice-pw-123")

    async def scenario():
        ws = await Ws.connect(server.url, session=session)
        reply = await ws.call("whoami")
        await ws.aclose()
        return reply

    assert run(scenario())["result"]["username"] == "alice"


def test_bearer_token_and_anonymous(server):
    """A bearer token authenticates; an anonymous connection may ping but not whoami."""
    async def scenario():
        ws = await Ws.connect(server.url, token=server.tokens["boss"])
        me = await ws.call("whoami")
        anon = await Ws.connect(server.url)
        pong = await anon.call("ping")
        refused = await anon.call("whoami")
        await ws.aclose()
        await anon.aclose()
        return me, pong, refused

    me, pong, refused = run(scenario())
    assert me["result"] == {"id": me["result"]["id"], "username": "boss", "is_staff": True}
    assert pong["result"] == "pong"
    assert refused["error"]["code"] == -32001


def test_bad_token_is_refused_with_401(server):
    """A wrong bearer token is refused at the upgrade with HTTP 401."""
    with pytest.raises(HTTPClientError) as info:
        run(Ws.connect(server.url, token="zt_wrong"))
    assert info.value.code == 401


def test_revoked_token_refused_within_cache_life(server):
    """After revoke_token, an open connection loses its user within the cache life."""
    token = server.tokens["revokable"]
    prefix = token[:11]

    async def scenario():
        ws = await Ws.connect(server.url, token=token)
        assert (await ws.call("whoami"))["result"]["username"] == "bob"
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: admin(server.settings, "revoke_token", prefix, env=server.env))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            reply = await ws.call("whoami")
            if "error" in reply:
                await ws.aclose()
                return reply, time.monotonic() - (deadline - 5)
            await asyncio.sleep(0.05)
        raise AssertionError("token still accepted 5 s after revocation")

    reply, _ = run(scenario())
    assert reply["error"]["code"] == -32001
    with pytest.raises(HTTPClientError):
        run(Ws.connect(server.url, token=token))


def test_foreign_origin_gets_403(server):
    """A browser page from another origin cannot open /ws."""
    with pytest.raises(HTTPClientError) as info:
        run(Ws.connect(server.url, token=server.tokens["alice"], origin="http://evil.example"))
    assert info.value.code == 403
    async def same_origin():
        ws = await Ws.connect(server.url, token=server.tokens["alice"], origin=server.url)
        reply = await ws.call("ping")
        await ws.aclose()
        return reply

    assert run(same_origin())["result"] == "pong"


def test_access_decorators(server):
    """staff_required refuses a normal user with -32002; a custom test works."""
    async def scenario():
        alice = await Ws.connect(server.url, token=server.tokens["alice"])
        boss = await Ws.connect(server.url, token=server.tokens["boss"])
        out = (await alice.call("staff.only"), await boss.call("staff.only"),
               await alice.call("a.only"), await boss.call("a.only"))
        await alice.aclose()
        await boss.aclose()
        return out

    a_staff, b_staff, a_a, b_a = run(scenario())
    assert a_staff["error"]["code"] == -32002
    assert b_staff["result"] == "staff ok"
    assert a_a["result"] == "a ok"
    assert b_a["error"] == {"code": -32002, "message": "names starting with a only"}


def test_custom_task_gets_request_fields(server):
    """A task from TASKS_PATH receives data, cid, user and task, and returns a result."""
    async def scenario():
        ws = await Ws.connect(server.url, token=server.tokens["alice"])
        reply = await ws.call("echo", {"x": [1, 2]})
        await ws.aclose()
        return reply

    result = run(scenario())["result"]
    assert result["data"] == {"x": [1, 2]}
    assert result["user"] == "alice"
    assert result["task"] == "echo"
    assert re.fullmatch(re.escape(socket.gethostname()) + r"-\d+", result["cid"])


def test_task_errors(server):
    """A raising task gives -32603 with an error id (in the log too); TaskError keeps its code."""
    async def scenario():
        ws = await Ws.connect(server.url, token=server.tokens["alice"])
        out = (await ws.call("boom"), await ws.call("refuse"), await ws.call("ping"))
        await ws.aclose()
        return out

    boom, refuse, ping = run(scenario())
    assert boom["error"]["code"] == -32603
    assert "secret" not in json.dumps(boom)
    error_id = boom["error"]["data"]["error_id"]
    assert refuse["error"] == {"code": -32006, "message": "you asked for it",
                               "data": {"why": "test"}}
    assert ping["result"] == "pong"
    log = (server.work / "var" / "zephserver.log").read_text()
    assert f"error id {error_id}" in log
    assert "secret internal detail" in log


def test_a_task_answering_through_a_future(server):
    """A task may return a Future: its thread is free at once, the request keeps its
    in-flight slot until the future settles, and a failure is reported as from main()."""
    async def scenario():
        ws = await Ws.connect(server.url, token=server.tokens["alice"])
        for i in range(4):  # WS_MAX_IN_FLIGHT requests, answered in 2 s
            await ws.send({"jsonrpc": "2.0", "id": f"l{i}", "method": "later",
                           "params": {"after": 2.0, "value": i}})
        await ws.send({"jsonrpc": "2.0", "id": "over", "method": "ping"})
        over = await ws.recv()
        other = await Ws.connect(server.url)  # both task threads are free meanwhile
        started = time.monotonic()
        pong = await other.call("ping")
        waited = time.monotonic() - started
        later = {r["id"]: r["result"] for r in [await ws.recv() for _ in range(4)]}
        failures = [await ws.call("later", {"outcome": o}) for o in ("refuse", "boom", "unjson")]
        after = await ws.call("ping")  # every slot was given back
        await ws.aclose()
        await other.aclose()
        return over, pong, waited, later, failures, after

    over, pong, waited, later, (refuse, boom, unjson), after = run(scenario())
    assert over["id"] == "over"
    assert over["error"]["code"] == -32004
    assert pong["result"] == "pong"
    assert waited < 1.5
    assert later == {"l0": 0, "l1": 1, "l2": 2, "l3": 3}
    assert refuse["error"] == {"code": -32006, "message": "refused later"}
    for failed in (boom, unjson):
        assert failed["error"]["code"] == -32603
        assert "error_id" in failed["error"]["data"]
    assert "secret" not in json.dumps(boom)
    assert "secret later detail" in (server.work / "var" / "zephserver.log").read_text()
    assert after["result"] == "pong"


def test_a_future_never_settled_is_answered_at_the_reply_timeout(server):
    """A Future nobody settles (a wedged service) still gets its client an answer,
    -32012 with an error id in the log, after TASK_REPLY_TIMEOUT (3 s here), and gives
    the connection's in-flight slots back."""
    async def scenario():
        ws = await Ws.connect(server.url, token=server.tokens["alice"])
        started = time.monotonic()
        for i in range(4):  # WS_MAX_IN_FLIGHT
            await ws.send({"jsonrpc": "2.0", "id": f"n{i}", "method": "later",
                           "params": {"outcome": "never"}})
        await ws.send({"jsonrpc": "2.0", "id": "over", "method": "ping"})
        over = await ws.recv()
        replies = [await ws.recv(timeout=10) for _ in range(4)]
        waited = time.monotonic() - started
        after = await ws.call("ping")
        await ws.aclose()
        return over, replies, waited, after

    over, replies, waited, after = run(scenario())
    log = server.work / "var" / "zephserver.log"  # written before the reply is sent
    assert over["error"]["code"] == -32004
    assert sorted(r["id"] for r in replies) == ["n0", "n1", "n2", "n3"]
    for reply in replies:
        assert reply["error"]["code"] == -32012, reply
        assert "no answer within 3s" in reply["error"]["message"]
        assert reply["error"]["data"]["error_id"] in log.read_text()
    assert 3.0 <= waited < 8.0
    assert after["result"] == "pong"


@pytest.mark.parametrize(("message", "code"), [
    ("{not json", -32700),
    ('"just a string"', -32600),
    ('{"jsonrpc": "2.0", "id": 1}', -32600),
    ('{"jsonrpc": "2.0", "id": 1, "method": "nope"}', -32601),
    ('{"jsonrpc": "2.0", "id": 1, "method": "room.join", "params": {"room": 5}}', -32602),
    ("[]", -32600),
])
def test_bad_input(server, message, code):
    """Each kind of bad message gets its JSON-RPC code, and the server still answers ping."""
    async def scenario():
        ws = await Ws.connect(server.url, token=server.tokens["alice"])
        await ws.send(message)
        reply = await ws.recv()
        other = await Ws.connect(server.url)
        pong = await other.call("ping")
        await ws.aclose()
        await other.aclose()
        return reply, pong

    reply, pong = run(scenario())
    assert reply["error"]["code"] == code
    assert pong["result"] == "pong"


def test_deeply_nested_json_is_a_parse_error_and_the_connection_stays(server):
    async def scenario():
        ws = await Ws.connect(server.url, token=server.tokens["alice"])
        try:
            await ws.send("[" * 20000 + "]" * 20000)
            reply = await ws.recv()
            return reply, await ws.call("ping")
        finally:
            await ws.aclose()

    reply, pong = run(scenario())
    assert reply["error"]["code"] == -32700
    assert "nested too deeply" in reply["error"]["message"]
    assert pong["result"] == "pong"  # the same connection
    status, answer, _ = rest("POST", server.url + "/paraview", server.tokens["alice"],
                             ("[" * 20000 + "]" * 20000).encode())
    assert (status, answer["error"]) == (400, "request body must be JSON (nested too deeply)")


def test_batches(server):
    """A batch gets one array reply without the notifications; 1,000 is refused clearly."""
    async def scenario():
        ws = await Ws.connect(server.url, token=server.tokens["alice"])
        await ws.send([{"jsonrpc": "2.0", "id": 1, "method": "ping"},
                       {"jsonrpc": "2.0", "method": "ping"},
                       {"jsonrpc": "2.0", "id": 2, "method": "nope"}, 5])
        small = await ws.recv()
        await ws.send([{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(1000)])
        big = await ws.recv()
        await ws.send({"jsonrpc": "2.0", "method": "ping"})  # notification: no reply
        pong = await ws.call("ping")
        await ws.aclose()
        return small, big, pong

    small, big, pong = run(scenario())
    by_id = {r.get("id"): r for r in small}
    assert len(small) == 3
    assert by_id[1]["result"] == "pong"
    assert by_id[2]["error"]["code"] == -32601
    assert by_id[None]["error"]["code"] == -32600
    assert big["error"]["code"] == -32600
    assert "exceeds the limit of 100" in big["error"]["message"]
    assert pong["id"] == 1
    assert pong["result"] == "pong"


def test_oversized_message_closes_1009_and_binary_is_refused(server):
    """A message over WS_MAX_MESSAGE_SIZE closes with 1009; a binary frame gets an error."""
    async def scenario():
        ws = await Ws.connect(server.url, token=server.tokens["alice"])
        await ws.send(b"\x00\x01")
        binary = await ws.recv()
        await ws.send("x" * (65 * 1024))
        while await ws.conn.read_message() is not None:
            pass
        code = ws.conn.close_code
        ws.conn.close()
        other = await Ws.connect(server.url)
        pong = await other.call("ping")
        await other.aclose()
        return binary, code, pong

    binary, code, pong = run(scenario())
    assert binary["error"]["code"] == -32600
    assert "binary" in binary["error"]["message"]
    assert code == 1009
    assert pong["result"] == "pong"


def test_flood_on_one_connection_does_not_starve_others(server):
    """Over WS_MAX_IN_FLIGHT requests on one connection get -32004; another still answers."""
    async def scenario():
        flood = await Ws.connect(server.url, token=server.tokens["alice"])
        for i in range(10):
            await flood.send({"jsonrpc": "2.0", "id": i, "method": "slow"})
        other = await Ws.connect(server.url)
        started = time.monotonic()
        pong = await other.call("ping")
        waited = time.monotonic() - started
        replies = [await flood.recv() for _ in range(10)]
        await flood.aclose()
        await other.aclose()
        return replies, pong, waited

    replies, pong, waited = run(scenario())
    codes = [r.get("error", {}).get("code") for r in replies]
    assert codes.count(-32004) == 6
    assert pong["result"] == "pong"
    assert waited < 2.0


def test_full_pool_answers_queue_full_quickly(server):
    """When every task thread and queue slot is busy, a request gets -32004 at once."""
    async def scenario():
        conns = [await Ws.connect(server.url, token=server.tokens["bob"]) for _ in range(3)]
        for c in conns:
            for i in range(4):
                await c.send({"jsonrpc": "2.0", "id": i, "method": "slow"})
        replies = []
        for c in conns:
            replies += [await c.recv() for _ in range(4)]
            await c.aclose()
        return replies

    started = time.monotonic()
    replies = run(scenario())
    full = [r for r in replies if r.get("error", {}).get("code") == -32004]
    assert len(full) >= 2
    assert "queue full" in full[0]["error"]["message"]
    assert time.monotonic() - started < 5


def test_rooms_between_two_users(server):
    """Two users in a room see each other's room.say, and room.left when one disconnects."""
    async def scenario():
        alice = await Ws.connect(server.url, token=server.tokens["alice"])
        bob = await Ws.connect(server.url, token=server.tokens["bob"])
        await alice.call("room.join", {"room": "lobby"})
        joined = await bob.call("room.join", {"room": "lobby"})
        seen_join = await alice.until("room.joined")
        said = await bob.call("room.say", {"room": "lobby", "message": "hi alice"})
        heard = await alice.until("room.message")
        await bob.aclose()
        left = await alice.until("room.left")
        users = await alice.until("room.users")
        not_member = await alice.call("room.say", {"room": "elsewhere", "message": "x"})
        await alice.aclose()
        return joined, seen_join, said, heard, left, users, not_member

    joined, seen_join, said, heard, left, users, not_member = run(scenario())
    assert joined["result"]["users"] == ["alice", "bob"]
    assert seen_join["user"] == "bob"
    assert said["result"]["delivered"] == 2
    assert heard == {"room": "lobby", "user": "bob", "message": "hi alice"}
    assert left["user"] == "bob"
    assert users["users"] == ["alice"]
    assert not_member["error"]["code"] == -32006

def test_tokens_minted_with_a_token_are_revoked_with_it(server):
    """A script's token makes a token, which makes another: revoking the first revokes
    the whole line (a leaked token cannot leave live ones behind)."""
    async def mint(token):
        ws = await Ws.connect(server.url, token=token)
        try:
            return (await ws.call("tokens.create", {"name": "minted"}))["result"]
        finally:
            await ws.aclose()

    async def whoami(token):
        try:
            ws = await Ws.connect(server.url, token=token)
        except Exception as exc:  # refused at the upgrade
            return exc
        try:
            return (await ws.call("whoami"))["result"]["username"]
        finally:
            await ws.aclose()

    root = run(mint(server.tokens["alice"]))
    child = run(mint(root["token"]))
    grandchild = run(mint(child["token"]))
    assert run(whoami(grandchild["token"])) == "alice"
    result = server.cli("zephserver-admin", "revoke_token", root["prefix"])
    assert result.returncode == 0, result.stderr
    assert "revoked 3 token(s)" in result.stdout
    for token in (root, child, grandchild):
        refused = run(whoami(token["token"]))
        assert "401" in str(refused), refused
    assert run(whoami(server.tokens["alice"])) == "alice"  # the one it was made with lives



def test_zz_long_task_interrupted_at_stop_and_clients_get_1001(server):
    """Stopping the daemon interrupts a running task and closes connections with 1001."""
    async def scenario():
        ws = await Ws.connect(server.url, token=server.tokens["alice"])
        await ws.send({"jsonrpc": "2.0", "id": 1, "method": "long"})
        await ws.call("ping")  # the long task is running by now (pool of 2)
        stop = await asyncio.get_running_loop().run_in_executor(
            None, lambda: server.cli("zephserver-stop"))
        while await ws.conn.read_message() is not None:
            pass
        ws.conn.close()
        return stop, ws.conn.close_code

    started = time.monotonic()
    stop, close_code = run(scenario())
    assert stop.returncode == 0, stop.stderr
    assert close_code == 1001
    assert time.monotonic() - started < 8
    assert (server.work / "interrupted").read_text() == "interrupted"


def _raw_websocket(url: str, token: str) -> socket.socket:
    """A client that does the handshake, then never reads: it will not answer pings."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
                  ).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _send_text(sock: socket.socket, text: str) -> None:
    payload = text.encode()
    assert len(payload) < 126
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)


def test_keepalive_drops_a_dead_peer_and_its_rooms(workdir, daemons):
    """A peer that stops answering pings is closed: after WS_PING_TIMEOUT tornado sends
    the close frame and, with no answer, drops the socket 5 s later; the others in its
    room are then told it left."""
    env = child_env()
    settings = write_settings(workdir, DJANGO_SETTINGS_MODULE="tests.support.django_test_"
                              "settings", WS_PING_INTERVAL=0.2, WS_PING_TIMEOUT=0.3)
    admin(settings, "migrate", "-v0", env=env)
    tokens = create_users(settings, env)
    daemon = daemons(settings, env).start()

    async def scenario():
        alice = await Ws.connect(daemon.url, token=tokens["alice"])
        await alice.call("room.join", {"room": "lab"})
        dead = _raw_websocket(daemon.url, tokens["bob"])
        _send_text(dead, json.dumps({"jsonrpc": "2.0", "method": "room.join",
                                     "params": {"room": "lab"}}))
        joined = await alice.until("room.joined")
        left = await alice.until("room.left", timeout=10)  # pings unanswered: dropped
        await alice.aclose()
        dead.close()
        return joined, left

    joined, left = run(scenario())
    assert joined["user"] == "bob"
    assert left == {"room": "lab", "user": "bob", "cid": joined["cid"]}
    daemon.cli("zephserver-stop")

