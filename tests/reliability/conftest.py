"""The reliability suite prints what it measured: each test records its figures with the
``figure`` fixture, and they are listed together at the end of the run.

``make test`` runs a reduced count of each attack; ``make test-heavy`` (ZEPH_HEAVY=1)
runs the full ones."""

import os

import pytest

HEAVY = os.environ.get("ZEPH_HEAVY") == "1"
_figures: list[tuple[str, str]] = []


def scale(ci: int, heavy: int) -> int:
    """How many of something this run attacks with."""
    return heavy if HEAVY else ci


@pytest.fixture
def figure(request):
    def record(text: str) -> None:
        _figures.append((request.node.name, text))
    return record


def pytest_terminal_summary(terminalreporter):
    if not _figures:
        return
    terminalreporter.section("reliability figures" + (" (heavy)" if HEAVY else ""))
    for test, text in _figures:
        terminalreporter.write_line(f"{test}: {text}")
