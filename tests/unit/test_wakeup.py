import threading

import pytest

from tests.support.poll import poll_until
from zephserver.infra import held_wakes
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


def test_wake_ups_held_through_a_burst_happen_once_at_its_end():
    woken = []

    def wake():
        woken.append(threading.get_ident())

    assert held_wakes.defer(wake) is False  # outside a block: the caller wakes now
    with held_wakes.held():
        for _ in range(50):
            assert held_wakes.defer(wake) is True
        with held_wakes.held():  # nested: the outer block wakes
            assert held_wakes.defer(wake) is True
        assert woken == []
    assert woken == [threading.get_ident()]


def test_a_held_wake_up_happens_even_when_the_burst_fails():
    woken = []

    def burst():
        with held_wakes.held():
            held_wakes.defer(lambda: woken.append(1))
            raise RuntimeError("a publish failed")

    with pytest.raises(RuntimeError):
        burst()
    assert woken == [1]
    assert held_wakes.defer(lambda: woken.append(2)) is False  # (the block is over)


def test_a_flush_wakes_what_was_deferred_and_the_block_holds_what_comes_after():
    """(a thread about to wait inside a block: the job manager while the database does
    not take writes, its refusals already posted)"""
    woken = []
    with held_wakes.held():
        held_wakes.defer(lambda: woken.append("before"))
        held_wakes.flush()
        assert woken == ["before"]
        held_wakes.flush()  # nothing deferred since: nothing more
        assert woken == ["before"]
        assert held_wakes.defer(lambda: woken.append("after")) is True
        assert woken == ["before"]
    assert woken == ["before", "after"]
    held_wakes.flush()  # (outside a block: nothing to do)


def test_wake_ups_are_held_only_for_the_thread_in_the_block():
    seen = []
    with held_wakes.held():
        thread = threading.Thread(target=lambda: seen.append(held_wakes.defer(print)))
        thread.start()
        thread.join()
    assert seen == [False]
