"""The router's task pool: few runnable workers, but blocked workers never starve it."""

import threading

from zephserver.service.task_pool import TaskPool


def test_a_blocked_task_does_not_starve_the_queue():
    pool = TaskPool(size=3, queue_size=10, eager=1, stall=0.005)
    release = threading.Event()
    second_ran = threading.Event()
    try:
        assert pool.submit(lambda: release.wait(10))
        assert pool.submit(second_ran.set)  # only eager=1 busy worker, and it is blocked
        assert second_ran.wait(5), "the standby worker never took the waiting job"
    finally:
        release.set()
        assert pool.stop(5) == []


def test_full_queue_refuses_and_stop_drains():
    pool = TaskPool(size=1, queue_size=2, eager=1)
    release = threading.Event()
    started = threading.Event()
    try:
        assert pool.submit(lambda: (started.set(), release.wait(10)))
        assert started.wait(5)
        ran = []
        assert pool.submit(lambda: ran.append(1))
        assert pool.submit(lambda: ran.append(2))
        assert not pool.submit(lambda: ran.append(3))  # queue of 2 is full
        assert len(pool.drain()) == 2
    finally:
        release.set()
        assert pool.stop(5) == []
    assert ran == []
    assert not pool.submit(lambda: None)  # stopped


def test_jobs_queued_without_a_wake_wait_for_one_wake_then_all_run():
    pool = TaskPool(size=2, queue_size=10, eager=2)
    done = [threading.Event() for _ in range(5)]
    try:
        for event in done:
            assert pool.submit(event.set, wake=False)
        assert not done[0].wait(0.05), "a worker took a job nobody woke it for"
        pool.wake()
        assert all(event.wait(5) for event in done)
    finally:
        assert pool.stop(5) == []


def test_one_asker_holds_at_most_its_share_and_others_go_first():
    """Alice floods blocking jobs: she never holds more than half the workers, and Bob's
    job, queued after all of hers, runs at once on a free worker."""
    pool = TaskPool(size=4, queue_size=40, eager=4, share=0.5)
    release = threading.Event()
    running = []
    lock = threading.Lock()
    bob_ran = threading.Event()

    def alice_job():
        with lock:
            running.append(1)
        release.wait(10)

    try:
        for _ in range(10):
            assert pool.submit(alice_job, key="alice")
        assert pool.submit(bob_ran.set, key="bob")
        assert bob_ran.wait(5), "bob waited behind alice's flood"
        assert pool.load() == (2, 8)  # alice: her two workers busy, the rest queued
        assert len(running) == 2
    finally:
        release.set()
        assert pool.stop(5) == []
    assert len(running) == 10  # released, all hers ran in the end


def test_one_asker_holds_at_most_its_share_of_the_queue():
    pool = TaskPool(size=1, queue_size=10, eager=1, share=0.5)
    release, started = threading.Event(), threading.Event()
    try:
        assert pool.submit(lambda: (started.set(), release.wait(10)), key="alice")
        assert started.wait(5)
        accepted = sum(pool.submit(lambda: None, key="alice") for _ in range(10))
        assert accepted == 5
        assert pool.submit(lambda: None, key="bob")
    finally:
        release.set()
        assert pool.stop(5) == []
