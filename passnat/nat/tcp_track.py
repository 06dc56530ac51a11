"""TCP connection tracking for NAT sessions: the whole state machine in one table.

Rules (SEIL's timer model, SPEC R17):
  1. A session starts in SYN_SENT when created by a SYN, in ESTABLISHED when
     picked up mid-stream (outbound only; inbound without SYN is unsolicited).
  2. A SYN seen from both sides (SYN, then SYN-ACK) makes it ESTABLISHED.
  3. A FIN in one direction makes it FIN_WAIT; FINs from both sides make it
     CLOSED; an RST makes it CLOSED at once.
  4. The state chooses the timeout class: SYN_SENT -> ``tcp-synonly``,
     ESTABLISHED and FIN_WAIT -> ``tcp-established``, CLOSED -> the short
     closing timer.
  5. A new SYN on a CLOSED session re-opens it (port reuse): SYN_SENT.

Only packets carrying SYN, FIN or RST reach this code; others never change state.
"""
from __future__ import annotations

from enum import IntEnum

FIN = 0x01
SYN = 0x02
RST = 0x04
ACK = 0x10


class TcpState(IntEnum):
    SYN_SENT = 1
    ESTABLISHED = 2
    FIN_WAIT = 3
    CLOSED = 4


#: timeout class per state (names are ``NatTimeouts`` fields or the built-in "closing")
TIMEOUT_CLASS = {
    TcpState.SYN_SENT: "tcp-synonly",
    TcpState.ESTABLISHED: "tcp-established",
    TcpState.FIN_WAIT: "tcp-established",
    TcpState.CLOSED: "closing",
}

# fin_seen bits: which directions have sent a FIN
FIN_OUT = 1
FIN_IN = 2


def initial_state(flags: int) -> TcpState:
    if flags & RST:
        return TcpState.CLOSED
    if flags & SYN and not flags & ACK:
        return TcpState.SYN_SENT
    return TcpState.ESTABLISHED


def next_state(state: TcpState, fins: int, flags: int, outbound: bool) -> tuple[TcpState, int]:
    """The state and FIN bits after a segment with ``flags`` in one direction."""
    if flags & RST:
        return TcpState.CLOSED, fins
    if flags & SYN:
        if state is TcpState.CLOSED:
            return TcpState.SYN_SENT, 0
        if state is TcpState.SYN_SENT and flags & ACK:
            # the answer to the opening SYN, from either side (an inside server
            # behind SNAPT answers outbound)
            return TcpState.ESTABLISHED, fins
        return state, fins
    if flags & FIN:
        fins |= FIN_OUT if outbound else FIN_IN
        if fins == FIN_OUT | FIN_IN:
            return TcpState.CLOSED, fins
        if state is TcpState.ESTABLISHED or state is TcpState.SYN_SENT:
            return TcpState.FIN_WAIT, fins
    return state, fins
