"""Drop reasons of the daemon's link layer, with the text ``passnat show counters`` prints.

The engine counts its own drops (``passnat.nat.drops``); these are the frames
the daemon drops before or after the engine: ARP failures, frames it cannot
read whole, super-frames it cannot segment, frames the kernel refused to send,
and the frames the kernel dropped at a full receive ring (overload).
Every name here is a counter that ``show counters`` lists, zero or not.
"""
from __future__ import annotations

from enum import Enum


class LinkDrop(Enum):
    RING_FULL = "rx_ring_full"
    SHED = "rx_shed"
    RX_TRUNCATED = "rx_truncated"
    SUPERFRAME = "rx_superframe"
    RX_MALFORMED = "rx_malformed"
    VLAN_TAGGED = "vlan_tagged"
    ARP_UNRESOLVED = "arp_unresolved"
    ARP_QUEUE_FULL = "arp_queue_full"
    ARP_BAD_NEXT_HOP = "arp_bad_next_hop"
    TX_ERROR = "tx_error"
    INTERNAL_ERROR = "internal_error"


EXPLAIN: dict[LinkDrop, str] = {
    LinkDrop.RING_FULL: "dropped by the kernel: the receive ring was full (offered more than passnat "
                        "forwards; PACKET_STATISTICS)",
    LinkDrop.SHED: "dropped before the kernel's receive work by passnat's load-shedding XDP program: passnat "
                   "was overloaded and its receive ring kept filling (a fraction of the IPv4 frames; "
                   "--no-shed turns it off)",
    LinkDrop.RX_TRUNCATED: "frame larger than a receive ring slot that could not be read whole from the "
                           "socket queue (the kernel had no room for its copy)",
    LinkDrop.SUPERFRAME: "super-frame from a peer with TSO/GSO of a kind passnat cannot segment "
                         "(switch TSO/GSO off on the peer: `ethtool -K <peer> tso off gso off`)",
    LinkDrop.RX_MALFORMED: "frame with a partial checksum or a segmentation request and malformed headers",
    LinkDrop.VLAN_TAGGED: "802.1Q/802.1ad-tagged frame: passnat routes untagged frames only (no VLAN "
                          "interfaces), so a frame of another VLAN on the same port never reaches the NAT",
    LinkDrop.ARP_UNRESOLVED: "next hop did not answer ARP (ICMP host unreachable sent to the sender)",
    LinkDrop.ARP_QUEUE_FULL: "packet waiting for an ARP reply dropped: the wait queue was full",
    LinkDrop.ARP_BAD_NEXT_HOP: "engine named a next hop that is not an IPv4 address",
    LinkDrop.TX_ERROR: "the kernel refused to send the frame (link down, send buffer full, too big); "
                       "tx_error_<errno> counts them by reason",
    LinkDrop.INTERNAL_ERROR: "a packet made passnat raise an exception (logged with a traceback)",
}

#: event counters of the link layer (not drops), with their meaning
EVENTS: dict[str, str] = {
    "rx_checksum_partial": "packets with a partial checksum (peer checksum offload): finished by the kernel "
                           "on send (or by passnat when the packet might be fragmented)",
    "rx_fast_path": "packets of established TCP/UDP flows forwarded by the compiled receive loop "
                    "(passnat/_speedups.c; 0 when it is not built or PASSNAT_PURE is set)",
    "ring_resync": "times the receive ring was found out of step with passnat's position and resumed "
                   "at the oldest waiting frame (should stay 0)",
    "rx_copy_orphan": "frames on the socket queue that no ring slot announced, read and dropped "
                      "(should stay 0)",
    "rx_superframes_segmented": "super-frames from a peer with TSO/GSO cut into wire-sized packets",
    "rx_segments_made": "packets made by segmenting super-frames",
    "arp_requests_sent": "ARP requests sent (resolution and re-confirmation)",
    "arp_replies_sent": "ARP replies sent for the router's addresses",
    "arp_resolution_failed": "next hops that did not answer ARP",
    "arp_conflict": "ARP packets from another host claiming one of the router's addresses",
    "arp_ignored": "ARP packets ignored (multicast/broadcast or own sender address)",
    "icmp_host_unreachable_sent": "ICMP host unreachable sent for packets whose next hop did not answer ARP",
    "gratuitous_arp_sent": "gratuitous ARP announcements sent (start, reload)",
}
