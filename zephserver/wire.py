"""The JSON text the daemon sends on every wire: compact, from one encoder (``json.dumps``
with separators builds an encoder per call: a third of a small reply's encoding)."""

import json
from typing import Any

compact = json.JSONEncoder(separators=(",", ":")).encode


def notification(method: str, params: Any) -> str:
    """A JSON-RPC 2.0 notification's text."""
    return compact({"jsonrpc": "2.0", "method": method, "params": params})
