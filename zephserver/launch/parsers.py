"""Progress parsers: read a job's output lines and say how far it got.

An app's ``parser`` is ``"lsdyna"`` (built in) or a dict of regex rules
(``{"progress": r"step (?P<value>\\d+) of (?P<total>\\d+)", "status": r"phase (?P<status>.+)"}``
or a ``percent`` group). Parsers only see whole lines and never block capture: the
program writes its log file itself, and parsing reads that file afterwards.

A parser's result is what reading the lines one by one (``line()``) would give, but a
chunk is searched by the regex engine as one string, not line by line in Python:
progress needs only the last matching line of a chunk (searched from the end), the
first one ever (for the ETA) and, for LS-DYNA, its few rare facts. A job printing
millions of lines a second costs about one C-speed search per megabyte.
"""

import re
from collections.abc import Callable, Iterator
from typing import Any

_NUM = r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?"
MAX_LINE = 64 * 1024  # a longer "line" is cut: a parser must not hold unbounded memory


def check_parser_spec(spec: Any) -> list[str]:
    """Problems with an app's ``parser`` value (empty when it is usable)."""
    if spec is None or spec == "lsdyna":
        return []
    if not isinstance(spec, dict):
        return ["parser must be 'lsdyna' or a dict of regex rules"]
    problems = []
    unknown = sorted(set(spec) - {"progress", "status"})
    if unknown:
        problems.append(f"parser: unknown key(s) {', '.join(unknown)}")
    for key, pattern in spec.items():
        try:
            rx = re.compile(pattern)
        except (re.error, TypeError) as exc:
            problems.append(f"parser {key}: bad regexp: {exc}")
            continue
        groups = set(rx.groupindex)
        if key == "progress" and not ("percent" in groups or {"value", "total"} <= groups):
            problems.append("parser progress: needs a (?P<percent>...) group or "
                            "(?P<value>...) and (?P<total>...) groups")
    return problems


# -- searching many lines at once ----------------------------------------------------------
# A pattern compiled with re.MULTILINE and searched over a chunk finds a match on every
# line that matches on its own (the same path exists at the same place), but may also
# match across lines: so each line found is checked again on its own. Patterns whose
# assertions look past a line's ends (\A, \Z, lookarounds) may answer differently in a
# chunk: they are read line by line.
_LOOKS_PAST_LINE = re.compile(r"\\[AZ]|\(\?<?[=!]")
WINDOW = 4096  # characters first searched from the end, then four times more each round


def line_safe(pattern: str) -> bool:
    return _LOOKS_PAST_LINE.search(pattern) is None


def chunk_pattern(pattern: str, flags: int = 0) -> re.Pattern:
    """``pattern`` for finding candidate lines in a chunk. A leading ``^`` is dropped:
    lines are checked on their own anyway, and an anchor the engine must test at every
    position makes the search more than ten times slower than one it can skip ahead for."""
    return re.compile(pattern[1:] if pattern.startswith("^") else pattern, flags | re.M)


def _cut(line: str) -> str:
    """``line`` as a parser sees it: at most MAX_LINE bytes (a longer line is cut)."""
    if len(line) * 4 <= MAX_LINE:
        return line
    raw = line.encode()
    return line if len(raw) <= MAX_LINE else raw[:MAX_LINE].decode("utf-8", "replace")


def candidate_lines(rxs: list[re.Pattern], text: str, lo: int,
                    hi: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each line in ``text[lo:hi]`` (line-aligned) where one of ``rxs``
    (compiled with re.MULTILINE) may match, in order: every line one of them matches on
    its own is among them. Each pattern runs over the text once."""
    ahead: list[re.Match | None] = [None] * len(rxs)  # each pattern's next match
    pos = lo
    while pos <= hi:
        for i, rx in enumerate(rxs):
            if (m := ahead[i]) is not None and m.start() < pos:
                ahead[i] = None
            if ahead[i] is None and (m := rx.search(text, pos, hi)) is not None:
                ahead[i] = m
        found = [m.start() for m in ahead if m is not None]
        if not found:
            return
        at = min(found)
        start = text.rfind("\n", 0, at) + 1
        end = text.find("\n", at, hi)
        end = hi if end < 0 else end
        yield start, end
        pos = end + 1


def first_line(rx: re.Pattern, text: str, lo: int, hi: int,
               accept: Callable[[str], Any]) -> tuple[int, Any] | None:
    """(start, what ``accept`` made of it) for the first line of ``text[lo:hi]`` it takes
    (``accept`` returns None for a line it does not)."""
    for start, end in candidate_lines([rx], text, lo, hi):
        if (found := accept(_cut(text[start:end]))) is not None:
            return start, found
    return None


def last_line(rx: re.Pattern, text: str, lo: int, hi: int,
              accept: Callable[[str], Any]) -> tuple[int, Any] | None:
    """Like ``first_line`` for the last line, searched from the end in growing windows."""
    size = WINDOW
    while hi >= lo:
        start = max(lo, text.rfind("\n", lo, max(lo, hi - size)) + 1)
        found = None
        for s, e in candidate_lines([rx], text, start, hi):
            if (value := accept(_cut(text[s:e]))) is not None:
                found = (s, value)
        if found is not None or start == lo:
            return found
        hi, size = start - 1, size * 4
    return None


class Parser:
    """Base: splits chunks into lines and keeps a progress dict."""

    def __init__(self) -> None:
        self._partial = b""
        self.percent: float | None = None
        self.status = ""
        self.details: dict[str, Any] = {}
        self.eta: float | None = None
        self.changed = False

    def feed(self, chunk: bytes, now: float, started: float | None) -> None:
        """Parse the whole lines in ``chunk`` (the rest waits for the next chunk)."""
        data = self._partial + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._partial = data[-MAX_LINE:]
            return
        self._partial = data[cut + 1:][-MAX_LINE:]
        self.scan(data[:cut].decode("utf-8", "replace"), now, started)

    def finish(self, now: float, started: float | None) -> None:
        """The program ended: its last line may lack a newline."""
        if self._partial:
            partial, self._partial = self._partial, b""
            self.scan(partial.decode("utf-8", "replace"), now, started)

    def scan(self, text: str, now: float, started: float | None) -> None:
        """Take in the lines of ``text`` (separated by newlines, the last one without)."""
        for line in text.split("\n"):
            self.line(_cut(line), now, started)

    def line(self, text: str, now: float, started: float | None) -> None:
        raise NotImplementedError

    def can_skim(self) -> bool:
        """Whether ``skim`` would take output in now (see RegexParser.skim)."""
        return False

    def skim(self, read: Callable[[int, int], bytes], lo: int, hi: int, now: float,
             started: float | None) -> bool:
        """Take in bytes [lo, hi) without reading them all, if this parser can (see
        RegexParser.skim); False: it cannot, they are to be fed."""
        return False

    def _set(self, **values: Any) -> None:
        for key, value in values.items():
            if getattr(self, key) != value:
                setattr(self, key, value)
                self.changed = True

    def snapshot(self) -> dict:
        return {"percent": self.percent, "eta": self.eta, "status": self.status,
                **({"details": dict(self.details)} if self.details else {})}


def _eta(percent: float, first: tuple[float, float] | None, now: float,
         started: float | None) -> float | None:
    """Seconds left at the rate observed so far (since the first progress point, or since
    the start when there is only one point)."""
    if percent <= 0 or percent >= 100:
        return 0.0 if percent >= 100 else None
    if first is not None and percent > first[1] and now > first[0]:
        rate = (percent - first[1]) / (now - first[0])
    elif started is not None and now > started:
        rate = percent / (now - started)
    else:
        return None
    return round((100 - percent) / rate, 1)


class RegexParser(Parser):
    def __init__(self, spec: dict) -> None:
        super().__init__()
        self.progress_rx = re.compile(spec["progress"]) if "progress" in spec else None
        self.status_rx = re.compile(spec["status"]) if "status" in spec else None
        self._first: tuple[float, float] | None = None
        # the same patterns, to search a whole chunk (None: read it line by line)
        self._chunk_rx = {key: chunk_pattern(pattern) for key, pattern in spec.items()
                          if key in ("progress", "status")} if all(map(line_safe, spec.values())) \
            else None

    def scan(self, text: str, now: float, started: float | None) -> None:
        if self._chunk_rx is None:
            return super().scan(text, now, started)
        if (rx := self._chunk_rx.get("progress")) is not None:
            if self._first is None and (first := first_line(rx, text, 0, len(text),
                                                           self._percent)) is not None:
                self._first = (now, first[1])
            if (last := last_line(rx, text, 0, len(text), self._percent)) is not None:
                self._set(percent=last[1], eta=_eta(last[1], self._first, now, started))
        if (rx := self._chunk_rx.get("status")) is not None and \
                (last := last_line(rx, text, 0, len(text), self._status)) is not None:
            self._set(status=last[1])

    def can_skim(self) -> bool:
        return self._chunk_rx is not None and (
            "progress" not in self._chunk_rx or self._first is not None)

    def skim(self, read: Callable[[int, int], bytes], lo: int, hi: int, now: float,
             started: float | None, block: int = 64 << 10) -> bool:
        """Take in bytes [lo, hi) of the output (``read(offset, size)``) as ``feed`` would,
        reading from the end (blocks from ``block`` bytes, four times larger each) only
        until each rule's last line is found: what a parser far behind needs (the lines in
        between change nothing it ends with). False, nothing taken, where that cannot be
        done exactly: no chunk patterns, the first progress point (for the ETA) not seen
        yet, or no newline in the last block."""
        if not self.can_skim():
            return False
        wanted = dict(self._chunk_rx)  # type: ignore[arg-type]
        found: dict[str, Any] = {}
        accept = {"progress": self._percent, "status": self._status}
        partial = None
        carry = b""  # the start of a line whose beginning is in the block before
        end = hi
        while wanted and end > lo:
            start = max(lo, end - block)
            data = read(start, end - start) + carry
            if start == lo:
                data, cut = self._partial + data, -1
            elif (cut := data.find(b"\n")) < 0:
                return False  # a line longer than a block: read it the usual way
            carry = data[:cut + 1]
            if partial is None:  # the last block: what follows its last newline waits
                last = data.rfind(b"\n")
                if last < 0:
                    return False
                partial, data = data[last + 1:][-MAX_LINE:], data[:last]
            text = data[cut + 1:].decode("utf-8", "replace")
            for key, rx in list(wanted.items()):
                if (hit := last_line(rx, text, 0, len(text), accept[key])) is not None:
                    found[key] = hit[1]
                    del wanted[key]
            end, block = start, min(block * 4, 4 << 20)
        if partial is None:
            return False
        if "progress" in found:
            percent = found["progress"]
            self._set(percent=percent, eta=_eta(percent, self._first, now, started))
        if "status" in found:
            self._set(status=found["status"])
        self._partial = partial
        return True

    def line(self, text: str, now: float, started: float | None) -> None:
        if (percent := self._percent(text)) is not None:
            if self._first is None:
                self._first = (now, percent)
            self._set(percent=percent, eta=_eta(percent, self._first, now, started))
        if (status := self._status(text)) is not None:
            self._set(status=status)

    def _percent(self, text: str) -> float | None:
        """The progress ``text`` says, or None (no match, or numbers that make no sense)."""
        if self.progress_rx is None or not (m := self.progress_rx.search(text)):
            return None
        try:
            groups = m.groupdict()
            if groups.get("percent") is not None:
                percent = float(groups["percent"])
            else:
                percent = 100.0 * float(groups["value"]) / float(groups["total"])
        except (ValueError, ZeroDivisionError, TypeError):
            return None
        return round(min(100.0, max(0.0, percent)), 2)

    def _status(self, text: str) -> str | None:
        if self.status_rx is None or not (m := self.status_rx.search(text)):
            return None
        return (m.groupdict().get("status") or m.group(0)).strip()[:200]


class LsDynaParser(Parser):
    """LS-DYNA's stdout: termination time, time reached, added mass, termination kind."""

    TERMINATION = re.compile(rf"termination time\s*[=:]?\s*({_NUM})", re.I)
    REACHED = re.compile(rf"^\s*\d+\s+t\s+({_NUM})\s+dt\s+{_NUM}\s+"
                         r"(write d3plot file|flush i/o buffers|write d3dump\d* file)", re.I)
    ADDED_MASS = re.compile(rf"added mass\s*=\s*({_NUM})", re.I)
    MASS_INCREASE = re.compile(rf"percentage (?:mass )?increase\s*=\s*({_NUM})", re.I)
    NORMAL = re.compile(r"N\s?o\s?r\s?m\s?a\s?l\s+t\s?e\s?r\s?m\s?i\s?n\s?a\s?t\s?i\s?o\s?n", re.I)
    ERROR = re.compile(r"E\s?r\s?r\s?o\s?r\s+t\s?e\s?r\s?m\s?i\s?n\s?a\s?t\s?i\s?o\s?n", re.I)

    # The lines that are not "time reached" (few), searched for over a whole chunk. Case is
    # ignored by searching ASCII text lowered (the engine then skips ahead to a literal;
    # with re.I it tries every position): one pass is ten times faster.
    RARE = [re.compile(rx.pattern, re.I | re.M)
            for rx in (TERMINATION, ADDED_MASS, MASS_INCREASE, NORMAL, ERROR)]
    RARE_LOWERED = [re.compile(re.sub(r"(?<!\\)[A-Z]", lambda m: m[0].lower(), rx.pattern), re.M)
                    for rx in RARE]
    REACHED_ANY_LINE = chunk_pattern(REACHED.pattern, re.I)

    def __init__(self) -> None:
        super().__init__()
        self.end_time: float | None = None
        self._first: tuple[float, float] | None = None

    def scan(self, text: str, now: float, started: float | None) -> None:
        """The rare lines in order; of the "time reached" lines between two of them, only
        the last counts (and the first with a termination time known, for the ETA)."""
        pos = 0
        ascii_text = text.isascii()
        for start, end in candidate_lines(self.RARE_LOWERED if ascii_text else self.RARE,
                                          text.lower() if ascii_text else text, 0, len(text)):
            if start > pos:
                self._reached(text, pos, start - 1, now, started)
            self.line(_cut(text[start:end]), now, started)
            pos = end + 1
        if pos <= len(text):
            self._reached(text, pos, len(text), now, started)

    def _reached(self, text: str, lo: int, hi: int, now: float, started: float | None) -> None:
        def take(line: str) -> str | None:
            return line if self.REACHED.search(line) else None

        first = None
        if self.end_time and self._first is None:
            first = first_line(self.REACHED_ANY_LINE, text, lo, hi, take)
            if first is not None:
                self.line(first[1], now, started)
        last = last_line(self.REACHED_ANY_LINE, text, lo, hi, take)
        if last is not None and (first is None or last[0] != first[0]):
            self.line(last[1], now, started)

    def line(self, text: str, now: float, started: float | None) -> None:
        if (m := self.REACHED.search(text)):
            reached = float(m.group(1))
            self._detail("time", reached)
            if self.end_time:
                percent = round(min(100.0, 100.0 * reached / self.end_time), 2)
                if self._first is None:
                    self._first = (now, percent)
                self._set(percent=percent, eta=_eta(percent, self._first, now, started),
                          status="running")
        elif (m := self.TERMINATION.search(text)):
            self.end_time = float(m.group(1))
            self._detail("termination_time", self.end_time)
        elif (m := self.ADDED_MASS.search(text)):
            self._detail("added_mass", float(m.group(1)))
        elif (m := self.MASS_INCREASE.search(text)):
            self._detail("mass_increase_percent", float(m.group(1)))
        elif self.NORMAL.search(text):
            self._set(percent=100.0, eta=0.0, status="normal termination")
        elif self.ERROR.search(text):
            self._set(status="error termination", eta=None)

    def _detail(self, key: str, value: Any) -> None:
        if self.details.get(key) != value:
            self.details[key] = value
            self.changed = True


def make_parser(spec: Any) -> Parser | None:
    if spec is None:
        return None
    if spec == "lsdyna":
        return LsDynaParser()
    return RegexParser(spec)
