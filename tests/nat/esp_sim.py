"""A discrete-event network around the router for ESP passthrough tests.

Inside hosts send ESP to one server on a timer; the server answers every
packet it receives on the matching SA (the host's inbound SPI), as a real
tunnel echo would.  Links have a one-way latency; the router's timers run
whenever the clock passes ``next_deadline()``.  Every inbound ESP packet
the server sends is accounted: delivered to the right host, delivered to a
wrong host (never allowed), or lost.
"""
from __future__ import annotations

import heapq
import socket
import struct
from dataclasses import dataclass, field

from scapy.all import IP, UDP, raw

import passnat
from passnat.packet.checksum import checksum

SERVER = "203.0.113.10"
WAN = "203.0.113.1"


@dataclass
class SA:
    """One ESP tunnel direction pair of an inside host with the server."""

    host: str
    out_spi: int  # chosen by the server: host -> server packets carry it
    in_spi: int  # chosen by the host: server -> host packets carry it
    seq_out: int = 0
    seq_in: int = 0
    first_in: float | None = None  # when the server sent its first packet on in_spi
    active: bool = True


@dataclass
class Stats:
    sent_in: int = 0
    delivered: int = 0
    wrong: list[tuple[float, str, str, int]] = field(default_factory=list)
    lost_late: list[tuple[float, int]] = field(default_factory=list)  # lost outside the settling window
    lost_settling: int = 0
    per_sa: dict[int, int] = field(default_factory=dict)  # inbound SPI -> packets delivered right


@dataclass
class Exchange:
    """A child-SA IKE exchange modelled end to end (``EspNet.ike_exchange``)."""

    host: str
    sa: SA
    exchange: int
    msgid: int
    server_first: float | None  # the server's first ESP this long after its answer (None: it waits)
    server_count: int
    host_first: float | None  # the host's first ESP this long after it got the answer (None: never)
    host_stop: float
    sport: int = 0  # the host's IKE port as the server sees it


def _esp(src: str, dst: str, spi: int, seq: int, tag: bytes) -> bytes:
    """An IPv4 ESP packet built with struct (scapy is too slow for 10,000s of packets)."""
    body = struct.pack("!II", spi, seq) + tag.ljust(24, b".")
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 64, 50, 0,
                                socket.inet_aton(src), socket.inet_aton(dst)))
    struct.pack_into("!H", hdr, 10, checksum(hdr))
    return bytes(hdr) + body


class EspNet:
    def __init__(self, router: passnat.Router, latency: float = 0.002, settle: float = 2.0):
        self.r = router
        self.latency = latency
        self.settle = settle
        self.now = 0.0
        self.events: list[tuple[float, int, str, object]] = []
        self.n = 0
        self.sas: dict[int, SA] = {}  # by in_spi (server -> host)
        self.by_out: dict[int, SA] = {}  # by out_spi (host -> server)
        self.stats = Stats()
        self.sent_at: dict[tuple[int, int], float] = {}  # (in_spi, seq) -> time sent by server
        self.silent_server_until: float = -1.0
        self.exchanges: dict[int, Exchange] = {}  # by IKE message ID

    # ----------------------------------------------------------- scenario

    def add_sa(self, sa: SA) -> SA:
        self.sas[sa.in_spi] = sa
        self.by_out[sa.out_spi] = sa
        return sa

    def schedule(self, t: float, kind: str, data: object) -> None:
        self.n += 1
        heapq.heappush(self.events, (t, self.n, kind, data))

    def traffic(self, sa: SA, start: float, stop: float, interval: float) -> None:
        t = start
        while t < stop:
            self.schedule(t, "host_send", sa)
            t += interval

    def server_push(self, sa: SA, start: float, count: int, interval: float) -> None:
        """The server sends on its own (e.g. on a new SA before the host uses it)."""
        for i in range(count):
            self.schedule(start + i * interval, "server_send", sa)

    def ike(self, host: str, t: float, exchange: int = 36) -> None:
        """An IKEv2 response with ``exchange`` from the server to ``host`` via UDP 500."""
        self.schedule(t, "ike", (host, exchange))

    def ike_exchange(self, host: str, t: float, sa: SA, *, exchange: int = 35, server_first: float | None = 0.001,
                     server_count: int = 20, host_first: float | None = 0.2, host_stop: float = 30.0) -> Exchange:
        """The whole exchange that makes ``sa``: the host's request at ``t`` through the router
        (which may hold it for its turn), the server's answer when the request reaches it --
        the server uses the SA from then on (``server_first``: it sends ``server_count`` packets
        10 ms apart, starting that long after its answer) -- and the host's traffic once the
        answer reached it (``host_first`` later, every 10 ms until ``host_stop``)."""
        msgid = 1000 + len(self.exchanges)  # (the ``ike()`` shortcut uses 1)
        x = Exchange(host, sa, exchange, msgid, server_first, server_count, host_first, host_stop)
        self.exchanges[msgid] = x
        self.schedule(t, "ike_request", x)
        return x

    @staticmethod
    def _ike_message(host: str, exchange: int, msgid: int, response: bool) -> bytes:
        ispi = socket.inet_aton(host) * 2  # one IKE SA per host
        flags = 0x20 if response else 0x08
        return ispi + b"\x22" * 8 + bytes([35, 0x20, exchange, flags]) + struct.pack("!II", msgid, 28)

    def _ike_request(self, x: Exchange) -> None:
        msg = self._ike_message(x.host, x.exchange, x.msgid, False)
        self._deliver(self.r.handle("lan0", raw(IP(src=x.host, dst=SERVER) / UDP(sport=500, dport=500) / msg),
                                    self.now))

    def _server_ike_rx(self, x: Exchange) -> None:
        """The server answers, and from now on uses the SA."""
        msg = self._ike_message(x.host, x.exchange, x.msgid, True)
        pkt = raw(IP(src=SERVER, dst=WAN) / UDP(sport=500, dport=x.sport) / msg)
        self.schedule(self.now + self.latency, "wan_in", pkt)
        if x.server_first is not None:
            self.server_push(x.sa, self.now + x.server_first, x.server_count, 0.01)

    def _host_ike_rx(self, x: Exchange) -> None:
        if x.host_first is not None:
            self.traffic(x.sa, self.now + x.host_first, x.host_stop, 0.01)

    # ---------------------------------------------------------------- run

    def run(self, until: float) -> Stats:
        """Run the scenario; packets in flight at ``until`` still arrive."""
        end = until + 1.0
        while True:  # events and the router's timers in time order (a timer may start events)
            nxt = self.events[0][0] if self.events else None
            dl = self.r.next_deadline()
            if dl is not None and dl <= end and (nxt is None or dl < nxt):
                self.now = dl
                self._deliver(self.r.on_timer(dl))
                continue
            if nxt is None or nxt > end:
                break
            t, _, kind, data = heapq.heappop(self.events)
            self.now = t
            getattr(self, "_" + kind)(data)
        self._timers(until + self.settle + 5)
        # everything still unaccounted for was lost
        for (spi, seq), sent in self.sent_at.items():
            sa = self.sas[spi]
            self._lost(sa, sent, seq)
        self.sent_at.clear()
        return self.stats

    def _timers(self, t: float) -> None:
        while True:
            dl = self.r.next_deadline()
            if dl is None or dl > t:
                return
            self.now = dl
            self._deliver(self.r.on_timer(dl))

    def _stop(self, sa: SA) -> None:
        sa.active = False

    def _host_send(self, sa: SA) -> None:
        if not sa.active:
            return
        sa.seq_out += 1
        pkt = _esp(sa.host, SERVER, sa.out_spi, sa.seq_out, b"to-server")
        self._deliver(self.r.handle("lan0", pkt, self.now))

    def _server_send(self, sa: SA) -> None:
        sa.seq_in += 1
        if sa.first_in is None:
            sa.first_in = self.now
        self.stats.sent_in += 1
        self.sent_at[(sa.in_spi, sa.seq_in)] = self.now
        pkt = _esp(SERVER, WAN, sa.in_spi, sa.seq_in, sa.host.encode())
        self.schedule(self.now + self.latency, "wan_in", pkt)

    def _wan_in(self, pkt: bytes) -> None:
        self._deliver(self.r.handle("lan1", pkt, self.now))

    def _ike(self, data: tuple[str, int]) -> None:
        host, exchange = data
        # IKEv2 header: SPIi(8) SPIr(8) next(1) version(1)=0x20 exchange(1) flags(1)=response(0x20)
        hdr = b"\x11" * 8 + b"\x22" * 8 + bytes([33, 0x20, exchange, 0x20]) + b"\0\0\0\x01" + b"\0\0\0\x1c"
        # the host's IKE request first (creates the UDP 500 session), then the answer
        request = raw(IP(src=host, dst=SERVER) / UDP(sport=500, dport=500) / (hdr[:19] + b"\x08" + hdr[20:]))
        outs = self.r.handle("lan0", request, self.now)
        if not outs:
            return  # held for its turn: this shortcut has no server to answer it later
        sport = IP(outs[0].packet)[UDP].sport
        self._deliver(self.r.handle("lan1", raw(IP(src=SERVER, dst=WAN) / UDP(sport=500, dport=sport) / hdr),
                                    self.now))

    def _deliver(self, outs: list[passnat.Output]) -> None:
        for o in outs:
            pkt = o.packet
            assert checksum(pkt, 0, 20) == 0, "bad IPv4 header checksum"
            if pkt[9] == 17 and len(pkt) >= 56 and 500 in struct.unpack_from("!HH", pkt, 20):
                self._ike_out(o.interface, pkt)
                continue
            if pkt[9] != 50:
                continue
            spi, seq = struct.unpack_from("!II", pkt, 20)
            if o.interface == "lan1":
                assert pkt[12:16] == socket.inet_aton(WAN)
                sa = self.by_out.get(spi)
                if sa is not None and self.now >= self.silent_server_until:
                    self.schedule(self.now + self.latency, "server_rx", sa)
                continue
            dst = socket.inet_ntoa(pkt[16:20])
            sa = self.sas[spi]
            sent = self.sent_at.pop((spi, seq), None)
            if dst != sa.host:
                self.stats.wrong.append((self.now, dst, sa.host, spi))
            elif sent is not None:
                self.stats.delivered += 1
                self.stats.per_sa[spi] = self.stats.per_sa.get(spi, 0) + 1

    def _ike_out(self, interface: str, pkt: bytes) -> None:
        """An IKE message the router sent: on to the server, or to the host."""
        msgid = struct.unpack_from("!I", pkt, 28 + 20)[0]
        x = self.exchanges.get(msgid)
        if x is None:
            return  # the ``ike()`` shortcut's messages
        response = bool(pkt[28 + 19] & 0x20)
        if interface == "lan1" and not response:
            x.sport = struct.unpack_from("!H", pkt, 20)[0]
            self.schedule(self.now + self.latency, "server_ike_rx", x)
        elif interface == "lan0" and response:
            assert socket.inet_ntoa(pkt[16:20]) == x.host, "IKE answer delivered to the wrong host"
            self.schedule(self.now + self.latency, "host_ike_rx", x)

    def _server_rx(self, sa: SA) -> None:
        self._server_send(sa)

    def _lost(self, sa: SA, sent: float, seq: int) -> None:
        assert sa.first_in is not None
        if sent - sa.first_in <= self.settle:
            self.stats.lost_settling += 1
        else:
            self.stats.lost_late.append((sent, sa.in_spi))
