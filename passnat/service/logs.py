"""Log lines that read well on a terminal and under journald, with rate limits.

On a terminal (or a file) every line is ``2026-11-30 23:27:18,208 INFO
passnat.daemon: message``.  Under journald (``$JOURNAL_STREAM`` names the
device and inode of our stderr, as systemd documents) the timestamp is left
out -- the journal stamps every line itself -- and the level becomes the
kernel-style priority prefix journald reads (``<4>passnat.nat: ...`` is a
warning), on every line of a multi-line record (a traceback), so
``journalctl -p warning`` finds them.

Rate limits (``RateLimit``, a filter on the handler): messages are grouped
by logger and *template* -- the message with its numbers and hex values
masked, so ``dropped 192.168.0.11 -> 203.0.113.10`` and ``dropped
192.168.0.12 -> ...`` are one group.  Each group may log ``burst`` lines,
then one line per ``interval`` seconds; the line that passes after a quiet
spell says how many were suppressed (``[37 similar line(s) suppressed]``).
A second, global budget caps the whole log (``global_burst`` lines, then
``global_rate`` per second) against a flood of distinct messages.  Limits
apply once the daemon runs (``arm()``): start-up lines are never dropped.
The number of groups kept is bounded (the oldest are forgotten).
"""
from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TextIO

TERMINAL_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"

_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
_MASK = re.compile(r"0x[0-9a-fA-F]+|\d+")


def under_journald(stream: TextIO | None = None, environ: dict[str, str] | None = None) -> bool:
    """Whether ``stream`` (stderr) is connected to journald (``$JOURNAL_STREAM`` = ``dev:inode``)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


def priority(levelno: int) -> int:
    for level, prio in _PRIORITY:
        if levelno >= level:
            return prio
    return 7


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message`` with the prefix on every line, no timestamp."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.split("\n"))


class _Bucket:
    __slots__ = ("suppressed", "tokens", "updated")

    def __init__(self, tokens: float, now: float):
        self.tokens = tokens
        self.updated = now
        self.suppressed = 0


class RateLimit(logging.Filter):
    """Per-template and global token buckets (see the module docstring)."""

    def __init__(self, burst: int = 10, interval: float = 30.0, global_burst: int = 200,
                 global_rate: float = 20.0, max_groups: int = 1024, clock: Callable[[], float] | None = None):
        super().__init__()
        self.burst = burst
        self.interval = interval
        self.global_burst = global_burst
        self.global_rate = global_rate
        self.max_groups = max_groups
        self.clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self.armed = False
        self.groups: OrderedDict[tuple[str, int, str], _Bucket] = OrderedDict()
        self._global = _Bucket(float(global_burst), 0.0)
        self.suppressed_total = 0  # since the last ``take_suppressed``

    def arm(self) -> None:
        self.armed = True

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.armed:
            return True
        now = self.clock()
        template = record.msg if isinstance(record.msg, str) else str(record.msg)
        key = (record.name, record.levelno, _MASK.sub("#", template))
        b = self.groups.get(key)
        if b is None:
            b = _Bucket(float(self.burst), now)
            self.groups[key] = b
            if len(self.groups) > self.max_groups:
                self.groups.popitem(last=False)
        else:
            self.groups.move_to_end(key)
            b.tokens = min(float(self.burst), b.tokens + (now - b.updated) / self.interval)
            b.updated = now
        g = self._global
        g.tokens = min(float(self.global_burst), g.tokens + (now - g.updated) * self.global_rate)
        g.updated = now
        if b.tokens < 1.0 or g.tokens < 1.0:
            b.suppressed += 1
            self.suppressed_total += 1
            return False
        b.tokens -= 1.0
        g.tokens -= 1.0
        if b.suppressed:
            record.msg = f"{template} [{b.suppressed} similar line(s) suppressed]"
            b.suppressed = 0
        return True

    def take_suppressed(self) -> int:
        """Lines suppressed since the last call (the daemon logs a summary now and then)."""
        n, self.suppressed_total = self.suppressed_total, 0
        return n


_limit: RateLimit | None = None


def setup(level: str, stream: TextIO | None = None) -> RateLimit:
    """Configure the root logger for ``passnat run``: one handler on ``stream`` (stderr),
    the journald or terminal format, and the rate limit (armed later by the daemon)."""
    global _limit
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter() if under_journald(stream) else logging.Formatter(TERMINAL_FORMAT))
    _limit = RateLimit()
    handler.addFilter(_limit)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for noisy in ("pyroute2", "asyncio", "scapy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return _limit


def rate_limit() -> RateLimit | None:
    """The rate limit ``setup`` installed (None when logging was set up otherwise, e.g. in tests)."""
    return _limit
