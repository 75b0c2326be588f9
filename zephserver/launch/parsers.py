"""Progress parsers: read a job's output lines and say how far it got.

An app's ``parser`` is ``"lsdyna"`` (built in) or a dict of regex rules
(``{"progress": r"step (?P<value>\\d+) of (?P<total>\\d+)", "status": r"phase (?P<status>.+)"}``
or a ``percent`` group). Parsers only see whole lines and never block capture: the
program writes its log file itself, and parsing reads that file afterwards.
"""

import re
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
        lines = data.split(b"\n")
        self._partial = lines.pop()[-MAX_LINE:]
        for raw in lines:
            self.line(raw[:MAX_LINE].decode("utf-8", "replace"), now, started)

    def finish(self, now: float, started: float | None) -> None:
        """The program ended: its last line may lack a newline."""
        if self._partial:
            partial, self._partial = self._partial, b""
            self.line(partial.decode("utf-8", "replace"), now, started)

    def line(self, text: str, now: float, started: float | None) -> None:
        raise NotImplementedError

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

    def line(self, text: str, now: float, started: float | None) -> None:
        if self.progress_rx is not None and (m := self.progress_rx.search(text)):
            try:
                groups = m.groupdict()
                if groups.get("percent") is not None:
                    percent = float(groups["percent"])
                else:
                    percent = 100.0 * float(groups["value"]) / float(groups["total"])
            except (ValueError, ZeroDivisionError, TypeError):
                percent = None
            if percent is not None:
                percent = round(min(100.0, max(0.0, percent)), 2)
                if self._first is None:
                    self._first = (now, percent)
                self._set(percent=percent, eta=_eta(percent, self._first, now, started))
        if self.status_rx is not None and (m := self.status_rx.search(text)):
            status = m.groupdict().get("status") or m.group(0)
            self._set(status=status.strip()[:200])


class LsDynaParser(Parser):
    """LS-DYNA's stdout: termination time, time reached, added mass, termination kind."""

    TERMINATION = re.compile(rf"termination time\s*[=:]?\s*({_NUM})", re.I)
    REACHED = re.compile(rf"^\s*\d+\s+t\s+({_NUM})\s+dt\s+{_NUM}\s+"
                         r"(write d3plot file|flush i/o buffers|write d3dump\d* file)", re.I)
    ADDED_MASS = re.compile(rf"added mass\s*=\s*({_NUM})", re.I)
    MASS_INCREASE = re.compile(rf"percentage (?:mass )?increase\s*=\s*({_NUM})", re.I)
    NORMAL = re.compile(r"N\s?o\s?r\s?m\s?a\s?l\s+t\s?e\s?r\s?m\s?i\s?n\s?a\s?t\s?i\s?o\s?n", re.I)
    ERROR = re.compile(r"E\s?r\s?r\s?o\s?r\s+t\s?e\s?r\s?m\s?i\s?n\s?a\s?t\s?i\s?o\s?n", re.I)

    def __init__(self) -> None:
        super().__init__()
        self.end_time: float | None = None
        self._first: tuple[float, float] | None = None

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
