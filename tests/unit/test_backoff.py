import pytest

from tests.support.clock import FakeClock
from zephserver.backoff import BackoffPolicy, RestartTracker


def no_jitter() -> float:
    return 0.0


def test_delays_grow_exponentially_and_are_capped():
    """Delays double from the initial step and stop at the cap."""
    policy = BackoffPolicy(initial=0.5, factor=2, cap=3, max_retries=10)
    assert [policy.delay(n, no_jitter) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_zero_initial_restarts_at_once_then_slows_down():
    """With initial 0 the first restart is immediate and later ones still grow."""
    policy = BackoffPolicy(initial=0, factor=2, cap=10, min_step=0.05)
    assert policy.delay(1, no_jitter) == 0
    assert policy.delay(2, no_jitter) == pytest.approx(0.05)
    assert policy.delay(3, no_jitter) == pytest.approx(0.1)


def test_jitter_only_adds():
    """Jitter stretches a delay by at most its fraction."""
    policy = BackoffPolicy(initial=1, jitter=0.1)
    assert policy.delay(1, lambda: 1.0) == pytest.approx(1.1)
    assert policy.delay(1, lambda: 0.0) == 1.0


def test_tracker_gives_up_after_max_retries():
    """Quick consecutive crashes lead to FATAL (None) after max_retries restarts."""
    clock = FakeClock()
    tracker = RestartTracker(BackoffPolicy(initial=1, factor=2, cap=60, max_retries=3,
                                           min_uptime=5))
    delays = []
    for _ in range(4):
        tracker.started(clock.monotonic())
        clock.advance(0.1)
        delays.append(tracker.exited(clock.monotonic(), no_jitter))
        if delays[-1]:
            clock.advance(delays[-1])
    assert delays == [1, 2, 4, None]
    assert tracker.restarts == 3


def test_tracker_healthy_run_resets_the_count():
    """A run longer than min_uptime forgives earlier crashes."""
    clock = FakeClock()
    tracker = RestartTracker(BackoffPolicy(initial=1, factor=2, max_retries=2, min_uptime=5))
    tracker.started(clock.monotonic())
    clock.advance(0.1)
    assert tracker.exited(clock.monotonic(), no_jitter) == 1
    tracker.started(clock.monotonic())
    clock.advance(0.1)
    assert tracker.exited(clock.monotonic(), no_jitter) == 2
    tracker.started(clock.monotonic())
    clock.advance(6)  # healthy
    assert tracker.exited(clock.monotonic(), no_jitter) == 1
    assert tracker.failures == 1
    assert tracker.restarts == 3


def test_attempt_must_be_positive():
    """Attempt numbers start at 1."""
    with pytest.raises(ValueError, match="attempt"):
        BackoffPolicy().delay(0)
