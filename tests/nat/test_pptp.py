"""PPTP passthrough (R12, R13): Call-ID ALG on TCP 1723 and enhanced GRE by Call ID."""
from __future__ import annotations

from dataclasses import dataclass

from scapy.all import IP, TCP, raw
from scapy.layers.inet import IPerror
from scapy.layers.l2 import GRE_PPTP
from scapy.layers.pptp import (
    PPTP,
    PPTPCallClearRequest,
    PPTPCallDisconnectNotify,
    PPTPEchoRequest,
    PPTPIncomingCallConnected,
    PPTPIncomingCallReply,
    PPTPIncomingCallRequest,
    PPTPOutgoingCallReply,
    PPTPOutgoingCallRequest,
    PPTPSetLinkInfo,
    PPTPStartControlConnectionReply,
    PPTPStartControlConnectionRequest,
    PPTPWANErrorNotify,
)

import passnat
from tests.nat.helpers import counters, gre, gre_call_id, icmp_error, one, verify

BASE = """\
interface lan0 add 192.168.0.1/24
interface lan1 add 203.0.113.1/24
route add default 203.0.113.254
nat napt add private 192.168.0.0-192.168.0.255 interface lan1
"""
WAN = "203.0.113.1"
SERVER = "203.0.113.10"
PCS = ["192.168.0.11", "192.168.0.12", "192.168.0.13"]


@dataclass
class Conn:
    """A TCP connection through the router, driven from both ends."""

    r: passnat.Router
    inside: str
    iport: int
    remote: str
    rport: int
    inside_if: str = "lan0"
    outside_if: str = "lan1"
    iseq: int = 1000
    rseq: int = 5000
    oport: int = 0  # the port the remote sees
    outside_addr: str = WAN
    now: float = 0.0

    def open_from_inside(self) -> None:
        out = one(self.r.handle(self.inside_if, self._in("S", b"", seq=self.iseq - 1), self.now))
        self.oport = out[TCP].sport
        one(self.r.handle(self.outside_if, self._out("SA", b"", seq=self.rseq - 1), self.now))
        one(self.r.handle(self.inside_if, self._in("A", b""), self.now))

    def open_from_outside(self) -> None:
        """The remote connects to the inside party's published port (SNAPT)."""
        one(self.r.handle(self.outside_if, self._out("S", b"", seq=self.rseq - 1), self.now))
        one(self.r.handle(self.inside_if, self._in("SA", b"", seq=self.iseq - 1), self.now))
        one(self.r.handle(self.outside_if, self._out("A", b""), self.now))

    def _in(self, flags: str, data: bytes, seq: int | None = None) -> bytes:
        return raw(IP(src=self.inside, dst=self.remote) /
                   TCP(sport=self.iport, dport=self.rport, flags=flags, seq=self.iseq if seq is None else seq,
                       ack=self.rseq) / data)

    def _out(self, flags: str, data: bytes, seq: int | None = None) -> bytes:
        return raw(IP(src=self.remote, dst=self.outside_addr) /
                   TCP(sport=self.rport, dport=self.oport, flags=flags, seq=self.rseq if seq is None else seq,
                       ack=self.iseq) / data)

    def send_in(self, data: bytes, flags: str = "PA") -> list[passnat.Output]:
        """Inside party -> remote; returns what the router emitted."""
        outs = self.r.handle(self.inside_if, self._in(flags, data), self.now)
        self.iseq += len(data)
        return outs

    def send_out(self, data: bytes, flags: str = "PA") -> list[passnat.Output]:
        outs = self.r.handle(self.outside_if, self._out(flags, data), self.now)
        self.rseq += len(data)
        return outs


def pptp_payload(outs: list[passnat.Output]) -> PPTP:
    [o] = outs
    ip = verify(o.packet)  # TCP checksum after Call-ID rewriting included
    return PPTP(bytes(ip[TCP].payload))


def router(extra: str = "") -> passnat.Router:
    return passnat.Router(passnat.parse_config(BASE + extra))


def start_call(r: passnat.Router, pc: str, call_id: int, server_call_id: int, port: int = 40000) -> tuple[Conn, int]:
    """A PNS (client) inside opens a control connection and a call; returns (conn, outside Call ID)."""
    c = Conn(r, pc, port, SERVER, 1723)
    c.open_from_inside()
    c.send_in(raw(PPTPStartControlConnectionRequest()))
    c.send_out(raw(PPTPStartControlConnectionReply()))
    ocrq = pptp_payload(c.send_in(raw(PPTPOutgoingCallRequest(call_id=call_id, call_serial_number=7))))
    outside_id = ocrq.call_id
    ocrp = pptp_payload(c.send_out(raw(PPTPOutgoingCallReply(call_id=server_call_id, peer_call_id=outside_id,
                                                              result_code=1))))
    assert ocrp.peer_call_id == call_id, "OCRP's Peer Call ID must be the client's own again"
    assert ocrp.call_id == server_call_id
    return c, outside_id


def test_three_clients_same_call_id_to_one_server() -> None:
    r = router()
    calls = [start_call(r, pc, 0x1234, 0x80 + i, port=40000 + i) for i, pc in enumerate(PCS)]
    outside_ids = [oid for _, oid in calls]
    assert outside_ids[0] == 0x1234 and len(set(outside_ids)) == 3
    for i, (_, oid) in enumerate(calls):
        # GRE server -> client carries the client's (outside) Call ID: translated back
        back = one(r.handle("lan1", gre(SERVER, WAN, oid, seq=i), 1.0), "lan0")
        assert back.dst == PCS[i] and gre_call_id(raw(back)) == 0x1234
        # GRE client -> server carries the server's Call ID: only the address changes
        out = one(r.handle("lan0", gre(PCS[i], SERVER, 0x80 + i), 1.0), "lan1")
        assert out.src == WAN and gre_call_id(raw(out)) == 0x80 + i
    # every control message that carries the client's Call ID is translated both ways
    for i, (c, oid) in enumerate(calls):
        sli = pptp_payload(c.send_out(raw(PPTPSetLinkInfo(peer_call_id=oid))))
        assert sli.peer_call_id == 0x1234
        wen = pptp_payload(c.send_out(raw(PPTPWANErrorNotify(peer_call_id=oid))))
        assert wen.peer_call_id == 0x1234
        sli_out = pptp_payload(c.send_in(raw(PPTPSetLinkInfo(peer_call_id=0x80 + i))))
        assert sli_out.peer_call_id == 0x80 + i  # the server's own ID passes unchanged
        echo = pptp_payload(c.send_in(raw(PPTPEchoRequest(identifier=5))))
        assert echo.identifier == 5
    gre_sessions = [s for s in r.sessions(1.0) if s["protocol"] == "gre"]
    assert sorted((s["inside"], s["inside_port"], s["outside_port"], s["remote_port"]) for s in gre_sessions) == \
        sorted((PCS[i], 0x1234, outside_ids[i], 0x80 + i) for i in range(3))
    ctrl = [s for s in r.sessions(1.0) if s["protocol"] == "tcp"]
    assert all(s["pptp"]["calls"][0]["inside_call_id"] == 0x1234 for s in ctrl)


def test_call_clear_request_removes_gre() -> None:
    r = router()
    c, oid = start_call(r, PCS[0], 0x1234, 0x80)
    one(r.handle("lan1", gre(SERVER, WAN, oid), 1.0))
    ccrq = pptp_payload(c.send_in(raw(PPTPCallClearRequest(call_id=0x1234))))
    assert ccrq.call_id == oid
    assert [s for s in r.sessions(1.0) if s["protocol"] == "gre"] == []
    assert r.handle("lan1", gre(SERVER, WAN, oid), 1.1) == []
    # the server's CDN (its own Call ID, RFC 2637) passes unchanged and ends the call
    cdn = pptp_payload(c.send_out(raw(PPTPCallDisconnectNotify(call_id=0x80))))
    assert cdn.call_id == 0x80
    assert r.sessions(1.2)[0]["pptp"]["calls"] == []


def test_call_disconnect_notify_removes_gre_and_buggy_cdn_is_translated() -> None:
    r = router()
    c, oid = start_call(r, PCS[0], 0x1234, 0x80)
    c2, oid2 = start_call(r, PCS[1], 0x1234, 0x81, port=40001)
    cdn = pptp_payload(c.send_out(raw(PPTPCallDisconnectNotify(call_id=0x80))))
    assert cdn.call_id == 0x80
    # a server that puts the client's Call ID in its CDN: translated back for the client
    cdn2 = pptp_payload(c2.send_out(raw(PPTPCallDisconnectNotify(call_id=oid2))))
    assert cdn2.call_id == 0x1234
    assert [s for s in r.sessions(1.0) if s["protocol"] == "gre"] == []


def test_closing_the_control_connection_ends_its_calls() -> None:
    r = router()
    c, oid = start_call(r, PCS[0], 0x1234, 0x80)
    one(r.handle("lan1", gre(SERVER, WAN, oid), 1.0))
    c.send_in(b"", flags="FA")
    c.send_out(b"", flags="FA")
    assert [s for s in r.sessions(1.0) if s["protocol"] == "gre"] == []
    assert r.handle("lan1", gre(SERVER, WAN, oid), 1.1) == []
    # RST too
    c3, oid3 = start_call(r, PCS[2], 0x4321, 0x90, port=40002)
    c3.send_out(b"", flags="R")
    assert r.handle("lan1", gre(SERVER, WAN, oid3), 1.2) == []


def test_control_message_split_over_two_segments() -> None:
    r = router()
    r.handle("lan0", raw(IP(src=PCS[1], dst=SERVER) / TCP(sport=1, dport=1723, flags="S")), 0.0)
    c = Conn(r, PCS[0], 40000, SERVER, 1723)
    c.open_from_inside()
    start_call(r, PCS[1], 0x1234, 0x70, port=40005)  # takes 0x1234 outside
    ocrq = raw(PPTPOutgoingCallRequest(call_id=0x1234))
    for cut in (6, 13, 84):  # before the type, inside the Call ID field, after it
        c.iseq = c.iseq  # keep sequence
        first = c.send_in(ocrq[:cut])
        second = c.send_in(ocrq[cut:])
        got = b"".join(bytes(verify(o.packet)[TCP].payload) for o in sorted(
            first + second, key=lambda o: IP(o.packet)[TCP].seq))
        assert len(got) == len(ocrq)
        assert PPTP(got).call_id != 0x1234, cut
        assert got[:12] == ocrq[:12] and got[14:] == ocrq[14:]


def test_two_messages_in_one_segment_and_a_retransmission() -> None:
    r = router()
    start_call(r, PCS[1], 0x1234, 0x70, port=40005)
    c = Conn(r, PCS[0], 40000, SERVER, 1723)
    c.open_from_inside()
    data = raw(PPTPEchoRequest(identifier=1)) + raw(PPTPOutgoingCallRequest(call_id=0x1234))
    first = pptp_payload(c.send_in(data))
    seg = bytes(verify(c.r.handle("lan0", c._in("PA", data, seq=c.iseq - len(data)), 0.0)[0].packet)[TCP].payload)
    translated = PPTP(seg[16:]).call_id
    assert translated != 0x1234
    assert first.identifier == 1
    # a retransmission is rewritten identically
    again = c.r.handle("lan0", c._in("PA", data, seq=c.iseq - len(data)), 0.1)
    assert bytes(verify(again[0].packet)[TCP].payload) == seg


def test_out_of_order_segment_is_dropped_for_retransmission() -> None:
    r = router()
    c = Conn(r, PCS[0], 40000, SERVER, 1723)
    c.open_from_inside()
    ahead = c.r.handle("lan0", c._in("PA", raw(PPTPEchoRequest()), seq=c.iseq + 100), 0.0)
    assert ahead == [] and counters(r)["pptp_out_of_order_segment"] == 1


def test_pptp_server_behind_snapt_for_two_outside_clients() -> None:
    r = router("nat snapt add protocol tcp listen 1723 forward 192.168.0.10 1723 interface lan1\n")
    clients = ["198.51.100.21", "198.51.100.22"]
    for i, client in enumerate(clients):
        c = Conn(r, "192.168.0.10", 1723, client, 50000 + i, oport=1723)
        c.open_from_outside()
        c.send_out(raw(PPTPStartControlConnectionRequest()))
        c.send_in(raw(PPTPStartControlConnectionReply()))
        c.send_out(raw(PPTPOutgoingCallRequest(call_id=0x500)))  # the client's ID passes unchanged
        ocrp = pptp_payload(c.send_in(raw(PPTPOutgoingCallReply(call_id=7, peer_call_id=0x500, result_code=1))))
        assert ocrp.peer_call_id == 0x500
        server_outside_id = ocrp.call_id
        # client -> server GRE (key = the server's call id as the client knows it)
        g = one(r.handle("lan1", gre(client, WAN, server_outside_id), 1.0), "lan0")
        assert g.dst == "192.168.0.10" and gre_call_id(raw(g)) == 7
        # server -> client GRE (key = the client's call id): source becomes the global address
        back = one(r.handle("lan0", gre("192.168.0.10", client, 0x500), 1.0), "lan1")
        assert back.src == WAN and gre_call_id(raw(back)) == 0x500


def test_incoming_call_from_the_server_side() -> None:
    r = router()
    c = Conn(r, PCS[0], 40000, SERVER, 1723)
    c.open_from_inside()
    c.send_out(raw(PPTPIncomingCallRequest(call_id=0x66)))
    icrp = pptp_payload(c.send_in(raw(PPTPIncomingCallReply(call_id=0x1234, peer_call_id=0x66))))
    oid = icrp.call_id
    assert icrp.peer_call_id == 0x66
    iccn = pptp_payload(c.send_out(raw(PPTPIncomingCallConnected(peer_call_id=oid))))
    assert iccn.peer_call_id == 0x1234
    assert one(r.handle("lan1", gre(SERVER, WAN, oid), 1.0)).dst == PCS[0]


def test_icmp_error_quoting_gre_reaches_the_right_host() -> None:
    r = router()
    start_call(r, PCS[0], 0x1234, 0x80)
    start_call(r, PCS[1], 0x1234, 0x81, port=40001)
    b_gre = r.handle("lan0", gre(PCS[1], SERVER, 0x81), 1.0)[0].packet
    err = one(r.handle("lan1", icmp_error("198.51.100.1", WAN, b_gre, 3, 4, mtu=1200), 1.1), "lan0")
    assert err.dst == PCS[1] and err[IPerror].src == PCS[1]


def test_gre_without_call_is_unsolicited() -> None:
    r = router()
    assert r.handle("lan1", gre(SERVER, WAN, 0x999), 0.0) == []
    assert counters(r)["gre_unsolicited"] == 1
    assert GRE_PPTP  # imported for helpers


def test_failed_outgoing_call_reply_ends_the_call() -> None:
    r = router()
    c = Conn(r, PCS[0], 40000, SERVER, 1723)
    c.open_from_inside()
    ocrq = pptp_payload(c.send_in(raw(PPTPOutgoingCallRequest(call_id=0x1234))))
    ocrp = pptp_payload(c.send_out(raw(PPTPOutgoingCallReply(call_id=0x80, peer_call_id=ocrq.call_id,
                                                              result_code=4))))  # busy
    assert ocrp.peer_call_id == 0x1234  # still translated for the client
    assert r.sessions(1.0)[0]["pptp"]["calls"] == []
    assert r.handle("lan1", gre(SERVER, WAN, ocrq.call_id), 1.0) == []
