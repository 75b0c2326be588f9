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


# -- a chunk searched at once gives what reading it line by line gives -----------------------

def _noise(rng, i: int) -> bytes:
    if rng.random() < 0.003:
        return b"y" * 70_000  # a line longer than MAX_LINE
    return rng.choice([
        b"x" * 79, b"", b"   ", "d\xe9j\xe0 vu \u2603".encode(), b"bad \xff\xfe bytes",
        b"step", b"of 10", b"step 3 of", b"4 trailing", f"iteration {i}".encode(),
        b"\tphase:",
    ])


REGEX_LINES = [
    lambda rng, i: f"step {i} of 1000".encode(),
    lambda rng, i: f"  done {rng.randint(0, 120)}% ok".encode(),
    lambda rng, i: f"phase: stage {i}".encode(),
    lambda rng, i: b"step 5 of 0",  # matches but makes no sense: never counted
    lambda rng, i: b"phase:   ",
]
DYNA_LINES = [
    lambda rng, i: f" {i:8d} t {i / 100:.4E} dt 1.00E-05 write d3plot file".encode(),
    lambda rng, i: f" {i:8d} t {i / 100:.4E} dt 1.00E-05 flush i/o buffers".encode(),
    lambda rng, i: f" termination time = {rng.choice([0, 5, 20])}.0".encode(),
    lambda rng, i: f" added mass = {i}.5E-03".encode(),
    lambda rng, i: f" percentage increase = {i}.0".encode(),
    lambda rng, i: b" N o r m a l    t e r m i n a t i o n",
    lambda rng, i: b" E r r o r   t e r m i n a t i o n",
    lambda rng, i: b" N o r m a l",  # the first half of a fact spanning two lines
    lambda rng, i: b"t e r m i n a t i o n",
]


def _log(seed: int, facts: list, density: float, lines: int = 1500) -> bytes:
    import random

    rng = random.Random(seed)
    out = [(rng.choice(facts)(rng, i) if rng.random() < density else _noise(rng, i))
           for i in range(lines)]
    return b"\n".join(out) + (b"\n" if seed % 2 else b"")


def _same_as_line_by_line(make, log: bytes, seed: int) -> None:
    import random

    from zephserver.launch.parsers import MAX_LINE

    rng = random.Random(seed)
    chunked, one_by_one = make(), make()
    pending, at, step = b"", 0, 0
    while at < len(log):
        step += 1
        now = 100.0 + step
        chunk = log[at:at + rng.choice([7, 80, 4096, 65536, 1 << 20])]
        at += len(chunk)
        chunked.feed(chunk, now, 50.0)
        pending += chunk
        *whole, pending = pending.split(b"\n")
        pending = pending[-MAX_LINE:]
        for raw in whole:
            one_by_one.line(raw[:MAX_LINE].decode("utf-8", "replace"), now, 50.0)
        assert chunked.snapshot() == one_by_one.snapshot(), (seed, at)
    chunked.finish(999.0, 50.0)
    if pending:
        one_by_one.line(pending.decode("utf-8", "replace"), 999.0, 50.0)
    assert chunked.snapshot() == one_by_one.snapshot()


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("density", [0.002, 0.3, 1.0])
def test_regex_parser_chunks_read_as_line_by_line(seed, density):
    for spec in ({"progress": r"step (?P<value>\d+) of (?P<total>\d+)",
                  "status": r"^phase:\s*(?P<status>.*)"},
                 {"progress": r"(?P<percent>\d+)%\s*ok$", "status": r"phase: stage \d+\s"},
                 # a lookahead looks past a line's end: read line by line
                 {"progress": r"done (?P<percent>\d+)%(?! ok)", "status": r"stage"}):
        log = _log(seed, REGEX_LINES, density)
        _same_as_line_by_line(lambda spec=spec: RegexParser(spec), log, seed)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("density", [0.002, 0.3, 1.0])
def test_lsdyna_parser_chunks_read_as_line_by_line(seed, density):
    _same_as_line_by_line(LsDynaParser, _log(seed, DYNA_LINES, density), seed)


def test_a_chunk_costs_one_search_not_one_python_step_per_line():
    """200,000 lines without a single match cost a few searches, not a Python loop: the
    parser is fed them through a spy that counts how many lines it looked at one by one."""
    looked = []

    class Counting(RegexParser):
        def _percent(self, text):
            looked.append(text)
            return super()._percent(text)

    p = Counting({"progress": r"step (?P<value>\d+) of (?P<total>\d+)"})
    block = b"x" * 79 + b"\n"
    p.feed(block * 200_000 + b"step 7 of 10\n" + block * 1000, 1.0, 0.0)
    assert p.percent == 70.0
    assert len(looked) <= 2  # the last matching line (and the first, for the ETA)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("density", [0.002, 0.3, 1.0])
def test_a_parser_far_behind_skims_to_what_reading_everything_gives(seed, density):
    """Bytes [lo, hi) skimmed from the end (in small blocks, so lines cross them) leave
    the parser as feeding them all would: same snapshot, same unfinished line."""
    import random

    rng = random.Random(seed)
    log = _log(seed, REGEX_LINES, density)
    spec = {"progress": r"step (?P<value>\d+) of (?P<total>\d+)",
            "status": r"^phase:\s*(?P<status>.*)"}
    for _ in range(5):
        lo = rng.randrange(len(log) // 3)
        hi = rng.randrange(lo, len(log) + 1)
        fed, skimmed = RegexParser(spec), RegexParser(spec)
        for p in (fed, skimmed):
            p.feed(b"step 1 of 1000\n" + log[:lo], 10.0, 0.0)
        fed.feed(log[lo:hi], 20.0, 0.0)
        before = (skimmed.snapshot(), skimmed._partial)
        took = skimmed.skim(lambda at, size: log[at - 15:at - 15 + size], lo + 15, hi + 15,
                            20.0, 0.0, block=rng.choice([50, 333, 4096]))
        if took:
            assert (skimmed.snapshot(), skimmed._partial) == (fed.snapshot(), fed._partial)
        else:  # declined (a line longer than a block at the end): nothing taken
            assert (skimmed.snapshot(), skimmed._partial) == before


def test_skimming_reads_only_the_end():
    reads = []
    p = RegexParser({"progress": r"step (?P<value>\d+) of (?P<total>\d+)"})
    p.feed(b"step 1 of 10\n", 1.0, 0.0)
    log = b"step 2 of 10\n" + (b"x" * 79 + b"\n") * 100_000 + b"step 7 of 10\n" + b"tail"

    def read(at, size):
        reads.append(size)
        return log[at:at + size]

    assert p.skim(read, 0, len(log), 2.0, 0.0)
    assert (p.percent, p._partial) == (70.0, b"tail")
    assert sum(reads) <= 1 << 20 < len(log) / 7
    # no first progress point yet (the ETA needs it): it declines, and takes nothing
    fresh = RegexParser({"progress": r"step (?P<value>\d+) of (?P<total>\d+)"})
    assert not fresh.skim(read, 0, len(log), 2.0, 0.0)
    assert fresh.snapshot()["percent"] is None
