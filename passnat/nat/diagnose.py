"""``passnat doctor`` (B3): why a VPN through this router fails, from what the router saw.

The seed article's troubleshooting section, automated.  ``diagnose(router,
now)`` reads the counters, the live sessions and a short memory of VPN events
(``VpnEvents``: VPN sessions that expired idle, and unsolicited VPN packets
that arrived afterwards) and returns ``Finding`` records, each naming what was
seen, why it breaks a VPN and the configuration line or client setting that
fixes it.  A pure function of the router's state: no I/O.
"""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from passnat.config.model import EspMode
from passnat.packet.ipv4 import ntoa, proto_name

if TYPE_CHECKING:
    from passnat.nat.router import Router
    from passnat.nat.session import Session

#: ports whose UDP sessions are VPN control or NAT-T traffic
VPN_UDP_PORTS = frozenset((500, 4500, 1701))


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    severity: str  # "error" (a VPN cannot work), "warning" (it breaks sometimes), "info"
    title: str
    detail: str
    fix: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VpnEvents:
    """A bounded memory of what a VPN diagnosis needs beyond counters."""

    expired: deque[tuple[float, int, int, int, int, float]] = field(default_factory=lambda: deque(maxlen=256))
    unsolicited: deque[tuple[float, int, int, int]] = field(default_factory=lambda: deque(maxlen=256))

    def session_expired(self, s: Session, now: float) -> None:
        """Remember a VPN session (ESP, GRE, AH, IKE/NAT-T UDP) that timed out idle."""
        if s.proto in (50, 51, 47) or (s.proto == 17 and VPN_UDP_PORTS & {s.in_port, s.rem_port}):
            self.expired.append((now, s.proto, s.in_addr, s.rem_addr, s.rem_port, s.timeout))

    def unsolicited_packet(self, proto: int, remote: int, port: int, now: float) -> None:
        if proto in (50, 51, 47) or (proto == 17 and port in VPN_UDP_PORTS):
            self.unsolicited.append((now, proto, remote, port))


def _timeout_line(proto: int) -> str:
    return {50: "nat timeout protocol esp <seconds>", 47: "nat timeout protocol gre <seconds>"}.get(
        proto, "nat timeout protocol udp <seconds>")


def diagnose(router: Router, now: float) -> list[Finding]:
    c = router.counters()
    found: list[Finding] = []
    esp_mode = router.config.nat.esp_mode

    ah = c.get("ah_translated", 0) + c.get("ah_no_session", 0)
    if ah:
        found.append(Finding(
            "ah", "error", "IPsec AH cannot pass NAT",
            f"{ah} AH packet(s) seen. AH's integrity check covers the IP addresses, which NAT rewrites, "
            "so the peer rejects every translated packet.",
            "Configure the VPN to use ESP (with NAT-T, UDP 4500) instead of AH, or give the host a "
            "global address with `nat static add <private> <global>` and no AH in the path."))

    groups: dict[tuple[str, int], list[Session]] = {}
    for s in router.table.all():
        if s.proto == 50:
            groups.setdefault((s.nat_if, s.rem_addr), []).append(s)
    for (nat_if, remote), members in sorted(groups.items()):
        hosts = sorted({m.in_addr for m in members})
        if len(hosts) < 2:
            continue
        names = ", ".join(ntoa(h) for h in hosts)
        if esp_mode is EspMode.FIRST_COME:
            found.append(Finding(
                "esp-first-come", "error", f"{len(hosts)} inside hosts send ESP to {ntoa(remote)}",
                f"Hosts {names} talk ESP to {ntoa(remote)} on {nat_if}. In first-come mode (SEIL's) every "
                f"inbound ESP packet from it goes to {ntoa(members[0].in_addr)}: the others get no replies "
                "(先着一名問題).",
                "Use `nat option esp-passthrough spi` (passnat's default) so inbound SPIs are paired per "
                "host, or make the clients use NAT-T (UDP 4500)."))
        else:
            found.append(Finding(
                "esp-shared", "info", f"{len(hosts)} inside hosts keep ESP tunnels to {ntoa(remote)}",
                f"Hosts {names}: SPI mode pairs each inbound SPI with its host "
                "(`passnat show status nat` lists the pairs).",
                "Nothing to do; if a tunnel stalls right after it starts, see esp-ambiguous below."))
    ambiguous = c.get("esp_ambiguous_spi", 0)
    if ambiguous:
        found.append(Finding(
            "esp-ambiguous", "warning", "inbound ESP that no single inside host could be bound to",
            f"{ambiguous} inbound ESP packet(s) carried a new SPI while more than one inside host could "
            "own it (two hosts starting tunnels to the same server at the same moment, or a server "
            "sending first on a new SA); they were dropped rather than sent to a possibly wrong host.",
            "Usually harmless (the tunnel settles within the pairing window). If it persists, let the "
            "hosts use NAT-T (UDP 4500), or raise `nat option esp-pairing-window <ms>`."))

    for _, proto, host, remote, port, timeout in _expired_then_unsolicited(router, now):
        what = proto_name(proto) if proto != 17 else f"udp/{port}"
        found.append(Finding(
            "vpn-session-expired", "error", f"an idle VPN's NAT session expired ({what} with {ntoa(remote)})",
            f"The {what} session of {ntoa(host)} with {ntoa(remote)} timed out after {timeout:.0f} s idle, "
            f"and {ntoa(remote)} sent {what} again afterwards: those packets had no session and were dropped.",
            f"Raise the timer (`{_timeout_line(proto)}` or `nat timeout <seconds>`), or enable keepalives "
            "(IKE DPD / NAT-T keepalive, PPTP echo) on the client at a shorter interval."))

    unsolicited = {50: c.get("esp_unsolicited", 0), 47: c.get("gre_unsolicited", 0) + c.get("gre_no_call", 0)}
    for proto, n in unsolicited.items():
        if n:
            name = proto_name(proto).upper()
            found.append(Finding(
                f"{proto_name(proto)}-unsolicited", "warning", f"inbound {name} with no session",
                f"{n} inbound {name} packet(s) arrived for no inside host (no session, no SNAPT rule).",
                f"For a VPN server inside, publish it: `nat snapt add protocol {proto_name(proto)} forward "
                "<inside-ip>`" + (" (PPTP: `nat snapt add protocol tcp listen 1723 forward <ip> 1723` "
                                  "carries GRE too)" if proto == 47 else "") +
                ". For a client, its session expired or it never sent first (see vpn-session-expired)."))

    ooo = c.get("fragment_out_of_order", 0)
    if ooo:
        found.append(Finding(
            "fragments-out-of-order", "error", "fragments arrived out of order and were dropped",
            f"{ooo} fragment(s) came before their first fragment while fragment-requeueing is off; the "
            "datagrams (often large IKE messages with certificates) were lost.",
            "`option ip fragment-requeueing on` (passnat's default)."))
    if c.get("fragment_hold_full", 0) or c.get("fragment_hold_expired", 0):
        found.append(Finding(
            "fragments-held-lost", "warning", "held fragments were dropped",
            f"{c.get('fragment_hold_full', 0)} dropped because the requeueing queue was full, "
            f"{c.get('fragment_hold_expired', 0)} because their first fragment never came.",
            "Raise `option ip fragment-requeueing-limit` / `-timeout` if this is legitimate traffic."))

    df = c.get("fragmentation_needed", 0)
    if df:
        found.append(Finding(
            "df-too-big", "warning", "DF packets larger than the egress MTU",
            f"{df} packet(s) with DF set were larger than the egress MTU; the router dropped them and sent "
            "ICMP fragmentation-needed to the sender. A VPN that ignores it (or whose path drops ICMP) stalls "
            "on large packets.",
            "Clamp TCP MSS on the WAN (`interface <wan> tcp-mss auto`), lower the VPN client's MTU, or "
            "lower the WAN MTU so the router fragments (`interface <wan> mtu <n>`, costs throughput)."))

    full = c.get("nat_session_full", 0) + c.get("nat_session_limit_per_ip", 0) + \
        c.get("nat_session_limit_per_private_ip", 0)
    if full:
        found.append(Finding(
            "session-full", "error", "nat session is full",
            f"{full} new session(s) refused by the session limits; a VPN starting then fails.",
            "Raise `nat session maximum <n>` or the restricted-per-ip limits, or find the host opening "
            "so many sessions."))
    if c.get("pptp_malformed", 0):
        found.append(Finding(
            "pptp-malformed", "warning", "malformed PPTP control traffic",
            f"{c['pptp_malformed']} time(s) a control stream on TCP 1723 could not be parsed; its Call IDs "
            "are no longer translated.", "Check the PPTP client/server (this is not PPTP on port 1723?)."))
    return found


def _expired_then_unsolicited(router: Router, now: float) -> list[tuple[float, int, int, int, int, float]]:
    ev = router.vpn_events
    hits = []
    seen: set[tuple[int, int, int]] = set()
    for t_exp, proto, host, remote, port, timeout in ev.expired:
        key = (proto, host, remote)
        if key in seen:
            continue
        for t_in, p2, r2, _ in ev.unsolicited:
            if p2 == proto and r2 == remote and t_in >= t_exp:
                hits.append((t_exp, proto, host, remote, port, timeout))
                seen.add(key)
                break
    return hits
