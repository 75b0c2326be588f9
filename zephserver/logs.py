"""The daemon's log: text or JSON lines, each line carrying what it is about.

The router says which request a task thread runs (``for_request``): its lines carry the
connection, JSON-RPC id and method; ``log.info(..., extra={"job": 12})`` sets fields for
one line. Every line also names the node. The file handler reopens a file that logrotate
moved away (``WatchedFileHandler``), so no line is written to a deleted file.
"""

import json
import logging
import logging.handlers
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Fields a line may carry, in the order a text line shows them.
FIELDS = ("node", "conn", "rpc_id", "method", "job")
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(threadName)s] %(name)s: %(message)s"


# The request each task thread runs: an attribute, not a context variable, because every
# request pays for it.
_request = threading.local()


def for_request(fields: tuple[str, Any, str] | None, origin: str | None = None) -> None:
    """The request this thread runs now, (conn, rpc_id, method), and where it comes from
    (an address and a connection, for the audit lines); None once it is done."""
    _request.fields = fields
    _request.origin = origin


def current_origin() -> str | None:
    return getattr(_request, "origin", None)


class ContextFilter(logging.Filter):
    """Puts the node and the thread's request on every record (as attributes)."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        asked = getattr(_request, "fields", None)
        if asked is not None:
            for name, value in zip(("conn", "rpc_id", "method"), asked, strict=True):
                if not hasattr(record, name):  # a line's own extra= wins
                    setattr(record, name, value)
        if not hasattr(record, "node"):
            record.node = self.node
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = " ".join(f"{n}={getattr(record, n)}" for n in FIELDS[1:]
                          if getattr(record, n, None) is not None)
        if not fields:
            return text
        first, newline, rest = text.partition("\n")  # after the message, before a traceback
        return f"{first} [{fields}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, thread, message, the fields, and
    the traceback as one string."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "thread": record.threadName,
            "message": record.getMessage()}
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class CountingHandler(logging.handlers.WatchedFileHandler):
    """The log file, reopened when moved; ``on_bytes(n)`` is told what each line cost."""

    def __init__(self, path: str, on_bytes: Callable[[int], None] | None = None) -> None:
        super().__init__(path, encoding="utf-8")
        self.on_bytes = on_bytes

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if self.on_bytes is not None:
            self.on_bytes(len(text.encode("utf-8", "replace")) + 1)
        return text


def levels(setting: str | dict[str, str]) -> dict[str, str]:
    """LOG_LEVEL as {logger name: level}; "" is the root logger."""
    if isinstance(setting, str):
        return {"": setting.upper()}
    return {("" if name in ("", "root") else name): level.upper()
            for name, level in setting.items()}


def apply_levels(setting: str | dict[str, str]) -> None:
    for name, level in levels(setting).items():
        logging.getLogger(name or None).setLevel(level)


def configure_logging(path: str, level: str | dict[str, str], fmt: str, node: str,
                      to_stderr: bool = True,
                      on_bytes: Callable[[int], None] | None = None) -> None:
    """Log to ``path`` (and stderr in the foreground) at ``level``, as ``fmt``."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [CountingHandler(path, on_bytes)]
    if to_stderr:
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(ContextFilter(node))
        root.addHandler(handler)
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    # Django's at INFO, as its own logging configuration had them (its template engine
    # logs every unresolved variable at DEBUG); LOG_LEVEL may name "django" to change it.
    logging.getLogger("django").setLevel(logging.INFO)
    apply_levels(level)
