"""passnat replay: a pcapng through the engine, outputs per egress interface, readable by tshark."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.all import IP, UDP, Ether, raw  # type: ignore[attr-defined]
from scapy.layers.l2 import ARP
from scapy.utils import RawPcapNgReader, RawPcapNgWriter, wrpcap

from passnat.config import parse_config
from passnat.io.replay import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    ReplayError,
    ipv4_of,
    replay,
)

CONFIG = """\
interface lan0 add 192.168.0.1/24
interface lan1 add 203.0.113.1/24
nat napt add private 192.168.0.0-192.168.0.255 interface lan1
nat timeout protocol udp 30
"""

T0 = 1_700_000_000.0


def write_capture(path: Path, packets: list[tuple[str, int, bytes, float, int | None]]) -> None:
    """(interface, linktype, data, time, direction) -> pcapng with one IDB per interface."""
    w = RawPcapNgWriter(str(path))
    w.linktype = packets[0][1]
    w.write_header(None)
    for iface, linktype, data, ts, direction in packets:
        w._write_packet(data, linktype=linktype, sec=ts, ifname=iface.encode(), direction=direction)
    w.close()


def ether(pkt: bytes) -> bytes:
    return raw(Ether(src="02:00:00:00:00:0b", dst="02:00:00:00:00:01") / IP(pkt))


OUT = raw(IP(src="192.168.0.11", dst="203.0.113.10") / UDP(sport=5000, dport=7000) / b"ping")
REPLY = raw(IP(src="203.0.113.10", dst="203.0.113.1") / UDP(sport=7000, dport=5000) / b"pong")


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    path = tmp_path / "in.pcapng"
    write_capture(path, [
        ("lan0", LINKTYPE_ETHERNET, ether(OUT), T0, None),
        ("lan1", LINKTYPE_RAW, REPLY, T0 + 1, None),
        ("lan1", LINKTYPE_RAW, REPLY, T0 + 2, 2),  # outbound direction: skipped
        ("eth9", LINKTYPE_RAW, REPLY, T0 + 3, None),  # not a configuration interface
        ("lan0", LINKTYPE_ETHERNET, raw(Ether() / ARP()), T0 + 4, None),  # not IPv4
        ("lan1", LINKTYPE_RAW, REPLY, T0 + 100, None),  # after the 30 s UDP timer: unsolicited
    ])
    return path


def test_replay_translates_and_keeps_time(tmp_path: Path, capture: Path) -> None:
    out = tmp_path / "out.pcapng"
    res = replay(parse_config(CONFIG, "t.conf"), str(capture), str(out))
    assert res.read == 6
    assert res.fed == {"lan0": 1, "lan1": 2}
    assert res.skipped == {"outbound direction": 1, "interface eth9 not in the configuration": 1, "not IPv4": 1}
    assert res.written == {"lan1": 1, "lan0": 1}
    assert res.drops["no_session"] == 1  # the late reply: the session expired on the capture's clock
    packets = list(RawPcapNgReader(str(out)))
    assert [(m.ifname, m.linktype, m.direction) for _, m in packets] == [
        (b"lan1", LINKTYPE_RAW, 2), (b"lan0", LINKTYPE_RAW, 2)]
    first, second = IP(packets[0][0]), IP(packets[1][0])
    assert (first.src, first[UDP].sport, first.ttl) == ("203.0.113.1", 5000, 63)
    assert (second.dst, second[UDP].dport) == ("192.168.0.11", 5000)
    times = [((m.tshigh << 32) | m.tslow) / m.tsresol for _, m in packets]
    assert times == pytest.approx([T0, T0 + 1])


def test_output_opens_in_tshark(tmp_path: Path, capture: Path) -> None:
    tshark = shutil.which("tshark")
    assert tshark is not None, "tshark is required (scripts/install-deps.sh installs it)"
    out = tmp_path / "out.pcapng"
    replay(parse_config(CONFIG, "t.conf"), str(capture), str(out))
    res = subprocess.run([tshark, "-r", str(out), "-T", "fields", "-e", "frame.interface_name", "-e", "ip.src",
                          "-e", "ip.dst", "-e", "udp.dstport"], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["lan1\t203.0.113.1\t203.0.113.10\t7000",
                                       "lan0\t203.0.113.10\t192.168.0.11\t5000"]
    ifaces = subprocess.run([tshark, "-r", str(out), "-q", "-z", "io,phs"], capture_output=True, text=True,
                            check=False)
    assert ifaces.returncode == 0


def test_cli_replay_and_refusals(tmp_path: Path, capture: Path) -> None:
    conf = tmp_path / "r.conf"
    conf.write_text(CONFIG)
    out = tmp_path / "o.pcapng"
    res = subprocess.run([sys.executable, "-m", "passnat", "replay", "--config", str(conf), str(capture),
                          "-o", str(out)], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert "2 packet(s) written" in res.stdout
    classic = tmp_path / "classic.pcap"
    wrpcap(str(classic), [Ether() / IP(OUT)])
    with pytest.raises(ReplayError, match="classic pcap"):
        replay(parse_config(CONFIG, "t.conf"), str(classic), str(out))
    with pytest.raises(ReplayError, match="cannot read"):
        replay(parse_config(CONFIG, "t.conf"), str(tmp_path / "absent.pcapng"), str(out))
    bad = tmp_path / "bad.conf"
    bad.write_text("interface lan0 add 192.168.0.1/24\nnat napt add private bogus interface lan1\n")
    res = subprocess.run([sys.executable, "-m", "passnat", "replay", "--config", str(bad), str(capture),
                          "-o", str(out)], capture_output=True, text=True, check=False)
    assert res.returncode == 1
    assert f"{bad}:2:" in res.stderr


def test_ipv4_of_link_types() -> None:
    assert ipv4_of(LINKTYPE_ETHERNET, ether(OUT)) == OUT
    vlan = raw(Ether(dst="02:00:00:00:00:01", type=0x8100)) + b"\x00\x05\x08\x00" + OUT
    assert ipv4_of(LINKTYPE_ETHERNET, vlan) == OUT
    assert ipv4_of(113, b"\0" * 14 + b"\x08\x00" + OUT) == OUT
    assert ipv4_of(276, b"\x08\x00" + b"\0" * 18 + OUT) == OUT
    assert ipv4_of(LINKTYPE_RAW, b"\x60" + OUT[1:]) is None  # IPv6 version nibble
    assert ipv4_of(LINKTYPE_ETHERNET, b"short") is None
    assert ipv4_of(147, OUT) is None
