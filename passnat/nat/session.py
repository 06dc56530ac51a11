"""NAT sessions and endpoint-independent mappings: plain records.

A ``Session`` is one translated conversation (one 5-tuple for TCP/UDP, one
echo id for ICMP, one (inside host, remote, protocol) for address-only
protocols).  Its fast-path "flows" (precomputed rewrites, see ``flow.py``) are
derived data, rebuilt from the fields whenever routes or config change, so a
session saved with ``to_dict()`` and restored with ``from_dict()`` (R19) needs
nothing else.

A ``Mapping`` is the endpoint-independent binding inside addr:port ->
outside addr:port (RFC 4787 REQ-1, RFC 5382 REQ-1) shared by every session
of that inside endpoint; it lives while any of them does.
"""
from __future__ import annotations

from typing import Any

from passnat.packet.ipv4 import ntoa


class Record(dict[str, Any]):
    """A session record (``Router.sessions``): a plain dict whose keys also read as attributes."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Mapping:
    __slots__ = ("proto", "nat_if", "in_addr", "in_port", "out_addr", "out_port", "refs")

    def __init__(self, proto: int, nat_if: str, in_addr: int, in_port: int, out_addr: int, out_port: int):
        self.proto = proto
        self.nat_if = nat_if
        self.in_addr = in_addr
        self.in_port = in_port
        self.out_addr = out_addr
        self.out_port = out_port
        self.refs = 0


#: ``Session.ur`` values: the direction a session's first reply will come from
UR_IN = 1
UR_OUT = 2


class Session:
    """One session: about 600 bytes with its two index entries (docs/engine.md, ``make bench``).

    Every slot costs 8 bytes per session: keep values shared (ports and deltas
    from ``flow.U16``, hops interned, timer classes and names as shared strings).
    """

    __slots__ = (
        "id", "proto", "kind", "nat_if", "in_addr", "in_port", "out_addr", "out_port",
        "rem_addr", "rem_port", "created", "last", "timeout", "klass", "tcp_state", "fins",
        "origin", "handler", "info", "mapping", "okey", "ikey", "lan_if",
        "filter_state", "alive", "hd", "ur",
        # the fast-path rewrites (flow.py): header and L4 checksum deltas, and the Hop, per direction
        "o_ipd", "o_l4d", "o_hop", "i_ipd", "i_l4d", "i_hop",
    )

    def __init__(self, id: int, proto: int, kind: str, nat_if: str, in_addr: int, in_port: int,
                 out_addr: int, out_port: int, rem_addr: int, rem_port: int, now: float,
                 timeout: float, klass: str, origin: int, handler: str):
        # (positional arguments are half the cost of keywords: the lean path passes them so)
        self.id = id
        self.proto = proto
        self.kind = kind  # SEIL's type column: napt, snapt, esp, gre, other
        self.nat_if = nat_if
        self.in_addr = in_addr
        self.in_port = in_port
        self.out_addr = out_addr
        self.out_port = out_port
        self.rem_addr = rem_addr
        self.rem_port = rem_port
        self.created = now
        self.last = now
        self.timeout = timeout
        self.klass = klass
        self.tcp_state = 0
        self.fins = 0
        self.origin = origin  # source address of the packet that created it (restricted-per-ip)
        self.handler = handler  # name of the protocol handler that owns it
        self.info: dict[str, Any] | None = None  # protocol-specific plain data (SPIs, Call IDs)
        self.mapping: Mapping | None = None
        self.okey: bytes | None = None  # its keys in the table's flow indexes (None: not indexed)
        self.ikey: bytes | None = None
        self.lan_if: str | None = None
        self.filter_state: Any = None
        self.alive = True
        self.hd: float = 0.0  # when its primary expiry entry in the table fires (table.py)
        #: awaiting its first reply: 0 no (or not tracked), UR_IN a reply from outside (an evictable
        #: NAPT session, in its host's queue: table.py), UR_OUT a reply from the inside server (SNAPT)
        self.ur = 0
        self.o_ipd = self.o_l4d = self.i_ipd = self.i_l4d = 0
        self.o_hop: tuple[Any, ...] | None = None  # no fast path until flow.set_rewrites
        self.i_hop: tuple[Any, ...] | None = None

    def expires(self) -> float:
        return self.last + self.timeout

    def remaining(self, now: float) -> float:
        return max(0.0, self.last + self.timeout - now)

    def describe(self) -> str:
        return (f"{self.kind} {self.proto} {ntoa(self.in_addr)}:{self.in_port} = "
                f"{ntoa(self.out_addr)}:{self.out_port} <-> {ntoa(self.rem_addr)}:{self.rem_port}")

    # ------------------------------------------------------------ persistence

    _SAVED = ("id", "proto", "kind", "nat_if", "in_addr", "in_port", "out_addr", "out_port",
              "rem_addr", "rem_port", "created", "last", "timeout", "klass", "tcp_state", "fins",
              "origin", "handler", "info")

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._SAVED}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Session:
        s = cls(id=d["id"], proto=d["proto"], kind=d["kind"], nat_if=d["nat_if"],
                in_addr=d["in_addr"], in_port=d["in_port"], out_addr=d["out_addr"],
                out_port=d["out_port"], rem_addr=d["rem_addr"], rem_port=d["rem_port"],
                now=d["created"], timeout=d["timeout"], klass=d["klass"], origin=d["origin"],
                handler=d["handler"])
        s.last = d["last"]
        s.tcp_state = d["tcp_state"]
        s.fins = d["fins"]
        s.info = dict(d["info"]) if d["info"] else None
        return s
