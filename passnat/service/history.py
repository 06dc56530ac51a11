"""The daemon's recent past: a ring buffer of samples for the status page's charts.

Every ``interval`` seconds (10) the daemon records one ``Sample``: the wall
time, live sessions, packets received and sent (all interfaces), and every
drop reason's running total (engine and link layer).  ``capacity`` samples
(360: one hour) are kept; the oldest is overwritten.  A sample costs a few
dictionary reads, never a walk over the session table.

The page derives rates from consecutive samples (packets/s) and drops in the
window from the first and the last sample.  Counters that went backwards
(never, unless the process restarted) give a zero rate, not a negative one.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Sample:
    time: float  # wall clock (seconds since the epoch)
    sessions: int
    rx_packets: int
    tx_packets: int
    drops: dict[str, int] = field(default_factory=dict)  # reason -> running total (non-zero only)


class History:
    def __init__(self, interval: float = 10.0, capacity: int = 360):
        self.interval = interval
        self.samples: deque[Sample] = deque(maxlen=capacity)
        self._next = 0.0

    def due(self, mono: float) -> bool:
        """True (and the next sample scheduled) when a sample is due at ``mono``."""
        if mono < self._next:
            return False
        self._next = mono + self.interval
        return True

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)

    def with_sample(self, sample: Sample) -> History:
        """A copy with ``sample`` (the live state when a page is drawn) appended; this one is unchanged."""
        h = History(self.interval, self.samples.maxlen or 360)
        h.samples.extend(self.samples)
        h.samples.append(sample)
        return h

    def series(self) -> list[Sample]:
        return list(self.samples)

    def rates(self) -> list[tuple[float, float, float]]:
        """(time, rx packets/s, tx packets/s) between consecutive samples."""
        out = []
        prev = None
        for s in self.samples:
            if prev is not None and s.time > prev.time:
                dt = s.time - prev.time
                out.append((s.time, max(0, s.rx_packets - prev.rx_packets) / dt,
                            max(0, s.tx_packets - prev.tx_packets) / dt))
            prev = s
        return out

    def drops_in_window(self) -> dict[str, int]:
        """Drops per reason between the oldest and the newest sample (non-zero only), largest first."""
        if not self.samples:
            return {}
        first, last = self.samples[0], self.samples[-1]
        if len(self.samples) == 1:
            d = dict(last.drops)
        else:
            d = {k: v - first.drops.get(k, 0) for k, v in last.drops.items()}
        return dict(sorted(((k, v) for k, v in d.items() if v > 0), key=lambda kv: (-kv[1], kv[0])))
