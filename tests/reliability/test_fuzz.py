"""JSON-RPC fuzz on /ws (hypothesis): whatever a client sends (valid calls of every method
with hostile params, malformed requests, batches, deep nesting, text that is not JSON),
it gets well-formed JSON-RPC answers, never a traceback or an internal error (-32603 is a
bug), and its connection stays usable. A few thousand cases in ``make test``, ten times
more in ``make test-heavy``."""

import asyncio
import json
import shutil
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.conftest import HEAVY, scale
from tests.support.daemon import child_env, short_tmpdir, write_settings
from tests.support.web import Ws, start_with_users
from zephserver import defaults

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600 if HEAVY else 240)]

CASES = scale(2000, 20000)
# Revoking the fuzzing user's own tokens would end its connection: not a fault to find.
METHODS = sorted(set(defaults.TASKS_PATH) - {"tokens.revoke"})

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)
# Params shaped like the real ones (the keys the methods read), with hostile values.
KEYS = ["id", "app", "params", "offset", "limit", "state", "priority", "room", "message",
        "name", "signal", "position", "before", "after", "all", "owner", "ids", "data"]
params = (st.dictionaries(st.sampled_from(KEYS), values, max_size=4) | values)
requests = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0") | values,
     "method": st.sampled_from(METHODS) | st.text(max_size=20) | values},
    optional={"id": st.integers(-2**63, 2**63) | st.text(max_size=10) | st.none()
              | values, "params": params})
frames = st.one_of(
    requests.map(json.dumps),
    st.lists(requests, max_size=5).map(json.dumps),
    values.map(json.dumps),
    st.text(max_size=200),
    st.integers(1, 5000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 5000).map(lambda n: '{"a":' * n + "1" + "}" * n),
)


@pytest.fixture(scope="module")
def connection():
    work = short_tmpdir()
    daemon = start_with_users(write_settings(
        work, DJANGO_SETTINGS_MODULE="tests.support.django_test_settings", APPS={},
        LOG_LEVEL="WARNING"), child_env())
    loop = asyncio.new_event_loop()
    ws = loop.run_until_complete(Ws.connect(daemon.url, token=daemon.tokens["alice"]))
    yield daemon, loop, ws
    loop.run_until_complete(ws.aclose())
    loop.close()
    daemon.cli("zephserver-stop")
    daemon.close()
    shutil.rmtree(work, ignore_errors=True)


def well_formed(reply) -> None:
    """A JSON-RPC response: a result, or an error with an int code and a message, never
    an internal error or a traceback."""
    assert isinstance(reply, dict), reply
    assert reply.get("jsonrpc") == "2.0", reply
    if "method" in reply:  # a notification (room, job update): not an answer
        return
    assert ("result" in reply) != ("error" in reply), reply
    if "error" in reply:
        error = reply["error"]
        assert isinstance(error["code"], int), reply
        assert isinstance(error["message"], str), reply
        assert error["code"] != -32603, reply  # an internal error is a bug
        assert "Traceback" not in json.dumps(reply), reply


def test_fuzzed_frames_get_well_formed_answers(connection, figure):
    daemon, loop, ws = connection
    counts = {"frames": 0, "answers": 0}
    probe = iter(range(10**9))

    async def exchange(frame: str) -> None:
        await ws.send(frame)
        marker = f"probe-{next(probe)}"
        await ws.send({"jsonrpc": "2.0", "id": marker, "method": "ping"})
        while True:  # every message up to the probe's answer
            message = await ws.recv(30)
            assert message is not None, f"the connection closed after {frame[:200]!r}"
            for reply in message if isinstance(message, list) else [message]:
                well_formed(reply)
                if reply.get("id") == marker:
                    assert reply["result"] == "pong", reply
                    return
                counts["answers"] += 1

    @settings(max_examples=CASES, deadline=None, database=None, derandomize=not HEAVY,
              suppress_health_check=list(HealthCheck))
    @given(frames)
    def one(frame: str) -> None:
        counts["frames"] += 1
        loop.run_until_complete(exchange(frame))

    started = time.monotonic()
    one()
    took = time.monotonic() - started
    assert "Traceback" not in daemon.output
    figure(f"{counts['frames']} fuzzed frames, {counts['answers']} answers, all well formed, "
           f"0 internal errors, 0 tracebacks, the connection kept ({took:.1f} s)")
