"""The daemon's data path without sockets: a fake TPACKET_V3 ring in, a fake send socket out.

Covers what happens between the ring and the engine and between the engine and
the wire: ARP answering and resolution, Ethernet framing, partial checksums
(TP_STATUS_CSUMNOTREADY + virtio_net_hdr), super-frame segmentation, truncated
frames, ICMP host unreachable after an ARP failure, the per-turn budget,
exceptions counted instead of raised, control dispatch and SIGHUP reloads.
"""
from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Any

import pytest
from scapy.all import ICMP, IP, TCP, UDP, Ether, raw  # type: ignore[attr-defined]
from scapy.layers.inet import IPerror
from scapy.layers.l2 import ARP

from passnat.config import parse_config
from passnat.io.afpacket import TP_STATUS_CSUMNOTREADY, RingGeometry
from passnat.io.daemon import Daemon, DaemonOptions
from passnat.io.ether import mac_bytes
from passnat.io.hostsetup import Attachment
from passnat.io.neighbours import ArpTimers, NeighbourTable
from passnat.io.offload import GSO_TCPV4, VNET_F_NEEDS_CSUM, VNET_NONE, complete_partial, parse_vnet
from passnat.packet.checksum import pseudo_sum

CONFIG = """\
interface lan0 add 192.168.0.1/24
interface lan1 add 203.0.113.1/24
nat napt add private 192.168.0.0-192.168.0.255 interface lan1
"""
MACS = {"lan0": "02:00:00:00:00:01", "lan1": "02:00:00:00:01:01"}
PC_MAC, SRV_MAC = "02:00:00:00:00:0b", "02:00:00:00:01:0a"
BLOCK = 1 << 16
NBLOCKS = 4


class FakeRing:
    """A TPACKET_V3 ring in anonymous memory: ``put`` fills blocks the way the kernel does."""

    def __init__(self) -> None:
        self.mm = mmap.mmap(-1, BLOCK * NBLOCKS)
        self.block = 0
        self.block_size = BLOCK
        self.block_nr = NBLOCKS
        self.fill = 0

    def put(self, frames: list[tuple[bytes, int, bytes, int | None]]) -> None:
        """One block of (frame, status, vnet header, wire length or None)."""
        base = self.fill * BLOCK
        assert self.mm[base + 8] == 0, "block still owned by the reader"
        off = 48
        prev = None
        for frame, status, vnet, wirelen in frames:
            mac = 48 + 20 + 14 + 10  # tpacket3_hdr, sockaddr_ll, alignment, vnet header
            start = base + off
            struct.pack_into("=I8xIIIHH", self.mm, start, 0, len(frame), wirelen or len(frame), status, mac,
                             mac + 14)
            self.mm[start + mac - 10:start + mac] = vnet or bytes(10)
            self.mm[start + mac:start + mac + len(frame)] = frame
            if prev is not None:
                struct.pack_into("=I", self.mm, prev, start - prev)
            prev = start
            off += (mac + len(frame) + 15) // 16 * 16
        struct.pack_into("=III", self.mm, base + 8, 1, len(frames), 48)
        self.fill = (self.fill + 1) % NBLOCKS

    def ring_stats(self) -> tuple[int, int, int]:
        return (0, 0, 0)


class FakeTx:
    """A send socket with PACKET_VNET_HDR and a NIC that computes requested checksums."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.partial = 0
        self.fail = False

    def send(self, frame: bytes) -> int:
        if self.fail:
            raise BlockingIOError
        vnet, frame = parse_vnet(frame, 0), frame[10:]
        assert vnet.gso_type == 0
        if vnet.flags & VNET_F_NEEDS_CSUM:
            self.partial += 1
            frame = complete_partial(frame, vnet.csum_start, vnet.csum_offset)
        self.frames.append(frame)
        return len(frame) + 10


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_daemon(tmp_path: Path, budget: int = 2048) -> tuple[Daemon, dict[str, FakeRing], dict[str, FakeTx],
                                                             Clock]:
    conf = tmp_path / "r.conf"
    conf.write_text(CONFIG)
    opts = DaemonOptions(config_path=str(conf), attachments=[Attachment("lan0", "eth0", 1500),
                                                             Attachment("lan1", "eth1", 1500)],
                         control_path=str(tmp_path / "c.sock"), geometry=RingGeometry(),
                         arp_timers=ArpTimers(interval=1.0, retries=2), budget=budget)
    d = Daemon(parse_config(CONFIG, str(conf)), opts)
    clock = Clock()
    d.clock = clock
    rings, txs = {}, {}
    for name, link in d.links.items():
        rings[name], txs[name] = FakeRing(), FakeTx()
        link.ring = rings[name]  # type: ignore[assignment]
        link.tx = txs[name]  # type: ignore[assignment]
        link.neigh = NeighbourTable(name, mac_bytes(MACS[name]), opts.arp_timers, prefix=VNET_NONE)
        link.mtu = 1500
        d._out[name] = (link, link.neigh.fast, txs[name].send)
    d._update_addresses()
    return d, rings, txs, clock


def eth(pkt: bytes, src: str = PC_MAC, dst: str = MACS["lan0"]) -> bytes:
    return raw(Ether(src=src, dst=dst) / IP(pkt))


def arp_frame(op: int, hwsrc: str, psrc: str, pdst: str, dst: str = "ff:ff:ff:ff:ff:ff") -> bytes:
    return raw(Ether(src=hwsrc, dst=dst) / ARP(op=op, hwsrc=hwsrc, psrc=psrc, pdst=pdst,
                                              hwdst="00:00:00:00:00:00" if op == 1 else MACS["lan1"]))


def partial(pkt: bytes) -> tuple[bytes, bytes]:
    """``pkt`` with a CHECKSUM_PARTIAL L4 field, and the vnet header describing it."""
    ihl = (pkt[0] & 15) * 4
    co = 16 if pkt[9] == 6 else 6
    src, dst = struct.unpack_from("!II", pkt, 12)
    field = struct.pack("!H", pseudo_sum(src, dst, pkt[9], len(pkt) - ihl))
    vnet = struct.pack("<BBHHHH", VNET_F_NEEDS_CSUM, 0, 0, 0, 14 + ihl, co)
    return pkt[:ihl + co] + field + pkt[ihl + co + 2:], vnet


def checks_ok(frame: bytes) -> IP:
    ip = Ether(frame)[IP]
    fresh = IP(raw(ip))
    del fresh.chksum
    for layer in (TCP, UDP, ICMP):
        if fresh.haslayer(layer):
            del fresh[layer].chksum
            break
    rebuilt = IP(raw(fresh))
    assert rebuilt.chksum == ip.chksum
    for layer in (TCP, UDP, ICMP):
        if ip.haslayer(layer):
            assert rebuilt[layer].chksum == ip[layer].chksum, f"{layer.__name__} checksum wrong"
            break
    return ip


def learn(d: Daemon, rings: dict[str, FakeRing]) -> None:
    """The PC and the server ARP for the router: both get learned."""
    rings["lan0"].put([(arp_frame(1, PC_MAC, "192.168.0.11", "192.168.0.1"), 0, b"", None)])
    rings["lan1"].put([(arp_frame(1, SRV_MAC, "203.0.113.10", "203.0.113.1"), 0, b"", None)])
    for link in d.links.values():
        d._drain(link)


def test_arp_answered_then_forwarding_with_macs(tmp_path: Path) -> None:
    d, rings, txs, _ = make_daemon(tmp_path)
    learn(d, rings)
    reply = Ether(txs["lan0"].frames[-1])
    assert reply[ARP].op == 2 and reply[ARP].psrc == "192.168.0.1" and reply.dst == PC_MAC
    assert Ether(txs["lan1"].frames[-1])[ARP].psrc == "203.0.113.1"
    pkt = raw(IP(src="192.168.0.11", dst="203.0.113.10") / UDP(sport=5000, dport=53) / b"query")
    rings["lan0"].put([(eth(pkt), 0, b"", None)])
    d._drain(d.links["lan0"])
    out = Ether(txs["lan1"].frames[-1])
    assert (out.src, out.dst) == (MACS["lan1"], SRV_MAC)
    ip = checks_ok(txs["lan1"].frames[-1])
    assert (ip.src, ip.ttl) == ("203.0.113.1", 63)
    st = d.links["lan0"].stats()
    assert st["rx_packets"] == 2 and d.links["lan1"].stats()["tx_packets"] == 2


def test_unresolved_next_hop_queues_then_releases(tmp_path: Path) -> None:
    d, rings, txs, _ = make_daemon(tmp_path)
    pkts = [raw(IP(src="192.168.0.11", dst="203.0.113.10") / UDP(sport=5000, dport=53) / bytes([i]))
            for i in range(3)]
    rings["lan0"].put([(eth(p), 0, b"", None) for p in pkts])
    d._drain(d.links["lan0"])
    assert len(txs["lan1"].frames) == 1  # one ARP request, packets waiting
    assert Ether(txs["lan1"].frames[0])[ARP].pdst == "203.0.113.10"
    rings["lan1"].put([(arp_frame(2, SRV_MAC, "203.0.113.10", "203.0.113.1", dst=MACS["lan1"]), 0, b"", None)])
    d._drain(d.links["lan1"])
    released = [Ether(f) for f in txs["lan1"].frames[1:]]
    assert [bytes(e[UDP].payload) for e in released] == [b"\x00", b"\x01", b"\x02"]
    assert all(e.dst == SRV_MAC for e in released)


def test_arp_failure_sends_host_unreachable_quoting_the_original(tmp_path: Path) -> None:
    d, rings, txs, clock = make_daemon(tmp_path)
    learn(d, rings)
    orig = raw(IP(src="192.168.0.11", dst="203.0.113.99", ttl=20) / UDP(sport=5000, dport=9) / b"lost")
    rings["lan0"].put([(eth(orig), 0, b"", None)])
    d._drain(d.links["lan0"])
    before = len(txs["lan0"].frames)
    for t in (101.0, 102.0):
        clock.now = t
        d._timers(t)
    assert len(txs["lan0"].frames) == before + 1
    err = Ether(txs["lan0"].frames[-1])
    assert err.dst == PC_MAC
    ip = checks_ok(txs["lan0"].frames[-1])
    assert (ip.src, ip.dst, ip[ICMP].type, ip[ICMP].code) == ("192.168.0.1", "192.168.0.11", 3, 1)
    quoted = ip[IPerror]
    assert (quoted.src, quoted.dst, quoted.ttl) == ("192.168.0.11", "203.0.113.99", 20)  # as received
    assert d.counters["icmp_host_unreachable_sent"] == 1
    counters = d.links["lan1"].stats()["counters"]
    assert counters["arp_unresolved"] == 1 and counters["arp_resolution_failed"] == 1


def test_partial_checksums_completed(tmp_path: Path) -> None:
    d, rings, txs, _ = make_daemon(tmp_path)
    learn(d, rings)
    tcp = raw(IP(src="192.168.0.11", dst="203.0.113.10") / TCP(sport=40000, dport=80, flags="S"))
    udp = raw(IP(src="192.168.0.11", dst="203.0.113.10") / UDP(sport=40001, dport=53) / b"odd")
    frames = []
    for p in (tcp, udp):
        part, vnet = partial(p)
        frames.append((eth(part), TP_STATUS_CSUMNOTREADY, vnet, None))
    rings["lan0"].put(frames)
    d._drain(d.links["lan0"])
    outs = txs["lan1"].frames[-2:]
    assert [checks_ok(f).proto for f in outs] == [6, 17]  # the "NIC" finished them as asked
    assert txs["lan1"].partial == 2
    assert d.links["lan0"].stats()["counters"]["rx_checksum_partial"] == 2


def test_superframe_segmented_and_truncated_counted(tmp_path: Path) -> None:
    d, rings, txs, _ = make_daemon(tmp_path)
    learn(d, rings)
    syn = raw(IP(src="192.168.0.11", dst="203.0.113.10") / TCP(sport=40000, dport=80, flags="S", seq=1))
    rings["lan0"].put([(eth(syn), 0, b"", None)])
    d._drain(d.links["lan0"])
    payload = bytes(range(256)) * 16
    big = raw(IP(src="192.168.0.11", dst="203.0.113.10") / TCP(sport=40000, dport=80, flags="PA", seq=2)
              / payload)
    part, vnet = partial(big)
    vnet = vnet[:1] + bytes([GSO_TCPV4]) + vnet[2:4] + struct.pack("<H", 1448) + vnet[6:]
    n = len(txs["lan1"].frames)
    rings["lan0"].put([(eth(part), TP_STATUS_CSUMNOTREADY, vnet, None),
                       (eth(syn)[:40], 0, b"", 2000)])  # snap 40 of a 2000-byte frame
    d._drain(d.links["lan0"])
    segs = [checks_ok(f) for f in txs["lan1"].frames[n:]]
    assert [len(bytes(s[TCP].payload)) for s in segs] == [1448, 1448, 1200]
    assert b"".join(bytes(s[TCP].payload) for s in segs) == payload
    counters = d.links["lan0"].stats()["counters"]
    assert counters["rx_superframes_segmented"] == 1 and counters["rx_segments_made"] == 3
    assert counters["rx_truncated"] == 1


def test_budget_bounds_one_turn_and_errors_are_counted(tmp_path: Path) -> None:
    d, rings, _txs, _ = make_daemon(tmp_path, budget=2)
    learn(d, rings)
    pkt = raw(IP(src="192.168.0.11", dst="203.0.113.10") / UDP(sport=5000, dport=53))
    for _ in range(3):
        rings["lan0"].put([(eth(pkt), 0, b"", None)] * 2)
    assert d._drain(d.links["lan0"]) is True  # budget used up, blocks still wait
    assert d._drain(d.links["lan0"]) is True
    assert d._drain(d.links["lan0"]) is False
    assert d.links["lan0"].stats()["rx_packets"] == 7

    def boom(*_a: Any) -> list[Any]:
        raise RuntimeError("engine bug")

    d.router.handle = boom  # type: ignore[method-assign]
    rings["lan0"].put([(eth(pkt), 0, b"", None)] * 2)
    d._drain(d.links["lan0"])
    assert d.counters["internal_error"] == 2


def test_tx_errors_counted(tmp_path: Path) -> None:
    d, rings, txs, _ = make_daemon(tmp_path)
    learn(d, rings)
    txs["lan1"].fail = True
    rings["lan0"].put([(eth(raw(IP(src="192.168.0.11", dst="203.0.113.10") / UDP())), 0, b"", None)])
    d._drain(d.links["lan0"])
    assert d.links["lan1"].stats()["counters"]["tx_error"] == 1


def test_dispatch_and_reload(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d, rings, txs, _ = make_daemon(tmp_path)
    learn(d, rings)
    rings["lan0"].put([(eth(raw(IP(src="192.168.0.11", dst="203.0.113.10") / UDP(sport=7, dport=53))), 0, b"",
                        None)])
    d._drain(d.links["lan0"])
    assert len(d.dispatch({"op": "status_nat"})) == 1
    assert {r["address"] for r in d.dispatch({"op": "arp"})} == {"192.168.0.11", "203.0.113.10"}
    assert d.dispatch({"op": "counters"})["interfaces"]["lan0"]["rx_packets"] == 2
    conf = Path(d.options.config_path)
    conf.write_text(CONFIG + "nat napt add global 203.0.113.2 interface lan1\n")
    n = len(txs["lan1"].frames)
    assert d.reload()
    garp = Ether(txs["lan1"].frames[n])
    assert garp[ARP].psrc == garp[ARP].pdst == "203.0.113.2"  # the new address is announced
    conf.write_text(CONFIG + "nat timeout protocol udp 77\n")
    assert d.reload()
    conf.write_text(CONFIG + "interface lan0 add bogus\n")
    assert not d.reload()
    assert "r.conf:4:20: error" in caplog.text and "NOT reloaded" in caplog.text
    conf.write_text(CONFIG + "interface lan2 add 10.0.0.1/24\n")
    assert not d.reload()
    assert "restart passnat to change interfaces" in caplog.text
    assert "udp 77" in d.dispatch({"op": "config"})


def test_full_size_partial_packets_use_the_kernel_but_big_syns_are_finished_here(tmp_path: Path) -> None:
    d, rings, txs, _ = make_daemon(tmp_path)
    learn(d, rings)
    assert d.partial_max == 1500
    syn = raw(IP(src="192.168.0.11", dst="203.0.113.10") / TCP(sport=40000, dport=80, flags="S") / (b"s" * 1458))
    data = raw(IP(src="192.168.0.11", dst="203.0.113.10") / TCP(sport=40000, dport=80, flags="A") / (b"d" * 1460))
    assert len(syn) == 1498 and len(data) == 1500
    frames = []
    for p in (syn, data):
        part, vnet = partial(p)
        frames.append((eth(part), TP_STATUS_CSUMNOTREADY, vnet, None))
    rings["lan0"].put(frames)
    d._drain(d.links["lan0"])
    outs = [checks_ok(f) for f in txs["lan1"].frames[-2:]]
    assert [len(o) for o in outs] == [1498, 1500]
    assert txs["lan1"].partial == 1  # only the data segment was left to the "NIC"
