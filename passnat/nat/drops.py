"""Every reason the router drops a packet: one enum that doubles as the counter names.

Like VPP's ``foreach_nat_in2out_ed_error``: a dropped packet is always counted
under exactly one of these, and ``Router.counters()`` reports them by
``reason.value``.  The text in ``EXPLAIN`` is what an operator reads in
``passnat show counters`` and ``passnat doctor``.
"""
from __future__ import annotations

from enum import Enum


class Drop(Enum):
    # malformed input
    TRUNCATED = "truncated"
    NOT_IPV4 = "not_ipv4"
    BAD_HEADER = "bad_ip_header"
    BAD_CHECKSUM = "bad_ip_checksum"
    BAD_L4 = "bad_l4_header"
    BAD_OPTIONS = "bad_ip_options"
    SOURCE_ROUTE = "ip_source_route"
    TCP_INVALID_FLAGS = "tcp_invalid_flags"
    UNKNOWN_INTERFACE = "unknown_interface"
    # forwarding
    TTL_EXCEEDED = "ttl_exceeded"
    NO_ROUTE = "no_route"
    DISCARD_ROUTE = "discard_route"
    MARTIAN = "martian_source"
    SPOOFED = "spoofed_source"
    INBOUND_UNTRANSLATED = "inbound_untranslated"
    LOCAL_UNSUPPORTED = "local_unsupported"
    FRAG_NEEDED = "fragmentation_needed"
    # NAT
    NO_SESSION = "no_session"
    SESSION_FULL = "nat_session_full"
    SESSION_LIMIT_IP = "nat_session_limit_per_ip"
    SESSION_LIMIT_PRIVATE_IP = "nat_session_limit_per_private_ip"
    NO_PORT = "nat_no_free_port"
    DYNAMIC_POOL_EMPTY = "nat_dynamic_pool_exhausted"
    ICMP_ERROR_NO_SESSION = "icmp_error_no_session"
    ICMP_ERROR_BAD = "icmp_error_malformed"
    ICMP_UNSUPPORTED = "icmp_unsupported_type"
    TCP_NO_SESSION = "tcp_not_syn_no_session"
    # VPN passthrough
    ESP_UNSOLICITED = "esp_unsolicited"
    ESP_AMBIGUOUS = "esp_ambiguous_spi"
    ESP_HELD_OVERFLOW = "esp_hold_overflow"
    ESP_HELD_EXPIRED = "esp_hold_expired"
    AH_NO_SESSION = "ah_no_session"
    GRE_NO_CALL = "gre_no_call"
    GRE_UNSOLICITED = "gre_unsolicited"
    PPTP_MALFORMED = "pptp_malformed"
    PPTP_OUT_OF_ORDER = "pptp_out_of_order_segment"
    PPTP_NO_CALL_ID = "pptp_no_free_call_id"
    OTHER_NO_SESSION = "other_proto_no_session"
    # fragments
    FRAG_OUT_OF_ORDER = "fragment_out_of_order"
    FRAG_HOLD_FULL = "fragment_hold_full"
    FRAG_HOLD_EXPIRED = "fragment_hold_expired"
    FRAG_NO_SESSION = "fragment_no_session"
    FRAG_OVERLAP = "fragment_overlap"
    # filter
    FILTER_BLOCK = "filter_block"


EXPLAIN: dict[Drop, str] = {
    Drop.TRUNCATED: "packet shorter than its headers",
    Drop.NOT_IPV4: "not an IPv4 packet",
    Drop.BAD_HEADER: "malformed IPv4 header (IHL or total length)",
    Drop.BAD_CHECKSUM: "IPv4 header checksum wrong",
    Drop.BAD_L4: "malformed TCP/UDP/ICMP header",
    Drop.BAD_OPTIONS: "malformed IPv4 options (an option length that does not fit the header)",
    Drop.SOURCE_ROUTE: "IPv4 loose or strict source route option (LSRR/SSRR, RFC 7126)",
    Drop.TCP_INVALID_FLAGS: "TCP flag combination no stack sends (SYN+FIN, SYN+RST, no flags, FIN/PSH/URG without ACK, ...)",
    Drop.UNKNOWN_INTERFACE: "packet on an interface the configuration does not name",
    Drop.TTL_EXCEEDED: "TTL expired in transit (ICMP time exceeded sent)",
    Drop.NO_ROUTE: "no route to the destination (ICMP unreachable sent)",
    Drop.DISCARD_ROUTE: "destination matched a discard route",
    Drop.MARTIAN: "source address not allowed (own address, broadcast, 0.0.0.0 or loopback)",
    Drop.SPOOFED: "source address fails the reverse-path check (option ip unicast-rpf): spoofed or misrouted",
    Drop.INBOUND_UNTRANSLATED: "from a NAT interface to an inside address without NAT state, SNAPT, static/dynamic "
                               "NAT or a filter pass rule (nat option inbound-routing)",
    Drop.LOCAL_UNSUPPORTED: "addressed to the router for a service it does not offer",
    Drop.FRAG_NEEDED: "larger than the egress MTU with DF set (ICMP fragmentation needed sent)",
    Drop.NO_SESSION: "inbound packet matches no NAT session (unsolicited)",
    Drop.SESSION_FULL: "nat session is full: the session table reached its maximum",
    Drop.SESSION_LIMIT_IP: "nat session restricted-per-ip limit reached",
    Drop.SESSION_LIMIT_PRIVATE_IP: "nat session restricted-per-private-ip limit reached",
    Drop.NO_PORT: "no free NAPT port/id left on the global address",
    Drop.DYNAMIC_POOL_EMPTY: "nat dynamic: no free global address in the pool",
    Drop.ICMP_ERROR_NO_SESSION: "ICMP error quoting a packet of no known session",
    Drop.ICMP_ERROR_BAD: "ICMP error with a malformed quoted packet or checksum",
    Drop.ICMP_UNSUPPORTED: "ICMP type that is neither a query nor an error",
    Drop.TCP_NO_SESSION: "TCP segment without SYN for no known session",
    Drop.ESP_UNSOLICITED: "inbound ESP from a server no inside host talks to",
    Drop.ESP_AMBIGUOUS: "inbound ESP with an SPI that could belong to more than one inside host",
    Drop.ESP_HELD_OVERFLOW: "ESP packet held for SPI pairing, but the hold queue was full",
    Drop.ESP_HELD_EXPIRED: "ESP packet held for SPI pairing expired before it could be paired",
    Drop.AH_NO_SESSION: "inbound AH with no session (AH cannot survive NAT anyway)",
    Drop.GRE_NO_CALL: "inbound enhanced GRE with a Call ID of no known PPTP call",
    Drop.GRE_UNSOLICITED: "inbound GRE from a peer no inside host talks to",
    Drop.PPTP_MALFORMED: "malformed PPTP control message",
    Drop.PPTP_OUT_OF_ORDER: "PPTP control segment out of order (sender will retransmit)",
    Drop.PPTP_NO_CALL_ID: "no free PPTP Call ID towards that server",
    Drop.OTHER_NO_SESSION: "inbound packet of another IP protocol with no session",
    Drop.FRAG_OUT_OF_ORDER: "non-first fragment before its first fragment (fragment-requeueing off)",
    Drop.FRAG_HOLD_FULL: "fragment requeueing queue full",
    Drop.FRAG_HOLD_EXPIRED: "held fragment expired: its first fragment never came",
    Drop.FRAG_NO_SESSION: "fragment of a datagram whose first fragment was dropped",
    Drop.FRAG_OVERLAP: "fragment overlapping another fragment of the same datagram (RFC 1858)",
    Drop.FILTER_BLOCK: "blocked by a filter rule",
}
