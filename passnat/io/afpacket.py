"""AF_PACKET sockets on one Linux interface: a TPACKET_V2 receive ring and a send socket.

Receive: one ``SOCK_RAW`` socket bound to the interface with a TPACKET_V2 ring
mapped into the process: a ring of fixed-size frame slots, each with a status
word.  The kernel fills the slot at its head and hands it over at once
(``TP_STATUS_USER``, and a wake-up if the daemon sleeps in ``poll``); the daemon
reads slots in order from its own head and gives each back
(``TP_STATUS_KERNEL``).  No system call per packet, and no retire timer:
TPACKET_V3 hands frames over a block at a time, when the block is full or its
timer (at least 1 ms) fires, which added up to a millisecond per hop at light
load; with the per-frame walk done in C (``_speedups.ring_rx``) V2's per-slot
status costs nothing measurable.  A frame larger than a slot (a super-frame
from a peer with TSO/GSO) arrives truncated in its slot with
``TP_STATUS_COPY``, and whole on the socket's receive queue
(``PACKET_COPY_THRESH``): ``recv_copy`` reads it.

A classic BPF filter in the kernel keeps only IPv4, ARP and 802.1Q/802.1ad
(counted and dropped by the daemon) frames addressed to this host
(``PACKET_HOST``, broadcast, multicast); ``PACKET_IGNORE_OUTGOING`` keeps the
router's own transmissions (and the kernel's) out of the ring.
``PACKET_VNET_HDR`` makes the kernel put a ``virtio_net_hdr`` in front of each
frame: it tells the segment size of super-frames and where a partial checksum
starts.  When the ring is full the kernel drops the frame and counts it
(``PACKET_STATISTICS``, read with ``ring_stats``): excess is dropped there,
before any Python work is spent on it.

Send: a second ``SOCK_RAW`` socket bound to the interface with protocol 0 (it
receives nothing), non-blocking; the C loop sends batches with ``sendmmsg``,
Python one ``send()`` per frame.  It also has ``PACKET_VNET_HDR``: every frame
sent starts with a ``virtio_net_hdr`` (offload.VNET_NONE, or a checksum
request).  On an interface without a queueing discipline (``noqueue``: veth
and other virtual links) it also sets ``PACKET_QDISC_BYPASS``, which skips the
(empty) qdisc layer: measured 15-20 % more 64-byte packets per second on veth.
Interfaces with a qdisc keep it (tc shaping, queueing when the NIC is busy).

Invariants: a slot is given back to the kernel only after its frame was copied
out or sent; ring geometry is fixed at open; the reader's head only moves
forward over slots handed to it, except ``resync`` (docs/daemon.md).
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
PACKET_COPY_THRESH = 7
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_VNET_HDR = 15
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
TPACKET_V2 = 1
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_COPY = 1 << 1
TP_STATUS_CSUMNOTREADY = 1 << 3
TP_STATUS_VLAN_VALID = 1 << 4

SIOCGIFFLAGS = 0x8913
SIOCGIFMTU = 0x8921
SIOCGIFHWADDR = 0x8927
IFF_UP = 0x1
ARPHRD_ETHER = 1

#: tpacket2_hdr: status, len, snaplen, mac, net, sec, nsec, vlan_tci, vlan_tpid (32 bytes)
FRAME_HDR = struct.Struct("=IIIHHIIHH4x")
_U32 = struct.Struct("=I")
#: room in a slot before the Ethernet header: tpacket2_hdr + sockaddr_ll, aligned, + virtio_net_hdr
SLOT_HEADROOM = 128


@dataclass(frozen=True, slots=True)
class RingGeometry:
    frames: int = 4096  # slots in the receive ring (8 MiB of 2 KiB slots at MTU 1500)
    block_size: int = 1 << 16  # the kernel's allocation unit; a multiple of the slot size

    def frame_size(self, mtu: int) -> int:
        """The slot size for interface MTU ``mtu``: a power of two holding the headers, an
        802.1Q tag and a full frame (2048 up to MTU 1900)."""
        size = 2048
        while size < SLOT_HEADROOM + 18 + mtu:
            size *= 2
        return size


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
    """sock_fprog for: pkttype in {host, broadcast, multicast} and ethertype IPv4, ARP, or a
    VLAN tag (802.1Q, 802.1ad: the daemon counts and drops those)."""
    ld_w_abs, ld_h_abs, jeq, ret = 0x20, 0x28, 0x15, 0x06
    skf_ad_pkttype = -0x1000 + 4
    prog = [
        (ld_w_abs, 0, 0, skf_ad_pkttype & 0xFFFFFFFF),  # A = pkttype
        (jeq, 6, 0, 3),  # PACKET_OTHERHOST -> drop
        (jeq, 5, 0, 4),  # PACKET_OUTGOING -> drop
        (ld_h_abs, 0, 0, 12),  # A = ethertype
        (jeq, 4, 0, 0x0800),  # IPv4 -> accept
        (jeq, 3, 0, 0x0806),  # ARP -> accept
        (jeq, 2, 0, 0x8100),  # 802.1Q -> accept (counted, dropped)
        (jeq, 1, 0, 0x88A8),  # 802.1ad -> accept (counted, dropped)
        (ret, 0, 0, 0),  # drop
        (ret, 0, 0, 0x40000),  # accept (up to 256 KiB)
    ]
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


class RxRing:
    """A TPACKET_V2 receive ring on one interface.  ``mm``, ``frame_size``, ``frame_nr`` and
    ``head`` (the next slot to read) are public: the daemon's loop reads slots without a call
    per packet."""

    def __init__(self, ifname: str, geometry: RingGeometry = RingGeometry(), mtu: int = 1500):
        self.geometry = geometry
        self.frame_size = geometry.frame_size(mtu)
        block = max(geometry.block_size, self.frame_size)
        per_block = block // self.frame_size
        self.frame_nr = max(1, -(-geometry.frames // per_block)) * per_block
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self._setup(ifname, block)
        except BaseException:
            self.sock.close()
            raise
        self.head = 0  # next slot to look at
        self.total_packets = 0
        self.total_drops = 0
        self.total_freezes = 0

    def _setup(self, ifname: str, block: int) -> None:
        s = self.sock
        code = _bpf_ipv4_arp_to_host()
        buf = ctypes.create_string_buffer(code)
        fprog = struct.pack("HL", len(code) // 8, ctypes.addressof(buf))
        s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        s.setsockopt(SOL_PACKET, PACKET_COPY_THRESH, 1)  # oversized frames also go to the socket queue
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        size = self.frame_size * self.frame_nr
        req = struct.pack("=4I", block, size // block, self.frame_size, self.frame_nr)
        s.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        self.mm = mmap.mmap(s.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        # bind last: frames start to arrive only once the filter and ring are in place
        s.bind((ifname, ETH_P_ALL))

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_copy(self) -> bytes | None:
        """The whole frame (virtio_net_hdr first) of a slot marked TP_STATUS_COPY, from the
        socket's receive queue; None if it is not there (the kernel had no room for it)."""
        try:
            return self.sock.recv(1 << 17, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return None

    def ring_stats(self) -> tuple[int, int, int]:
        """(packets, drops, freezes) since open; the kernel resets its counters on read (a V2 ring
        never freezes: that count stays 0)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        packets, drops = struct.unpack("=II", raw)
        self.total_packets += packets
        self.total_drops += drops
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
    "FRAME_HDR",
    "TP_STATUS_COPY",
    "TP_STATUS_CSUMNOTREADY",
    "TP_STATUS_VLAN_VALID",
    "TP_STATUS_KERNEL",
    "TP_STATUS_USER",
    "LinkInfo",
    "RingGeometry",
    "RxRing",
    "TxSocket",
    "link_info",
]
