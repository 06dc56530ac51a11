"""The daemon's data path without sockets: a fake TPACKET_V3 ring in, a fake send socket out.

Covers what happens between the ring and the engine and between the engine and
the wire: ARP answering and resolution, Ethernet framing, partial checksums
(TP_STATUS_CSUMNOTREADY + virtio_net_hdr), super-frame segmentation, truncated
frames, ICMP host unreachable after an ARP failure, the per-turn budget,
exceptions counted instead of raised, control dispatch and SIGHUP reloads.

Every test runs twice: with the C receive loop (passnat._speedups.ring_rx,
which sends on the fake socket's file descriptor) and with the Python loop
alone (as with PASSNAT_PURE=1).  tests/io/test_ring_forward.py compares the two
frame by frame.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scapy.all import ICMP, IP, TCP, UDP, Ether, raw  # type: ignore[attr-defined]
from scapy.layers.inet import IPerror
from scapy.layers.l2 import ARP

from passnat import speedups
from passnat.io import daemon as daemon_module
from passnat.io.afpacket import TP_STATUS_CSUMNOTREADY
from passnat.io.offload import GSO_TCPV4
from tests.io.fakes import CONFIG, MACS, PC_MAC, SRV_MAC, FakeTx, arp_frame, checks_ok, eth, learn, make_daemon, partial


@pytest.fixture(autouse=True, params=["c", "python"])
def ring_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test with the C ring path, then with the Python loop alone."""
    if request.param == "c":
        built = speedups.built()
        if built is None:
            pytest.fail("passnat._speedups is not built (ring_rx missing)")
        monkeypatch.setattr(daemon_module, "_ring_rx", built.ring_rx)  # also with PASSNAT_PURE set
    else:
        monkeypatch.setattr(daemon_module, "_ring_rx", None)
    yield request.param
    for tx in FakeTx.opened:
        tx.close()
    FakeTx.opened.clear()


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


def test_an_arp_reply_is_read_between_bursts_of_the_other_link(tmp_path: Path) -> None:
    """1000 new flows to an unresolved next hop arrive in one burst, and the next hop's ARP reply
    right behind them on the other link: the links take turns (64 frames), so the reply is read
    after the first 64 and nothing overflows the 64-packet ARP queue (no arp_queue_full)."""
    from tests.io.fakes import FakeRing
    d, rings, txs, _ = make_daemon(tmp_path)
    rings["lan0"] = d.links["lan0"].ring = FakeRing(frames=2048)  # type: ignore[assignment]
    d._bind_rx()
    pkts = [raw(IP(src="192.168.0.11", dst="203.0.113.10") / UDP(sport=10000 + i, dport=53) / b"q")
            for i in range(1000)]
    rings["lan0"].put([(eth(p), 0, b"", None) for p in pkts])
    rings["lan1"].put([(arp_frame(2, SRV_MAC, "203.0.113.10", "203.0.113.1", dst=MACS["lan1"]), 0, b"", None)])
    while d._drain_all():
        pass
    counters = d.links["lan1"].stats()["counters"]
    assert counters.get("arp_queue_full", 0) == 0
    sent = [Ether(f) for f in txs["lan1"].frames]
    assert sum(1 for e in sent if e.haslayer(UDP)) == 1000 and all(e.dst == SRV_MAC for e in sent if e.haslayer(UDP))


def test_a_ring_out_of_step_is_resynchronised_not_spun_on(tmp_path: Path) -> None:
    """The reader's head on an empty slot while frames wait further on (the state the old block
    ring could reach after an overload, where poll() said readable ~24,000 times a second): the
    next walk after poll() finds the oldest frame handed over, takes every frame in order, counts
    ring_resync once, and then the loop rests (no more frames: no spin)."""
    d, rings, txs, _ = make_daemon(tmp_path)
    learn(d, rings)
    ring, link = rings["lan0"], d.links["lan0"]
    ring.fill = 20  # the kernel writes at slot 20 on; the reader stays at its head (slot 1)
    pkts = [raw(IP(src="192.168.0.11", dst="203.0.113.10") / UDP(sport=7000 + i, dport=53) / bytes([i]))
            for i in range(8)]
    ring.put([(eth(p), 0, b"", None) for p in pkts])
    link.polled = True  # poll() reported the ring readable
    assert d._drain_all() is False
    assert d.counters["ring_resync"] == 1
    sent = [Ether(f) for f in txs["lan1"].frames if Ether(f).haslayer(UDP)]
    assert [bytes(e[UDP].payload) for e in sent] == [bytes([i]) for i in range(8)]
    link.polled = True  # nothing waits any more: a readable poll() now finds nothing, resyncs nothing
    assert d._drain_all() is False and d.counters["ring_resync"] == 1


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
    assert d.router.lean is not None
    d.router.lean.first = boom  # type: ignore[method-assign]  # (the Python loop's handle() reaches it)
    d.router.lean.c_state = (None,) * len(d.router.lean.c_state or ())  # the C loop's lean raises too
    new_flow = raw(IP(src="192.168.0.11", dst="203.0.113.10") / UDP(sport=5001, dport=53))  # slow path
    rings["lan0"].put([(eth(new_flow), 0, b"", None)] * 2)
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
