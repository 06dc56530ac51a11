"""One log line per notable event, from the engine's counters.

The engine counts everything it drops; some counters mean the operator has to
act.  ``EventLog.check`` runs once per second in the daemon's housekeeping,
compares those counters with the previous check and logs **one line** for
each kind of event that happened -- not one per packet:

  session-full     new sessions refused: ``nat session maximum`` or a per-IP limit reached
  session-evicted  the table was full: unreplied sessions evicted for new ones (table.py make_room)
  pool-exhausted   no free NAPT port, no free ``nat dynamic`` address, no free PPTP Call ID
  ah               IPsec AH seen (it cannot pass NAT)
  esp-contention   several inside hosts contend for one server's ESP (first-come mode), or
                   SPI pairing could not decide / collided / its hold queue overflowed

A kind that keeps happening logs again at most every ``repeat`` seconds
(default 60), with the counts since its last line.  (Reload refusals are
logged by the daemon itself, one line each.)
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger("passnat.events")


@dataclass(frozen=True)
class EventKind:
    code: str
    counters: tuple[str, ...]
    level: int
    text: Callable[[dict[str, int], Mapping[str, object]], str]


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} +{v}" for k, v in d.items() if v)


KINDS: tuple[EventKind, ...] = (
    EventKind("session-full", ("nat_session_full", "nat_session_limit_per_ip", "nat_session_limit_per_private_ip"),
              logging.WARNING,
              lambda d, ctx: (f"nat session table full: {sum(d.values())} new session(s) refused ({_counts(d)}; "
                              f"{ctx.get('sessions')} of maximum {ctx.get('maximum')} in use); "
                              "raise `nat session maximum` or the restricted-per-ip limits")),
    EventKind("session-evicted", ("nat_session_evicted",), logging.WARNING,
              lambda d, ctx: (f"nat session table full: {sum(d.values())} unreplied session(s) evicted to make room "
                              f"({_counts(d)}; {ctx.get('sessions')} of maximum {ctx.get('maximum')} in use); "
                              "`passnat show status nat` shows the host holding the most")),
    EventKind("pool-exhausted", ("nat_no_free_port", "nat_dynamic_pool_exhausted", "pptp_no_free_call_id"),
              logging.WARNING,
              lambda d, ctx: (f"address/port pool exhausted: {sum(d.values())} packet(s) dropped ({_counts(d)}); "
                              "add global addresses (`nat napt add ... interface`), shorten timers, or find the "
                              "host opening so many sessions")),
    EventKind("ah", ("ah_translated", "ah_no_session"), logging.WARNING,
              lambda d, ctx: (f"IPsec AH seen: {sum(d.values())} packet(s) ({_counts(d)}); AH cannot pass NAT "
                              "(its integrity check covers the addresses): use ESP with NAT-T")),
    EventKind("esp-contention", ("esp_shared_remote", "esp_ambiguous_spi", "esp_spi_collision", "esp_hold_overflow"),
              logging.WARNING,
              lambda d, ctx: (f"ESP contention: {_counts(d)} (esp-passthrough {ctx.get('esp_mode')}); "
                              "`passnat doctor` says which hosts and servers")),
)


class EventLog:
    def __init__(self, repeat: float = 60.0):
        self.repeat = repeat
        self.last: dict[str, int] | None = None
        self.pending: dict[str, dict[str, int]] = {}  # kind -> counts not yet logged
        self.logged_at: dict[str, float] = {}
        self.lines = 0

    def check(self, counters: Mapping[str, int], mono: float, context: Mapping[str, object]) -> list[str]:
        """Log what happened since the previous call; returns the lines logged."""
        names = {c for k in KINDS for c in k.counters}
        now_counts = {c: int(counters.get(c, 0)) for c in names}
        prev, self.last = self.last, now_counts
        if prev is None:  # the first call only takes the baseline (restored or fresh counters)
            return []
        out = []
        for kind in KINDS:
            acc = self.pending.setdefault(kind.code, dict.fromkeys(kind.counters, 0))
            for c in kind.counters:
                delta = now_counts[c] - prev.get(c, 0)
                if delta > 0:
                    acc[c] += delta
            if not any(acc.values()):
                continue
            if mono - self.logged_at.get(kind.code, -1e18) < self.repeat:
                continue
            if (kind.code == "esp-contention" and context.get("esp_mode") != "first-come"
                    and not any(v for c, v in acc.items() if c != "esp_shared_remote")):
                # in spi mode several hosts per server is normal; only pairing trouble counts
                acc["esp_shared_remote"] = 0
                continue
            line = kind.text(acc, context)
            log.log(kind.level, line.replace("%", "%%"))
            out.append(line)
            self.lines += 1
            self.logged_at[kind.code] = mono
            self.pending[kind.code] = dict.fromkeys(kind.counters, 0)
        return out
