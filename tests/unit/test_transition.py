"""The one transition function, on a record that only remembers what it was asked to
persist (no database: ``persist`` is the model's single write)."""

import logging

import pytest

from zephserver.errors import IllegalTransition
from zephserver.jobs.transition import transition
from zephserver.launch.states import JobState as J


class Owner:
    username = "alice"


class Record:
    """The fields of a Job that the transition reads and writes."""

    def __init__(self, state, kind="batch"):
        self.pk, self.kind, self.app, self.owner = 7, kind, "demo", Owner()
        self.state, self.state_reason, self.extra = state, "", {"phase": "pending"}
        self.finished = self.created = self.queued_at = None
        self.log_path = ""
        self.persisted = []

    def persist(self, *names):
        self.persisted.append(set(names))


def clock():
    return "2026-12-01T00:00:00Z"


def test_a_move_is_checked_stamped_persisted_logged_and_published(caplog):
    job, published = Record(J.RUNNING), []
    with caplog.at_level(logging.INFO, logger="zephserver.jobs"):
        transition(job, J.SUCCEEDED, "exit code 0", published.append, clock=clock,
                   exit_code=0)
    assert (job.state, job.state_reason, job.exit_code) == (J.SUCCEEDED, "exit code 0", 0)
    assert job.finished == "2026-12-01T00:00:00Z"  # a final state is stamped
    assert job.persisted == [{"state", "state_reason", "exit_code", "finished"}]
    assert published == [job]
    assert "job 7 (batch demo, alice) RUNNING -> SUCCEEDED: exit code 0" in caplog.text


def test_a_move_the_table_forbids_changes_nothing():
    job, published = Record(J.SUCCEEDED), []
    with pytest.raises(IllegalTransition):
        transition(job, J.RUNNING, "again", published.append, clock=clock)
    assert (job.state, job.persisted, published) == (J.SUCCEEDED, [], [])


def test_keeping_the_state_updates_reason_and_extra_and_is_published():
    """An agent process from downloading to unpacking: STARTING all along."""
    job, published = Record(J.STARTING, kind="service"), []
    transition(job, None, "unpacking the source archive", published.append,
               extra={"phase": "unpacking"}, clock=clock)
    transition(job, J.STARTING, "still", published.append, extra={"deleted": True},
               clock=clock)
    assert job.state == J.STARTING
    assert job.extra == {"phase": "unpacking", "deleted": True}
    assert job.persisted == [{"state_reason", "extra"}, {"state_reason", "extra"}]
    assert published == [job, job]
    assert job.finished is None


def test_a_non_final_move_is_not_stamped_finished():
    job = Record(J.QUEUED)
    transition(job, J.STARTING, "starting", lambda job: None, clock=clock, argv=["x"])
    assert job.finished is None
    assert job.persisted == [{"state", "state_reason", "argv"}]


class Ended:
    def __init__(self, state=J.RUNNING, stop_requested="", reason="running"):
        self.state, self.stop_requested, self.state_reason = state, stop_requested, reason
        self.job_dir = "/nonexistent"


@pytest.mark.parametrize(("job", "code", "stop_by", "expected"), [
    (Ended(), 0, "", (J.SUCCEEDED, "exit code 0")),
    (Ended(), 3, "", (J.FAILED, "exit code 3")),
    (Ended(), -9, "", (J.FAILED, "killed by signal SIGKILL")),
    (Ended(), None, "", (J.LOST, "the process ended but its exit status was not recorded")),
    (Ended(stop_requested=J.CANCELLED, reason="stopping: cancelled by bob"), -15, "bob",
     (J.CANCELLED, "cancelled by bob (killed by signal SIGTERM)")),
    (Ended(stop_requested=J.CANCELLED, reason="stopping: the client left"), 0, "",
     (J.CANCELLED, "cancelled: the client left (exit code 0)")),
    (Ended(stop_requested=J.TIMED_OUT, reason="stopping: wall time of 5s exceeded"), -15, "",
     (J.TIMED_OUT, "wall time of 5s exceeded (killed by signal SIGTERM)")),
    (Ended(state=J.STARTING), 1, "", (J.FAILED, "exited before it was ready (exit code 1)")),
])
def test_the_final_state_of_an_ended_process(job, code, stop_by, expected):
    from zephserver.jobs.transition import ended

    assert ended(job, code, "", stop_by) == expected


def test_an_exit_seen_after_a_restart_says_so():
    from zephserver.jobs.transition import ended

    assert ended(Ended(), 2, "while the daemon was down") == (
        J.FAILED, "exit code 2 while the daemon was down")
