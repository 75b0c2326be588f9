"""Services used by the tests (real classes run by the real ServiceManager)."""

import os
import threading
import time

from zephserver.infra.service import Service


def _trivial(index: int) -> type:
    return type(f"Trivial{index}", (Service,), {"name": f"trivial{index}"})


for _i in range(20):
    globals()[f"Trivial{_i}"] = _trivial(_i)


class Plain:
    """A service written to the 2015 contract only (no base class, no name)."""

    def __init__(self) -> None:
        self._stop = threading.Event()

    def main(self) -> None:
        self._stop.wait()

    def disable(self) -> None:
        self._stop.set()


class Crasher(Service):
    """Raises in main() before it is ready (a service that fails to start: whether it is
    FATAL by the ready line does not hang on which thread runs first); appends each start
    time to $ZEPH_TEST_CRASH_LOG if set."""

    name = "crasher"
    announces_ready = True  # and never does

    def main(self) -> None:
        path = os.environ.get("ZEPH_TEST_CRASH_LOG")
        if path:
            with open(path, "a") as f:
                f.write(f"{time.monotonic()}\n")
        raise RuntimeError("crasher always crashes")


# Set by an in-process test when it is done with a Stubborn service, to free its thread.
STUBBORN_RELEASE = threading.Event()


class Stubborn(Service):
    """Ignores disable(): main() returns only when a test sets STUBBORN_RELEASE."""

    name = "stubborn"
    stop_timeout = 0.5

    def main(self) -> None:
        STUBBORN_RELEASE.wait()

    def disable(self) -> None:
        pass


class SlowReady(Service):
    """Announces readiness only after a delay ($ZEPH_TEST_READY_DELAY, default 1 s)."""

    name = "slowready"
    announces_ready = True

    def main(self) -> None:
        delay = float(os.environ.get("ZEPH_TEST_READY_DELAY", "1.0"))
        if not self._disabled.wait(delay):
            assert self.ctx is not None
            self.ctx.ready()
        self._disabled.wait()


class Dependent(Service):
    """Requires trivial0 and checks it is RUNNING when its own main() starts."""

    name = "dependent"
    requires = ("trivial0",)

    def main(self) -> None:
        assert self.ctx is not None
        self.ctx.get("trivial0")
        super().main()


class NotAService:
    """Lacks main() and disable(): a settings error."""
