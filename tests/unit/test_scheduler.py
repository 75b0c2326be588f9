from zephserver.launch.scheduler import Demand, Limits, Pool, Running, Waiting, plan

CAP = Pool(cores=8, memory=1000, licenses={"dyna": 4})


def w(i, cores=1, owner=1, priority=0, queued_at=0.0, lic=0, memory=0):
    return Waiting(i, owner, Demand(cores, memory, {"dyna": lic} if lic else {}), priority,
                   float(i), queued_at)


def test_fifo_within_priority_and_priority_first():
    p = plan([w(1, 4), w(2, 4), w(3, 4, priority=5)], [], CAP, Limits(), 0, 600)
    assert p.start == [3, 1]
    assert p.reasons[2] == "waiting for 4 core(s)"


def test_backfill_lets_small_jobs_use_idle_cores():
    running = [Running(2, Demand(6))]
    p = plan([w(1, 4), w(2, 1), w(3, 1), w(4, 1)], running, CAP, Limits(), 0, 600)
    assert p.start == [2, 3]
    assert p.free.cores == 0


def test_a_job_that_waited_too_long_gets_a_reservation():
    running = [Running(2, Demand(6))]
    p = plan([w(1, 4, queued_at=0), w(2, 1, queued_at=650)], running, CAP, Limits(), now=700,
             reserve_after=600)
    assert p.start == []  # the 2 idle cores are held for job 1
    assert p.reserved == [1]
    assert p.reasons[1].startswith("reserved")
    # once enough ends, the reserved job starts before the small one
    p = plan([w(1, 4, queued_at=0), w(2, 1)], [Running(2, Demand(4))], CAP, Limits(), 700, 600)
    assert p.start == [1]


def test_licences_and_memory_are_counted():
    p = plan([w(1, 1, lic=3), w(2, 1, lic=2), w(3, 1, memory=2000), w(4, 1, lic=1)], [], CAP,
             Limits(), 0, 600)
    assert p.start == [1, 4]
    assert p.reasons[2] == "waiting for 1 dyna licence(s)"
    assert p.reasons[3] == "waiting for 1000 MiB memory"


def test_per_user_limits_do_not_block_others():
    running = [Running(1, Demand(1))]
    p = plan([w(1, owner=1), w(2, owner=1), w(3, owner=2)], running, CAP,
             Limits(running=2), 0, 600)
    assert p.start == [1, 3]
    assert "limit of 2 running" in p.reasons[2]
    p = plan([w(1, cores=3, owner=1), w(2, cores=1, owner=1)], [], CAP, Limits(cores=3), 0, 600)
    assert p.start == [1]
    assert "limit of 3 core(s)" in p.reasons[2]


def test_a_full_machine_stops_the_scan_but_not_for_jobs_needing_no_core():
    running = [Running(2, Demand(8))]
    p = plan([w(1, 1), w(2, 1)], running, CAP, Limits(), 0, 600)
    assert p.start == []
    assert p.reasons == {1: "waiting for 1 core(s)", 2: "waiting for 1 core(s)"}
    p = plan([w(1, 1), w(2, 0)], running, CAP, Limits(), 0, 600)
    assert p.start == [2]
    assert p.reasons[1] == "waiting for 1 core(s)"
