"""bench/labsearch.py: the paced search of `make bench-lab` and its median summaries,
against a model router (a capacity) and a model sender (a maximum rate)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parents[2] / "bench" / "labsearch.py"
_spec = importlib.util.spec_from_file_location("labsearch", _path)
assert _spec and _spec.loader
labsearch = importlib.util.module_from_spec(_spec)
sys.modules["labsearch"] = labsearch
_spec.loader.exec_module(labsearch)

Trial = labsearch.Trial


def model(capacity: float, sender_max: float, *, shortfall: float = 1.0, seconds: float = 2.0):
    """A trial function: the sender offers min(rate * shortfall, sender_max), the router
    forwards at most ``capacity``."""
    calls: list[float] = []

    def trial(rate: float) -> Trial:
        calls.append(rate)
        offered = min(rate * shortfall, sender_max)
        delivered = min(offered, capacity)
        sent = round(offered * seconds)
        got = round(delivered * seconds)
        return Trial(rate, sent, seconds, got, got, got)

    return trial, calls


def test_trial_figures():
    t = Trial(100.0, 1000, 2.0, 980, 990, 990)
    assert t.offered_pps == 500.0
    assert t.delivered_pps == 490.0
    assert t.loss == pytest.approx(0.01)
    assert Trial(None, 0, 0.0, 0, 0, 0).loss == 1.0
    assert Trial(None, 10, 1.0, 11, 11, 11).loss == 0.0  # never negative
    d = t.as_dict()
    assert d["delivered_pps"] == 490.0 and d["rate"] == 100.0


def test_router_slower_than_sender_found_within_precision():
    trial, calls = model(capacity=80_000, sender_max=300_000)
    s = labsearch.search_best(trial, steps=8, start=50_000)
    assert not s.sender_limited
    assert 0.95 * 80_000 <= s.best_pps <= 80_000
    assert calls[:2] == [50_000, 100_000]
    assert s.peak_pps == 80_000


def test_starting_too_high_goes_down():
    trial, calls = model(capacity=10_000, sender_max=300_000)
    s = labsearch.search_best(trial, steps=10, start=50_000)
    assert 0.95 * 10_000 <= s.best_pps <= 10_000
    assert calls[1] == pytest.approx(50_000 / 1.5)


def test_too_low_hint_climbs_faster_and_says_it_ran_out_of_steps():
    trial, calls = model(capacity=100_000, sender_max=400_000)
    s = labsearch.search_best(trial, steps=4, start=50_000, hint=10_000)
    assert [round(c) for c in calls] == [10_000, 12_500, 23_438, 46_875]  # x1.25, x1.875, x2
    assert s.lower_bound == "steps" and not s.sender_limited
    assert s.best_pps == 46_875


def test_hint_converges_in_fewer_steps():
    trial, _ = model(capacity=120_000, sender_max=400_000)
    s = labsearch.search_best(trial, steps=3, start=50_000, hint=118_000)
    assert s.best_pps >= 0.97 * 120_000
    trial2, _ = model(capacity=120_000, sender_max=400_000)
    s2 = labsearch.search_best(trial2, steps=3, start=50_000)
    assert s2.best_pps < 0.9 * 120_000


def test_sender_limited_stops_when_the_sender_cannot_go_faster():
    trial, calls = model(capacity=500_000, sender_max=300_000)
    s = labsearch.search_best(trial, steps=8, start=50_000)
    assert s.sender_limited and s.lower_bound == "sender"
    assert s.best_pps == 300_000
    assert calls[:4] == [50_000, 100_000, 200_000, 400_000] and len(calls) <= 6


def test_sender_slowed_near_the_routers_limit_is_not_sender_limited():
    # the sender reaches only 72 % of rates from 90k up (as when the router's CPU is saturated)
    def trial(rate: float) -> Trial:
        offered = rate if rate < 90_000 else rate * 0.72
        delivered = min(offered, 80_000)
        return Trial(rate, round(offered * 2), 2.0, round(delivered * 2), round(delivered * 2), round(delivered * 2))

    s = labsearch.search_best(trial, steps=8, start=50_000)
    assert not s.sender_limited
    assert 0.95 * 80_000 <= s.best_pps <= 80_000


def test_sender_falling_short_brackets_on_what_it_achieved():
    # the paced sender achieves only 80 % of the asked rate: the figure is still what was delivered
    trial, _ = model(capacity=90_000, sender_max=200_000, shortfall=0.8)
    s = labsearch.search_best(trial, steps=8, start=50_000)
    assert not s.sender_limited
    assert 0.95 * 90_000 <= s.best_pps <= 90_000
    for t in s.trials:
        assert t.offered_pps <= 0.8 * t.rate + 1


def test_nothing_passes_gives_zero():
    def trial(rate: float) -> Trial:
        return Trial(rate, 1000, 1.0, 500, 500, 500)  # always 50 % loss

    s = labsearch.search_best(trial, steps=5, start=1000)
    assert s.best_pps == 0.0 and len(s.trials) == 5
    assert [round(t.rate) for t in s.trials] == [1000, 667, 444, 296, 198]


def test_summaries_ratios_percentiles():
    s = labsearch.summarize([3.0, None, 1.0, 2.0])
    assert (s.median, s.low, s.high, s.n) == (2.0, 1.0, 3.0, 3)
    assert labsearch.summarize([None, None]) is None
    assert labsearch.summarize([float("nan")]) is None
    assert labsearch.ratios([1.0, 2.0, None], [2.0, 0.0, 1.0]) == [0.5, None, None]
    vals = [float(i) for i in range(1, 101)]
    assert labsearch.percentile(vals, 50) == 50.0
    assert labsearch.percentile(vals, 90) == 90.0
    assert labsearch.percentile([7.0], 90) == 7.0
    with pytest.raises(ValueError):
        labsearch.percentile([], 50)
