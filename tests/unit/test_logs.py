"""The daemon's log lines: fields from the thread's request and from extra=, text and
JSON, and LOG_LEVEL per logger."""

import json
import logging

from zephserver.config import SPEC, Settings
from zephserver.logs import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    apply_levels,
    configure_logging,
    for_request,
    levels,
)


def record(message: str, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("zephserver.x", logging.INFO, __file__, 1, message, (), None)
    rec.__dict__.update(extra)
    ContextFilter("n1").filter(rec)
    return rec


def test_a_line_carries_its_request_and_its_own_fields():
    for_request(("n1-4", 7, "jobs.get"))
    try:
        rec = record("looked up", job=12)
    finally:
        for_request(None)
    line = json.loads(JsonFormatter().format(rec))
    assert {k: line[k] for k in ("node", "conn", "rpc_id", "method", "job", "message")} == {
        "node": "n1", "conn": "n1-4", "rpc_id": 7, "method": "jobs.get", "job": 12,
        "message": "looked up"}
    text = TextFormatter().format(rec)
    assert text.endswith("zephserver.x: looked up [conn=n1-4 rpc_id=7 method=jobs.get job=12]")


def test_outside_a_request_only_the_node():
    for_request(("n1-4", 8, "ping"))
    for_request(None)
    line = json.loads(JsonFormatter().format(record("plain")))
    assert set(line) == {"time", "level", "logger", "thread", "message", "node"}
    assert TextFormatter().format(record("plain")).endswith("zephserver.x: plain")


def test_a_traceback_stays_one_json_line():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        rec = logging.LogRecord("z", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    ContextFilter("n1").filter(rec)
    text = JsonFormatter().format(rec)
    assert "\n" not in text
    assert "ValueError: boom" in json.loads(text)["exc"]


def test_log_level_per_logger():
    assert levels("info") == {"": "INFO"}
    assert levels({"root": "warning", "zephserver.service.router": "debug"}) == {
        "": "WARNING", "zephserver.service.router": "DEBUG"}
    before = logging.getLogger("zephserver.test_logs").level
    try:
        apply_levels({"zephserver.test_logs": "ERROR"})
        assert logging.getLogger("zephserver.test_logs").level == logging.ERROR
    finally:
        logging.getLogger("zephserver.test_logs").setLevel(before)
    check = SPEC["LOG_LEVEL"].check
    assert check({"": "INFO", "a.b": "DEBUG"}, Settings({})) == []
    assert check({"a.b": "LOUD"}, Settings({}))
    assert check({}, Settings({}))


def test_django_logs_at_info_unless_log_level_names_it(tmp_path):
    root, django = logging.getLogger(), logging.getLogger("django")
    saved = root.handlers[:], root.level, django.level

    def django_level(setting) -> int:
        configure_logging(str(tmp_path / "d.log"), setting, "text", "n1", to_stderr=False)
        for handler in root.handlers[:]:
            root.removeHandler(handler)
            handler.close()
        return logging.getLogger("django.template").getEffectiveLevel()

    try:
        assert django_level("DEBUG") == logging.INFO
        assert root.level == logging.DEBUG
        assert django_level({"": "DEBUG", "django": "DEBUG"}) == logging.DEBUG
    finally:
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        django.setLevel(saved[2])
