"""Precomputed per-direction rewrites ("flows") and how to apply them.

The slow path builds, the fast path applies (VPP nat44-ed ``nat_6t_flow_t``).
A flow is a plain tuple, indexed by the ``F_*`` constants, computed once when a
session is created (or its route changes):

  F_SESS   the Session
  F_ADDR   new source (outbound) or destination (inbound) address, int
  F_PORT   new source/destination port (or ICMP id), int
  F_IPD    IPv4 header checksum delta of the address change *and* TTL - 1
  F_L4D    L4 checksum delta (pseudo-header address + port; ICMP: id only)
  F_OIF    egress interface name
  F_NH     next hop (``Addr``)
  F_MTU    egress MTU: larger packets take the slow path (fragment / ICMP)
  F_FC     filter counter object or None (counted per packet on the fast path)
  F_SLOW   True when every packet must take the slow path (ALG sessions)

The slow path, which decrements the TTL itself, takes the TTL's share back
out of F_IPD (``address_delta``).  Flows are the bulk of a session's memory,
so they hold nothing that can be derived.

Outbound flows rewrite bytes 12-15 (source) and the source port; inbound
flows rewrite bytes 16-19 (destination) and the destination port.
"""
from __future__ import annotations

import struct
from typing import Any

from passnat.packet.checksum import TTL_DEC_DELTA, add_delta, apply_delta

F_SESS, F_ADDR, F_PORT, F_IPD, F_L4D, F_OIF, F_NH, F_MTU, F_FC, F_SLOW = range(10)

Flow = tuple[Any, ...]

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


def make_flow(*, session: Any, old_addr: int, new_addr: int, old_port: int, new_port: int,
              oif: str, nh: str, mtu: int, pseudo: bool, slow: bool = False, fc: Any = None) -> Flow:
    # RFC 1624 deltas, folded inline (delta32 / delta16 / add_delta spelled out: this runs
    # twice per new session)
    s = ((~old_addr >> 16) & 0xFFFF) + (~old_addr & 0xFFFF) + (new_addr >> 16) + (new_addr & 0xFFFF)
    s = (s & 0xFFFF) + (s >> 16)
    ipdn = (s & 0xFFFF) + (s >> 16)
    s = (~old_port & 0xFFFF) + new_port + (ipdn if pseudo else 0)
    s = (s & 0xFFFF) + (s >> 16)
    l4d = (s & 0xFFFF) + (s >> 16)
    s = ipdn + TTL_DEC_DELTA
    ipd = (s & 0xFFFF) + (s >> 16)
    return (session, new_addr, new_port, ipd, l4d, oif, nh, mtu, fc, slow)


#: one's complement negation of the TTL delta: adding it takes the TTL change back out
_UNDO_TTL = (~TTL_DEC_DELTA) & 0xFFFF


def address_delta(flow: Flow) -> int:
    """The IPv4 header checksum delta of the flow's address change alone."""
    return add_delta(flow[F_IPD], _UNDO_TTL)


def l4_checksum_offset(proto: int) -> int | None:
    """Offset of the L4 checksum from the start of the L4 header."""
    return {6: 16, 17: 6, 1: 2}.get(proto)


def rewrite(buf: bytearray, ihl: int, proto: int, flow: Flow, outbound: bool, *, l4: bool = True) -> None:
    """Apply ``flow`` to the packet in ``buf`` (slow path; TTL is not touched).

    ``l4`` False rewrites only the IP header (non-first fragments).
    """
    addr_off = 12 if outbound else 16
    _U32.pack_into(buf, addr_off, flow[F_ADDR])
    _U16.pack_into(buf, 10, apply_delta(_U16.unpack_from(buf, 10)[0], address_delta(flow)))
    if not l4:
        return
    if proto == 1:
        port_off = ihl + 4  # ICMP query id
    else:
        port_off = ihl + (0 if outbound else 2)
    cs_rel = l4_checksum_offset(proto)
    if len(buf) < port_off + 2:
        return
    _U16.pack_into(buf, port_off, flow[F_PORT])
    if cs_rel is None or len(buf) < ihl + cs_rel + 2:
        return
    cs_off = ihl + cs_rel
    old = _U16.unpack_from(buf, cs_off)[0]
    if proto == 17 and old == 0:
        return  # UDP without checksum stays without (R8)
    new = apply_delta(old, flow[F_L4D])
    if proto == 17 and new == 0:
        new = 0xFFFF
    _U16.pack_into(buf, cs_off, new)
