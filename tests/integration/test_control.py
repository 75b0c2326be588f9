import os
import socket
import stat
import threading

import pytest

from tests.support.daemon import short_tmpdir
from zephserver.errors import RpcCode, RpcError
from zephserver.infra.control import ControlServer, SocketInUse
from zephserver.infra.control_protocol import ControlClient, encode

pytestmark = pytest.mark.integration


@pytest.fixture
def sock_path():
    path = short_tmpdir() / "c.sock"
    yield str(path)
    if path.exists():
        path.unlink()
    path.parent.rmdir()


def echo_dispatch(method, params):
    if method == "boom":
        raise ValueError("secret detail")
    if method == "fail":
        raise RpcError(RpcCode.CONFLICT, "nope")
    return {"method": method, "params": params}


@pytest.fixture
def server(sock_path):
    srv = ControlServer(sock_path, echo_dispatch)
    srv.bind()
    srv.start()
    yield srv
    srv.close()


def test_round_trip_and_mode(server, sock_path):
    """A request gets its result; the socket is mode 0600."""
    assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600
    with ControlClient(sock_path) as client:
        assert client.call("status") == {"method": "status", "params": {}}
        assert client.call("x", ["a"]) == {"method": "x", "params": ["a"]}


def test_errors_are_replies_not_crashes(server, sock_path):
    """RpcErrors keep their code; other exceptions are -32603 without detail."""
    with ControlClient(sock_path) as client:
        with pytest.raises(RpcError) as info:
            client.call("fail")
        assert info.value.code == RpcCode.CONFLICT
        with pytest.raises(RpcError) as info:
            client.call("boom")
        assert info.value.code == RpcCode.INTERNAL_ERROR
        assert "secret" not in info.value.message
        assert client.call("ping")["method"] == "ping"


def test_bad_frames_get_error_replies(server, sock_path):
    """Garbage JSON, a non-request and an oversized frame get errors; the server lives on."""
    with ControlClient(sock_path) as client:
        client.send_raw(len(b"{oops").to_bytes(4, "big") + b"{oops")
        assert client.read_message()["error"]["code"] == RpcCode.PARSE_ERROR
        client.send_raw(encode([1, 2]))
        assert client.read_message()["error"]["code"] == RpcCode.INVALID_REQUEST
        client.send_raw((1 << 30).to_bytes(4, "big"))
        assert client.read_message()["error"]["code"] == RpcCode.INVALID_REQUEST
    with ControlClient(sock_path) as client:
        assert client.call("ping")["method"] == "ping"


def test_stale_socket_is_replaced(sock_path):
    """A socket file nobody listens on is removed and rebound."""
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(sock_path)
    dead.close()
    srv = ControlServer(sock_path, echo_dispatch)
    srv.bind()
    srv.start()
    try:
        with ControlClient(sock_path) as client:
            assert client.call("ping")
    finally:
        srv.close()
    assert not os.path.exists(sock_path)


def test_live_socket_is_never_replaced(server, sock_path):
    """A second server refuses to take a path a live server answers on."""
    with pytest.raises(SocketInUse):
        ControlServer(sock_path, echo_dispatch).bind()
    with ControlClient(sock_path) as client:
        assert client.call("ping")


def test_slow_command_does_not_block_others(sock_path):
    """A verb that blocks on one connection does not delay another connection."""
    release = threading.Event()

    def dispatch(method, params):
        if method == "slow":
            release.wait(10)
        return method

    srv = ControlServer(sock_path, dispatch)
    srv.bind()
    srv.start()
    try:
        slow = ControlClient(sock_path).connect()
        slow.send_raw(encode({"jsonrpc": "2.0", "id": 1, "method": "slow"}))
        with ControlClient(sock_path, timeout=2) as fast:
            assert fast.call("status") == "status"
        release.set()
        assert slow.read_message()["result"] == "slow"
        slow.close()
    finally:
        release.set()
        srv.close()
