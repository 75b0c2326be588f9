import threading

import pytest

from tests.support.poll import poll_until
from zephserver.launch.wakeup import WAKE, WakeableSelector

pytestmark = pytest.mark.timeout(30)


def test_a_burst_of_wake_ups_is_one_and_none_is_lost_after_it():
    selector = WakeableSelector()
    try:
        for _ in range(100):
            selector.wake()
        assert [data for _, data in selector.select(0)] == [WAKE]
        assert selector.select(0) == []  # the burst was one byte: nothing left over
        selector.wake()  # after the burst was taken: written again
        assert [data for _, data in selector.select(0)] == [WAKE]
    finally:
        selector.close()


def test_wake_ups_from_other_threads_always_end_a_wait():
    selector, done = WakeableSelector(), threading.Event()
    seen = []

    def waiter():
        while not done.is_set():
            if selector.select(5):
                seen.append(1)

    thread = threading.Thread(target=waiter)
    thread.start()
    try:
        for _ in range(200):
            before = len(seen)
            selector.wake()
            # each ends the wait at once, not at its 5 s timeout
            poll_until(lambda b=before: len(seen) > b, 1)
    finally:
        done.set()
        selector.wake()
        thread.join(10)
        selector.close()
