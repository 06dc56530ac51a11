"""PPTP control messages (RFC 2637 §2) and enhanced GRE (RFC 2637 §4.1).

Every control message starts with Length(2) PPTP-Message-Type(2) Magic
0x1A2B3C4D(4) Control-Message-Type(2) Reserved0(2).  ``CALL_ID_FIELDS`` says,
for each message that carries Call IDs, at which offset a field sits and
whose ID it is: ``OWN`` (the sender's own Call ID) or ``PEER`` (the
receiver's Call ID, "Peer's Call ID").

Enhanced GRE: version 1, protocol 0x880B, K bit set; the key holds Payload
Length(2) and the *receiver's* Call ID(2) at GRE offset 6.
"""
from __future__ import annotations

MAGIC = 0x1A2B3C4D
HEADER_LEN = 12
CONTROL_MESSAGE = 1
PPTP_PORT = 1723

SCCRQ, SCCRP, STOPCCRQ, STOPCCRP, ECHO_RQ, ECHO_RP = 1, 2, 3, 4, 5, 6
OCRQ, OCRP, ICRQ, ICRP, ICCN, CCRQ, CDN, WEN, SLI = 7, 8, 9, 10, 11, 12, 13, 14, 15

NAMES = {
    SCCRQ: "Start-Control-Connection-Request", SCCRP: "Start-Control-Connection-Reply",
    STOPCCRQ: "Stop-Control-Connection-Request", STOPCCRP: "Stop-Control-Connection-Reply",
    ECHO_RQ: "Echo-Request", ECHO_RP: "Echo-Reply", OCRQ: "Outgoing-Call-Request",
    OCRP: "Outgoing-Call-Reply", ICRQ: "Incoming-Call-Request", ICRP: "Incoming-Call-Reply",
    ICCN: "Incoming-Call-Connected", CCRQ: "Call-Clear-Request", CDN: "Call-Disconnect-Notify",
    WEN: "WAN-Error-Notify", SLI: "Set-Link-Info",
}

#: minimum length of each control message (RFC 2637 §2)
MIN_LENGTH = {
    SCCRQ: 156, SCCRP: 156, STOPCCRQ: 16, STOPCCRP: 16, ECHO_RQ: 16, ECHO_RP: 20,
    OCRQ: 168, OCRP: 32, ICRQ: 220, ICRP: 24, ICCN: 28, CCRQ: 16, CDN: 148, WEN: 40, SLI: 24,
}

OWN = "own"
PEER = "peer"

#: message type -> ((offset, whose ID), ...)   (RFC 2637 §2.7-2.15)
CALL_ID_FIELDS: dict[int, tuple[tuple[int, str], ...]] = {
    OCRQ: ((12, OWN),),
    OCRP: ((12, OWN), (14, PEER)),
    ICRQ: ((12, OWN),),
    ICRP: ((12, OWN), (14, PEER)),
    ICCN: ((12, PEER),),
    CCRQ: ((12, OWN),),
    CDN: ((12, OWN),),
    WEN: ((12, PEER),),
    SLI: ((12, PEER),),
}

#: Outgoing-Call-Reply: offset of the Result Code, and its "Connected" value (RFC 2637 §2.8)
OCRP_RESULT = 16
OCRP_CONNECTED = 1

#: messages that open a call (the sender allocates its Call ID)
OPENING = frozenset((OCRQ, OCRP, ICRQ, ICRP))

GRE_PPP = 0x880B
GRE_CALL_ID_OFFSET = 6


def is_enhanced_gre(buf: bytes | bytearray, off: int) -> bool:
    """Version 1 GRE with the key present and protocol PPP (RFC 2637 §4.1)."""
    return (len(buf) >= off + 8 and buf[off] & 0x20 != 0 and buf[off + 1] & 0x07 == 1
            and (buf[off + 2] << 8 | buf[off + 3]) == GRE_PPP)
