"""A minimal poll(2) reactor: file descriptors with callbacks, one ``poll`` per turn.

The daemon's loop is single-threaded: the receive rings, the control socket and
its connections, and the signal wake-up pipe are all watched here.  The
reactor does not own any descriptor; ``watch``/``unwatch`` only (de)register.

Invariant: a callback may watch or unwatch descriptors (even its own) while
events of the same turn are being dispatched; events for a descriptor that
was unwatched during the turn are not delivered.
"""
from __future__ import annotations

import select
import struct
from collections.abc import Callable

Callback = Callable[[int], None]  # called with the revents mask

POLLIN = select.POLLIN
POLLOUT = select.POLLOUT
POLLERR = select.POLLERR | select.POLLHUP | select.POLLNVAL
_POLLFD = struct.Struct("=ihh")  # struct pollfd: fd, events, revents


class Reactor:
    def __init__(self) -> None:
        self._poll = select.poll()
        self._callbacks: dict[int, Callback] = {}
        self._events: dict[int, int] = {}
        self._pollfds: bytes | None = None

    def watch(self, fd: int, events: int, callback: Callback) -> None:
        if fd in self._callbacks:
            self._poll.modify(fd, events)
        else:
            self._poll.register(fd, events)
        self._callbacks[fd] = callback
        self._events[fd] = events
        self._pollfds = None

    def modify(self, fd: int, events: int) -> None:
        self._poll.modify(fd, events)
        self._events[fd] = events
        self._pollfds = None

    def unwatch(self, fd: int) -> None:
        if self._callbacks.pop(fd, None) is not None:
            self._poll.unregister(fd)
            del self._events[fd]
            self._pollfds = None

    def pollfds(self) -> bytes:
        """Every watched descriptor as the ``struct pollfd`` array poll(2) takes (for the C
        receive loop, which sleeps on them itself: passnat/_speedups.c ``ring_rx``)."""
        if self._pollfds is None:
            self._pollfds = b"".join(_POLLFD.pack(fd, ev, 0) for fd, ev in self._events.items())
        return self._pollfds

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        """Wait up to ``timeout`` seconds (None: forever); the ready (fd, revents)."""
        ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
        return self._poll.poll(ms)

    def dispatch(self, events: list[tuple[int, int]]) -> None:
        for fd, revents in events:
            cb = self._callbacks.get(fd)
            if cb is not None:
                cb(revents)
