"""AF_PACKET sockets on one Linux interface: a TPACKET_V3 receive ring and a send socket.

Receive: one ``SOCK_RAW`` socket bound to the interface with a TPACKET_V3 ring
mapped into the process (blocks of frames handed over by the kernel; no system
call per packet, measured fastest for Python in reference/perf-anchors.md).
A classic BPF filter in the kernel keeps only IPv4 and ARP frames addressed to
this host (``PACKET_HOST``, broadcast, multicast); ``PACKET_IGNORE_OUTGOING``
keeps the router's own transmissions (and the kernel's) out of the ring.
``PACKET_VNET_HDR`` makes the kernel put a ``virtio_net_hdr`` in front of each
frame: it tells the segment size of super-frames from peers with TSO/GSO.
When the ring is full the kernel drops the frame and counts it
(``PACKET_STATISTICS``, read with ``ring_stats``): excess is dropped there,
before any Python work is spent on it.

Send: a second ``SOCK_RAW`` socket bound to the interface with protocol 0 (it
receives nothing), non-blocking, one ``send()`` per frame (on veth a TX ring
gained little: the kernel's per-frame transmit work dominates; see
docs/daemon.md).  It also has ``PACKET_VNET_HDR``: every frame sent starts with
a ``virtio_net_hdr`` (offload.VNET_NONE, or a checksum request).  On an
interface without a queueing discipline (``noqueue``: veth and other virtual
links) it also sets ``PACKET_QDISC_BYPASS``, which skips the (empty) qdisc
layer: measured 15-20 % more 64-byte packets per second on veth.  Interfaces
with a qdisc keep it (tc shaping, queueing when the NIC is busy).

Invariants: a block is returned to the kernel (status ``TP_STATUS_KERNEL``)
only after every frame in it was copied out; ring geometry is fixed at open.
"""
from __future__ import annotations

import ctypes
import fcntl
import mmap
import socket
import struct
from dataclasses import dataclass

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_VNET_HDR = 15
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
TPACKET_V3 = 2
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_CSUMNOTREADY = 1 << 3

SIOCGIFFLAGS = 0x8913
SIOCGIFMTU = 0x8921
SIOCGIFHWADDR = 0x8927
IFF_UP = 0x1
ARPHRD_ETHER = 1

#: tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1:
#: block_status (8), num_pkts (12), offset_to_first_pkt (16)
BLOCK_HDR = struct.Struct("=III")
BLOCK_STATUS_OFF = 8
#: tpacket3_hdr: next_offset, (sec, nsec), snaplen, len, status, mac, net
FRAME_HDR = struct.Struct("=I8xIIIHH")
_U32 = struct.Struct("=I")


@dataclass(frozen=True, slots=True)
class RingGeometry:
    block_size: int = 1 << 18  # 256 KiB: holds a 64 KiB super-frame and ~150 full frames
    block_nr: int = 32  # 8 MiB per interface
    frame_size: int = 2048  # only for the kernel's frame count in V3
    retire_ms: int = 1  # a partly filled block is handed over after this long

    @property
    def frame_nr(self) -> int:
        return self.block_size * self.block_nr // self.frame_size


@dataclass(frozen=True, slots=True)
class LinkInfo:
    name: str
    index: int
    mac: bytes
    mtu: int
    up: bool
    hwtype: int


def _ifreq(name: str) -> bytes:
    return struct.pack("16s16x", name.encode())


def link_info(name: str) -> LinkInfo:
    """Index, MAC, MTU and state of interface ``name`` (OSError if it does not exist)."""
    index = socket.if_nametoindex(name)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        hw = fcntl.ioctl(s, SIOCGIFHWADDR, _ifreq(name))
        mtu = struct.unpack_from("=i", fcntl.ioctl(s, SIOCGIFMTU, _ifreq(name)), 16)[0]
        flags = struct.unpack_from("=H", fcntl.ioctl(s, SIOCGIFFLAGS, _ifreq(name)), 16)[0]
    hwtype = struct.unpack_from("=H", hw, 16)[0]
    return LinkInfo(name, index, bytes(hw[18:24]), mtu, bool(flags & IFF_UP), hwtype)


def link_qdisc(name: str) -> str | None:
    """The kind of the interface's root queueing discipline (``noqueue``, ``fq_codel``, ...)."""
    from pyroute2 import IPRoute  # type: ignore[import-untyped]

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            return None
        kind: str | None = ipr.get_links(idx[0])[0].get_attr("IFLA_QDISC")
        return kind


def _bpf_ipv4_arp_to_host() -> bytes:
    """sock_fprog for: pkttype in {host, broadcast, multicast} and ethertype IPv4 or ARP."""
    ld_w_abs, ld_h_abs, jeq, ret = 0x20, 0x28, 0x15, 0x06
    skf_ad_pkttype = -0x1000 + 4
    prog = [
        (ld_w_abs, 0, 0, skf_ad_pkttype & 0xFFFFFFFF),  # A = pkttype
        (jeq, 4, 0, 3),  # PACKET_OTHERHOST -> drop
        (jeq, 3, 0, 4),  # PACKET_OUTGOING -> drop
        (ld_h_abs, 0, 0, 12),  # A = ethertype
        (jeq, 2, 0, 0x0800),  # IPv4 -> accept
        (jeq, 1, 0, 0x0806),  # ARP -> accept
        (ret, 0, 0, 0),  # drop
        (ret, 0, 0, 0x40000),  # accept (up to 256 KiB)
    ]
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


class RxRing:
    """A TPACKET_V3 receive ring on one interface.  ``mm`` and the block offsets are
    public so the daemon's loop can read frames without a call per packet."""

    def __init__(self, ifname: str, geometry: RingGeometry = RingGeometry()):
        self.geometry = geometry
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self._setup(ifname, geometry)
        except BaseException:
            self.sock.close()
            raise
        self.block = 0  # next block to look at
        self.block_size = geometry.block_size
        self.block_nr = geometry.block_nr
        self.total_packets = 0
        self.total_drops = 0
        self.total_freezes = 0

    def _setup(self, ifname: str, g: RingGeometry) -> None:
        s = self.sock
        code = _bpf_ipv4_arp_to_host()
        buf = ctypes.create_string_buffer(code)
        fprog = struct.pack("HL", len(code) // 8, ctypes.addressof(buf))
        s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        req = struct.pack("=7I", g.block_size, g.block_nr, g.frame_size, g.frame_nr, g.retire_ms, 0, 0)
        s.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self.mm = mmap.mmap(s.fileno(), g.block_size * g.block_nr, mmap.MAP_SHARED,
                            mmap.PROT_READ | mmap.PROT_WRITE)
        # bind last: frames start to arrive only once the filter and ring are in place
        s.bind((ifname, ETH_P_ALL))

    def fileno(self) -> int:
        return self.sock.fileno()

    def ring_stats(self) -> tuple[int, int, int]:
        """(packets, drops, freezes) since open; the kernel resets its counters on read."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        packets, drops, freezes = struct.unpack("=III", raw)
        self.total_packets += packets
        self.total_drops += drops
        self.total_freezes += freezes
        return self.total_packets, self.total_drops, self.total_freezes

    def close(self) -> None:
        try:
            self.mm.close()
        except (AttributeError, BufferError):
            pass
        self.sock.close()


class TxSocket:
    """Non-blocking send socket on one interface (receives nothing: protocol 0); every
    frame starts with a 10-byte ``virtio_net_hdr``."""

    def __init__(self, ifname: str, sndbuf: int = 4 << 20, *, qdisc_bypass: bool = False):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            self.sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            if qdisc_bypass:
                self.sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            self.sock.bind((ifname, 0))
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise
        self.send = self.sock.send

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


__all__ = [
    "BLOCK_HDR",
    "BLOCK_STATUS_OFF",
    "FRAME_HDR",
    "TP_STATUS_CSUMNOTREADY",
    "TP_STATUS_KERNEL",
    "TP_STATUS_USER",
    "LinkInfo",
    "RingGeometry",
    "RxRing",
    "TxSocket",
    "link_info",
]
