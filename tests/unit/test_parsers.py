import pytest

from zephserver.errors import IllegalTransition
from zephserver.launch.parsers import LsDynaParser, RegexParser, check_parser_spec
from zephserver.launch.states import JOB_TRANSITIONS, TERMINAL, JobState, check_job_transition

DYNA = b"""\
 termination time                 =  2.0000E+01
 added mass          =   4.5000E-02
 percentage increase =   1.2500E+00
        0 t 0.0000E+00 dt 1.00E-05 flush i/o buffers           11/22/26 10:00:00
     1000 t 5.0000E+00 dt 1.00E-05 write d3plot file           11/22/26 10:00:10
"""


def test_lsdyna_progress_details_and_eta_from_elapsed_time():
    p = LsDynaParser()
    p.feed(DYNA[:60], now=100.0, started=90.0)  # a chunk cut in the middle of a line
    p.feed(DYNA[60:], now=100.0, started=90.0)
    assert p.details == {"termination_time": 20.0, "added_mass": 0.045,
                         "mass_increase_percent": 1.25, "time": 5.0}
    assert p.percent == 25.0
    # one point so far: the rate since the start (25 % in 10 s) -> 30 s left
    assert p.eta == 30.0
    p.feed(b"     2000 t 1.0000E+01 dt 1.00E-05 write d3plot file\n", now=120.0, started=90.0)
    # first point at 0 % (100 s), now 50 % at 120 s: 2.5 %/s -> 20 s left
    assert p.percent == 50.0
    assert p.eta == 20.0
    p.feed(b"\n N o r m a l    t e r m i n a t i o n   11/22/26\n", 130.0, 90.0)
    assert (p.percent, p.status, p.eta) == (100.0, "normal termination", 0.0)


def test_lsdyna_error_termination_and_last_line_without_newline():
    p = LsDynaParser()
    p.feed(b" termination time = 1.0\n E r r o r   t e r m i n a t i o n", 1.0, 0.0)
    assert p.status == ""
    p.finish(2.0, 0.0)
    assert p.status == "error termination"


def test_regex_parser_value_total_and_status():
    p = RegexParser({"progress": r"step (?P<value>\d+) of (?P<total>\d+)",
                     "status": r"^phase: (?P<status>.+)"})
    p.feed(b"phase: meshing\nstep 1 of 4\n", 10.0, 0.0)
    assert (p.percent, p.status) == (25.0, "meshing")
    p.feed(b"step 2 of 0\nstep 3 of 4\n", 20.0, 0.0)  # a zero total is ignored, not a crash
    assert p.percent == 75.0
    assert p.eta == pytest.approx(5.0)  # 50 % in 10 s since the first point: 25 % left


def test_parser_spec_checks():
    assert check_parser_spec("lsdyna") == []
    assert check_parser_spec({"progress": r"(?P<percent>\d+)%"}) == []
    assert "needs a (?P<percent>" in check_parser_spec({"progress": r"(\d+)"})[0]
    assert check_parser_spec("ansys") == ["parser must be 'lsdyna' or a dict of regex rules"]


def test_job_transition_table():
    assert all(not JOB_TRANSITIONS[t] for t in TERMINAL)
    check_job_transition(JobState.QUEUED, JobState.STARTING)
    with pytest.raises(IllegalTransition):
        check_job_transition(JobState.SUCCEEDED, JobState.RUNNING)
    # a job QUEUED in Slurm's queue starts there, but never ends without starting well
    check_job_transition(JobState.QUEUED, JobState.RUNNING)
    with pytest.raises(IllegalTransition):
        check_job_transition(JobState.QUEUED, JobState.SUCCEEDED)
