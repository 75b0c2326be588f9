"""The actor both the job manager and the agent run on: order, calls, timers, stop."""

import threading
import time

import pytest

from zephserver.actor import Actor
from zephserver.errors import RpcError


class Recorder(Actor):
    def __init__(self):
        super().__init__()
        self.seen = []
        self.batches = []

    def handle(self, items):
        self.batches.append(len(items))
        super().handle(items)


@pytest.fixture
def actor():
    a = Recorder()
    t = threading.Thread(target=a.run_inbox, name="test-actor")
    t.start()
    yield a
    a.close_inbox()
    t.join(5)
    assert not t.is_alive()


def test_posts_run_in_order_on_the_actor_thread(actor):
    threads = []
    for i in range(100):
        actor.post(lambda i=i: (actor.seen.append(i), threads.append(
            threading.current_thread().name)))
    assert actor.call(lambda: len(actor.seen)) == 100
    assert actor.seen == list(range(100))
    assert set(threads) == {"test-actor"}


def test_call_returns_the_result_or_raises_the_error(actor):
    assert actor.call(lambda a, b: a + b, 2, 3) == 5
    with pytest.raises(ZeroDivisionError):
        actor.call(lambda: 1 / 0)
    future = actor.call_soon(lambda: "later")
    assert future.result(5) == "later"


def test_a_call_from_the_actor_thread_runs_at_once(actor):
    assert actor.call(lambda: actor.call(lambda: "nested")) == "nested"


def test_a_failing_post_is_logged_and_the_actor_goes_on(actor, caplog):
    actor.post(lambda: 1 / 0)
    assert actor.call(lambda: "alive") == "alive"
    assert "ZeroDivisionError" in caplog.text


def test_timers_fire_in_due_order(actor):
    fired = []
    done = threading.Event()

    def arm():
        actor.after(0.03, lambda: (fired.append("late"), done.set()))
        actor.after(0.01, lambda: fired.append("early"))
    actor.post(arm)
    assert done.wait(5)
    assert fired == ["early", "late"]


def test_work_queued_together_is_handled_as_one_batch():
    a = Recorder()
    for i in range(10):
        a.post(a.seen.append, i)
    a.close_inbox()
    a.post(a.seen.append, "after the close")
    a.run_inbox()  # returns: closed
    assert a.seen == list(range(10))  # before the close: run, in one batch
    assert a.batches == [10]


def test_after_the_close_calls_are_refused():
    a = Recorder()
    future = a.call_soon(time.sleep, 0)
    a.close_inbox()
    late = a.drain_inbox()
    assert [item[2] for item in late] == [future]
    a.refuse(late)
    with pytest.raises(RpcError) as err:
        future.result(1)
    assert err.value.code == -32000
    with pytest.raises(RpcError):
        a.call_soon(time.sleep, 0)
