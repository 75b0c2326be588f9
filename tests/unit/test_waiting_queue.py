"""The waiting queue on its own: order, held jobs, removal, positions, moves."""

from types import SimpleNamespace

from zephserver.jobs.waiting import WaitingQueue, entry_for
from zephserver.launch.scheduler import Demand, Waiting


def entry(job_id, owner=1, priority=0, seq=None):
    return Waiting(job_id, owner, Demand(1, 0, {}), priority,
                   float(job_id if seq is None else seq), 0.0)


def ids(q):
    return [w.id for w in q.ordered]


def test_order_is_priority_then_submission_then_id():
    q = WaitingQueue()
    for e in [entry(1), entry(2, priority=5), entry(3), entry(4, priority=5, seq=0.5),
              entry(5, priority=-1), entry(6, seq=3)]:
        q.add(e)
    assert ids(q) == [4, 2, 1, 3, 6, 5]
    assert [q.position(i) for i in (4, 2, 1, 6, 5)] == [0, 1, 2, 4, 5]
    assert (q.queued, q.held, len(q)) == (6, 0, 6)


def test_held_jobs_wait_beside_the_order():
    q = WaitingQueue()
    q.add(entry(1))
    q.add(entry(2), held=True)
    assert ids(q) == [1]
    assert 2 in q
    assert q.position(2) is None
    assert (q.queued, q.held) == (1, 1)
    assert q.remove(2).id == 2
    assert 2 not in q
    assert q.held == 0


def test_remove_finds_the_entry_among_equal_keys_and_drops_its_reason():
    q = WaitingQueue()
    for i in range(1, 6):
        q.add(entry(i, seq=1.0))  # the same priority and seq: the id decides
    q.note(3, "needs 4 cores")
    assert q.reason(3) == "needs 4 cores"
    assert q.remove(3).id == 3
    assert ids(q) == [1, 2, 4, 5]
    assert q.reason(3) is None
    assert q.remove(3) is None  # twice: nothing


def test_reasons_come_from_the_last_plan():
    q = WaitingQueue()
    q.add(entry(1))
    q.set_reasons({1: "waiting for licences"})
    assert q.reason(1) == "waiting for licences"
    q.set_reasons({})
    assert q.reason(1) is None


def test_listing_for_an_owner_and_for_staff():
    q = WaitingQueue()
    q.add(entry(1, owner=7))
    q.add(entry(2, owner=8))
    q.add(entry(3, owner=7))
    q.add(entry(4, owner=7), held=True)
    assert q.listing(None) == [(0, 1), (1, 2), (2, 3), (None, 4)]
    assert q.listing(7) == [(0, 1), (2, 3), (None, 4)]


def test_staff_move_among_the_jobs_of_one_priority():
    q = WaitingQueue()
    for i in range(1, 5):
        q.add(entry(i, owner=i))
    q.add(entry(9, priority=3))
    changed = q.move(4, 0, None)  # to the front of priority 0
    assert ids(q) == [9, 4, 1, 2, 3]
    # the jobs involved swapped their seq values; the changed ones are reported
    assert sorted(changed) == [(1, 2.0), (2, 3.0), (3, 4.0), (4, 1.0)]


def test_a_user_moves_only_among_their_own_jobs():
    q = WaitingQueue()
    for i, owner in zip(range(1, 6), [7, 8, 7, 8, 7], strict=True):
        q.add(entry(i, owner=owner))
    q.move(5, 0, 7)  # alice's last job first among hers: bob's keep their places
    assert ids(q) == [5, 2, 1, 4, 3]
    q.move(5, 99, 7)  # past the end: last among hers
    assert ids(q) == [1, 2, 3, 4, 5]


def test_entry_for_a_record():
    job = SimpleNamespace(pk=4, owner_id=7, resources={"cores": 2, "memory": 10,
                                                       "licenses": {"x": 1}},
                          priority=1, seq=12.5, queued_at=None, app="solver",
                          created=SimpleNamespace(timestamp=lambda: 99.0))
    w = entry_for(job, Demand.of(job.resources))
    assert (w.id, w.owner, w.priority, w.seq, w.queued_at, w.app) == (4, 7, 1, 12.5, 99.0,
                                                                      "solver")
    assert w.demand == Demand.of(job.resources)
