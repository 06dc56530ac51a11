"""A session's two precomputed rewrites ("flows") and how to apply them.

The slow path builds, the fast path applies (VPP nat44-ed ``nat_6t_flow_t``).
A port-based session (TCP, UDP, ICMP query id) is found by the 12 address and
port bytes of a packet in either direction (``SessionTable.out_flows`` /
``in_flows``: key -> the Session itself), and carries both rewrites in its
own slots, computed once when it is made (or its route changes):

  outbound (LAN -> NAT interface): source (in_addr, in_port) -> (out_addr, out_port)
      ``o_ipd``  IPv4 header checksum delta of the address change *and* TTL - 1
      ``o_l4d``  L4 checksum delta (pseudo-header address + port; ICMP: id only)
      ``o_hop``  where it goes: a ``Hop``
  inbound (NAT interface -> LAN): destination (out_addr, out_port) -> (in_addr, in_port)
      ``i_ipd``, ``i_l4d``, ``i_hop`` likewise.

A ``Hop`` is a plain tuple, indexed by the ``H_*`` constants, shared by every
session with the same egress (``intern_hop``), so it costs a session one
pointer:

  H_OIF    egress interface name
  H_NH     next hop (``Addr``)
  H_MTU    egress MTU: larger packets take the slow path (fragment / ICMP)
  H_SLOW   True when every packet must take the slow path (ALG sessions, filter states)
  H_FC     filter counter object or None (counted per packet on the fast path)

Deltas are ints in 0..0xFFFF taken from a shared table (``U16``), so they cost
no memory of their own either; docs/engine.md has the measured bytes per
session.  The slow path, which decrements the TTL itself, takes the TTL's
share back out of the header delta (``address_delta``).
"""
from __future__ import annotations

import struct
from typing import Any

from passnat.packet.checksum import TTL_DEC_DELTA, add_delta, apply_delta

H_OIF, H_NH, H_MTU, H_SLOW, H_FC = range(5)

Hop = tuple[Any, ...]

#: every 16-bit value as one shared int object (ports and deltas stored per session point here)
U16: list[int] = list(range(65536))

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


def deltas(old_addr: int, new_addr: int, old_port: int, new_port: int, pseudo: bool) -> tuple[int, int]:
    """(IPv4 header delta with TTL - 1, L4 delta) of rewriting old_addr:old_port to new_addr:new_port.

    RFC 1624 deltas, folded inline (delta32 / delta16 / add_delta spelled out)."""
    s = ((~old_addr >> 16) & 0xFFFF) + (~old_addr & 0xFFFF) + (new_addr >> 16) + (new_addr & 0xFFFF)
    s = (s & 0xFFFF) + (s >> 16)
    ipdn = (s & 0xFFFF) + (s >> 16)
    s = (~old_port & 0xFFFF) + new_port + (ipdn if pseudo else 0)
    s = (s & 0xFFFF) + (s >> 16)
    l4d = (s & 0xFFFF) + (s >> 16)
    s = ipdn + TTL_DEC_DELTA
    ipd = (s & 0xFFFF) + (s >> 16)
    return U16[ipd], U16[l4d]


def rewrite_deltas(in_addr: int, out_addr: int, in_port: int, out_port: int,
                   pseudo: bool) -> tuple[int, int, int, int]:
    """(o_ipd, o_l4d, i_ipd, i_l4d): both directions' deltas of a session (this runs for every
    new session).  The inbound change is the outbound one undone, so its deltas are the one's
    complement negations (0xFFFF - d), with either zero (0 or 0xFFFF) negated to 0xFFFF."""
    s = ((~in_addr >> 16) & 0xFFFF) + (~in_addr & 0xFFFF) + (out_addr >> 16) + (out_addr & 0xFFFF)
    s = (s & 0xFFFF) + (s >> 16)
    a = (s & 0xFFFF) + (s >> 16)  # the address change, outbound
    s = (~in_port & 0xFFFF) + out_port + (a if pseudo else 0)
    s = (s & 0xFFFF) + (s >> 16)
    o_l4d = (s & 0xFFFF) + (s >> 16)
    s = a + TTL_DEC_DELTA
    o_ipd = (s & 0xFFFF) + (s >> 16)
    s = (0xFFFF - a if 0 < a < 0xFFFF else 0xFFFF) + TTL_DEC_DELTA
    i_ipd = (s & 0xFFFF) + (s >> 16)
    i_l4d = 0xFFFF - o_l4d if 0 < o_l4d < 0xFFFF else 0xFFFF
    return U16[o_ipd], U16[o_l4d], U16[i_ipd], U16[i_l4d]


def set_rewrites(s: Any, o_hop: Hop, i_hop: Hop, *, pseudo: bool) -> None:
    """Compute and store both rewrites of session ``s`` (its addresses and ports are set)."""
    s.o_ipd, s.o_l4d, s.i_ipd, s.i_l4d = rewrite_deltas(s.in_addr, s.out_addr, s.in_port, s.out_port, pseudo)
    s.o_hop = o_hop
    s.i_hop = i_hop


#: one's complement negation of the TTL delta: adding it takes the TTL change back out
_UNDO_TTL = (~TTL_DEC_DELTA) & 0xFFFF


def address_delta(s: Any, outbound: bool) -> int:
    """The IPv4 header checksum delta of the session's address change alone."""
    return add_delta(s.o_ipd if outbound else s.i_ipd, _UNDO_TTL)


def l4_checksum_offset(proto: int) -> int | None:
    """Offset of the L4 checksum from the start of the L4 header."""
    return {6: 16, 17: 6, 1: 2}.get(proto)


def rewrite(buf: bytearray, ihl: int, proto: int, s: Any, outbound: bool, *, l4: bool = True) -> None:
    """Apply session ``s``'s rewrite for the direction to the packet in ``buf`` (slow path;
    TTL is not touched).  ``l4`` False rewrites only the IP header (non-first fragments)."""
    if outbound:
        addr_off, new_addr, new_port, l4d = 12, s.out_addr, s.out_port, s.o_l4d
    else:
        addr_off, new_addr, new_port, l4d = 16, s.in_addr, s.in_port, s.i_l4d
    _U32.pack_into(buf, addr_off, new_addr)
    _U16.pack_into(buf, 10, apply_delta(_U16.unpack_from(buf, 10)[0], address_delta(s, outbound)))
    if not l4:
        return
    if proto == 1:
        port_off = ihl + 4  # ICMP query id
    else:
        port_off = ihl + (0 if outbound else 2)
    cs_rel = l4_checksum_offset(proto)
    if len(buf) < port_off + 2:
        return
    _U16.pack_into(buf, port_off, new_port)
    if cs_rel is None or len(buf) < ihl + cs_rel + 2:
        return
    cs_off = ihl + cs_rel
    old = _U16.unpack_from(buf, cs_off)[0]
    if proto == 17 and old == 0:
        return  # UDP without checksum stays without (R8)
    new = apply_delta(old, l4d)
    if proto == 17 and new == 0:
        new = 0xFFFF
    _U16.pack_into(buf, cs_off, new)
