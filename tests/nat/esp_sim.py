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

    # ---------------------------------------------------------------- run

    def run(self, until: float) -> Stats:
        """Run the scenario; packets in flight at ``until`` still arrive."""
        while self.events and self.events[0][0] <= until + 1.0:
            t, _, kind, data = heapq.heappop(self.events)
            self._timers(t)
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
        sport = IP(outs[0].packet)[UDP].sport
        self._deliver(self.r.handle("lan1", raw(IP(src=SERVER, dst=WAN) / UDP(sport=500, dport=sport) / hdr),
                                    self.now))

    def _deliver(self, outs: list[passnat.Output]) -> None:
        for o in outs:
            pkt = o.packet
            assert checksum(pkt, 0, 20) == 0, "bad IPv4 header checksum"
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

    def _server_rx(self, sa: SA) -> None:
        self._server_send(sa)

    def _lost(self, sa: SA, sent: float, seq: int) -> None:
        assert sa.first_in is not None
        if sent - sa.first_in <= self.settle:
            self.stats.lost_settling += 1
        else:
            self.stats.lost_late.append((sent, sa.in_spi))
