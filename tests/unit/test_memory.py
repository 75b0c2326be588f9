"""Giving memory back: at most once per interval, the last quiet moment never dropped."""

import pytest

from tests.support.poll import poll_until
from zephserver import memory, metrics

pytestmark = pytest.mark.timeout(20)


def given_back() -> float:
    return metrics.MEMORY_TRIMS.value()


def test_quiet_moments_are_given_back_at_most_once_per_interval(monkeypatch):
    monkeypatch.setattr(memory, "MIN_INTERVAL", 0.3)
    poll_until(lambda: not memory.pending(), 5, what="an earlier give-back done")
    before = given_back()
    memory.quiet()
    poll_until(lambda: given_back() == before + 1 and not memory.pending(), 5,
               what="the first give-back")
    for _ in range(50):  # a stream of bursts within the interval: one more, at its end
        memory.quiet()
    assert memory.pending()
    poll_until(lambda: not memory.pending(), 5, what="the kept give-back")
    assert given_back() == before + 2
