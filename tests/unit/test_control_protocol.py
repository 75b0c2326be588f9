import json

import pytest

from zephserver.errors import RpcCode, RpcError
from zephserver.infra.control_protocol import FrameDecoder, FrameError, encode, parse_request


def test_frames_split_across_reads_are_reassembled():
    """A frame arriving one byte at a time is decoded once complete."""
    data = encode({"a": 1}) + encode({"b": 2})
    decoder = FrameDecoder()
    frames = []
    for i in range(len(data)):
        frames += decoder.feed(data[i:i + 1])
    assert [json.loads(f) for f in frames] == [{"a": 1}, {"b": 2}]
    assert decoder.pending == 0


def test_oversized_frame_is_refused():
    """A length over the limit raises FrameError before buffering the body."""
    decoder = FrameDecoder(max_frame=10)
    with pytest.raises(FrameError, match="exceeds"):
        decoder.feed((11).to_bytes(4, "big"))


def test_header_is_big_endian_length():
    """The header is a 4-byte big-endian body length."""
    frame = encode([1])
    assert frame[:4] == (3).to_bytes(4, "big")
    assert frame[4:] == b"[1]"


@pytest.mark.parametrize(("body", "code"), [
    (b"{nope", RpcCode.PARSE_ERROR),
    (b"\xff\xfe", RpcCode.PARSE_ERROR),
    (b"[1, 2]", RpcCode.INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": 1}', RpcCode.INVALID_REQUEST),
    (b'{"jsonrpc": "1.0", "id": 1, "method": "x"}', RpcCode.INVALID_REQUEST),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "x", "params": 3}', RpcCode.INVALID_REQUEST),
])
def test_bad_requests_map_to_codes(body, code):
    """Malformed bodies raise the JSON-RPC code that names the problem."""
    with pytest.raises(RpcError) as info:
        parse_request(body)
    assert info.value.code == code


def test_good_request_parses():
    """A valid request yields id, method and params."""
    assert parse_request(b'{"jsonrpc":"2.0","id":7,"method":"status"}') == (7, "status", {})
