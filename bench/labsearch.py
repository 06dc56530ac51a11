"""The pure parts of ``make bench-lab`` (bench/lab_bench.py): one trial's figures, the
paced search for the best rate with < 1 % loss, and the median summaries.

Kept apart from the lab so that tests/bench/ can check them without namespaces.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

LOSS_LIMIT = 0.01  # "best sustained": the highest delivered rate of a trial with < 1 % loss


@dataclass
class Trial:
    """One run of the sender and what the sink counted.

    ``during``: frames counted at the sink between just before the sender started and
    just after it stopped (the rate figure); ``total``: the same after the queues drained
    (the loss figure); ``translated``: of ``total``, those whose source was the router's
    WAN address.
    """

    rate: float | None  # the paced rate asked for; None: unpaced
    sent: int
    seconds: float
    during: int
    total: int
    translated: int
    backlog_drops: int = 0  # frames the kernel dropped at a full per-CPU input queue meanwhile (whole machine)

    @property
    def offered_pps(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def delivered_pps(self) -> float:
        return self.during / self.seconds if self.seconds > 0 else 0.0

    @property
    def loss(self) -> float:
        if self.sent <= 0:
            return 1.0
        return max(0.0, 1.0 - self.total / self.sent)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(offered_pps=self.offered_pps, delivered_pps=self.delivered_pps, loss=self.loss)
        return d


SENDER_SHORT = 0.75  # a paced run that reaches less than this share of the rate asked: the sender's limit


@dataclass
class Search:
    best_pps: float  # 0.0: no run had < 1 % loss
    # no run lost 1 % or more, so the router's best is at least ``best_pps``: "sender" (it kept up
    # with all the sender could offer) or "steps" (the search ran out of steps going up); "" otherwise
    lower_bound: str = ""
    trials: list[Trial] = field(default_factory=list)

    @property
    def sender_limited(self) -> bool:
        return self.lower_bound == "sender"

    @property
    def peak_pps(self) -> float:
        """The highest delivered rate of any run, whatever its loss."""
        return max((t.delivered_pps for t in self.trials), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        return {"best_pps": self.best_pps, "peak_pps": self.peak_pps, "lower_bound": self.lower_bound,
                "trials": [t.as_dict() for t in self.trials]}


def search_best(trial: Callable[[float], Trial], *, steps: int, start: float, hint: float | None = None,
                loss_limit: float = LOSS_LIMIT, precision: float = 0.03) -> Search:
    """The best rate with < ``loss_limit`` loss, as perf-anchors.md B.2's "best sustained":
    the highest *delivered* rate of any of up to ``steps`` paced runs that lost less.

    Paced runs only (an unpaced flood first could leave the router in a state that spoils
    the rest).  The first run is at ``hint`` (the rate found in an earlier round) or else at
    ``start``.  Until a run fails the rate goes up by a factor (from a hint 1.25, growing by
    half with each further pass up to 2; else 2), until one passes it goes down (1.25 from a
    hint, else 1.5); then it bisects between the
    highest rate that passed and the lowest that failed, until they are within ``precision``.
    Rates are those the sender achieved: when it falls short of the rate asked because its CPU
    is busy, the next rate asked is raised by the same factor (unless it reached less than
    ``SENDER_SHORT`` of it: then it was at its limit).  When no run fails, the figure is a
    lower bound (``lower_bound``): "sender" when the sender was at its limit in a run that
    passed (the search stops after two such runs), else "steps".
    """
    result = Search(0.0)
    lo, hi = 0.0, math.inf  # highest achieved rate that passed, lowest that failed
    up, down = (1.25, 1.25) if hint else (2.0, 1.5)
    rate = hint if hint and hint > 0 else start
    gain = 1.0  # what the paced sender achieves of the rate asked when it is not at its limit
    at_limit_passes = 0
    for _ in range(steps):
        asked = rate / gain
        t = trial(asked)
        result.trials.append(t)
        achieved = min(asked, t.offered_pps) if t.offered_pps > 0 else asked
        at_limit = achieved < SENDER_SHORT * asked
        if t.loss < loss_limit:
            result.best_pps = max(result.best_pps, t.delivered_pps)
            lo = max(lo, achieved)
            if at_limit and hi == math.inf:
                at_limit_passes += 1
                if at_limit_passes >= 2:
                    break
            if hi == math.inf and result.trials[:-1]:
                up = min(2.0, up * 1.5)
        else:
            hi = min(hi, achieved)
        if not at_limit:
            gain = min(1.0, achieved / asked)
        if hi != math.inf and hi - lo <= precision * hi:
            break
        if hi == math.inf:
            rate = achieved * up
        elif lo == 0.0:
            rate = achieved / down
        else:
            rate = (lo + hi) / 2
    if result.trials and hi == math.inf:
        result.lower_bound = "sender" if at_limit_passes else "steps"
    return result


@dataclass
class Summary:
    median: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(values: Sequence[float | None]) -> Summary | None:
    """Median with min..max over the rounds that produced a value (None when none did)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None
    return Summary(statistics.median(vals), min(vals), max(vals), len(vals))


def ratios(num: Sequence[float | None], den: Sequence[float | None]) -> list[float | None]:
    """Per-round ratios (rounds are interleaved, so each pair was measured side by side)."""
    out: list[float | None] = []
    for a, b in zip(num, den):
        out.append(a / b if a is not None and b else None)
    return out


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of nothing")
    s = sorted(values)
    k = max(1, math.ceil(p / 100 * len(s)))
    return s[min(k, len(s)) - 1]
