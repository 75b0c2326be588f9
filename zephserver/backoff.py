"""Restart policy: capped exponential backoff, reset after a healthy run, give up after N."""

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BackoffPolicy:
    """Pure description of how long to wait before restart number ``attempt`` (1-based).

    ``initial`` 0 means "restart at once" for the first attempt; later attempts then start
    from ``min_step`` so a crash loop still slows down.
    """

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    max_retries: int = 5
    min_uptime: float = 5.0
    jitter: float = 0.0  # fraction, e.g. 0.1 = up to +10%
    min_step: float = 0.05

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before restart ``attempt`` (1 = first restart)."""
        if attempt < 1:
            raise ValueError("attempt starts at 1")
        base = self.initial if self.initial > 0 else self.min_step
        if attempt == 1 and self.initial == 0:
            return 0.0
        step = 0 if self.initial > 0 else 1
        value = min(self.cap, base * self.factor ** (attempt - 1 - step))
        return value * (1.0 + self.jitter * rand())


@dataclass
class RestartTracker:
    """Counts consecutive failed runs of one supervised thing and says what to do next.

    Feed it the clock readings at start and at exit; it answers the delay before the next
    start, or None when the retries are used up (FATAL).
    """

    policy: BackoffPolicy
    failures: int = 0
    restarts: int = 0
    _started_at: float | None = field(default=None, repr=False)

    def started(self, now: float) -> None:
        self._started_at = now

    def uptime(self, now: float) -> float:
        """How long the current run has lasted (0 if none is running)."""
        return 0.0 if self._started_at is None else now - self._started_at

    def exited(self, now: float, rand: Callable[[], float] = random.random) -> float | None:
        """Record an unexpected exit at ``now``; return the delay or None if giving up."""
        uptime = self.uptime(now)
        self._started_at = None
        if uptime >= self.policy.min_uptime:
            self.failures = 0  # a healthy run forgives earlier crashes
        self.failures += 1
        if self.failures > self.policy.max_retries:
            return None
        self.restarts += 1
        return self.policy.delay(self.failures, rand)

    def reset(self) -> None:
        self.failures = 0
