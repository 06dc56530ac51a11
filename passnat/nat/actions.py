"""What the router core returns: plain values, never callbacks into I/O.

``Router.handle()`` and ``Router.on_timer()`` return a list of ``Output``: send
``packet`` (bytes of an IPv4 packet) out of ``interface`` (a configuration
interface name) to the link-layer neighbour ``next_hop`` (the gateway of the
route used, or the destination itself when it is on-link).  Dropped packets
produce no output; they are counted under a ``Drop`` reason.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Output:
    interface: str
    next_hop: str
    packet: bytes


class Addr(str):
    """An IPv4 address as dotted text that also compares equal to ``ipaddress`` objects."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return str.__eq__(self, other)
        if hasattr(other, "packed") and hasattr(other, "version"):
            return str.__eq__(self, str(other))
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = str.__hash__
