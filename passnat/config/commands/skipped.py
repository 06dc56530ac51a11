"""Real SEIL top-level commands for features passnat does not have.

A ``show config`` of a real SEIL holds many of these (the factory default
has dhcp, dns, snmp, sshd, ...); passnat skips each such line with a
warning naming it, so a real configuration loads.  The list is the
top-level rules of IIJ's seil2recipe converter plus the commands named in
SEIL's documentation.  Any other unknown command is an error.
"""
from __future__ import annotations

from passnat.config.syntax import skip

SKIPPED_COMMANDS = (
    "application-gateway",
    "arp",
    "authentication",
    "bridge",
    "cbq",
    "certificate",
    "dhcp",
    "dhcp6",
    "dialup-device",
    "dialup-network",
    "dns",
    "encrypted-password",
    "encrypted-password-long",
    "environment",
    "filter6",
    "floatlink",
    "httpd",
    "ike",
    "ipsec",
    "key",
    "l2tp",
    "macfilter",
    "monitor",
    "ntp",
    "ppp",
    "pppac",
    "proxyarp",
    "resolver",
    "route6",
    "rtadvd",
    "snmp",
    "ssh-config",
    "sshd",
    "sslvpn",
    "syslog",
    "telnetd",
    "timezone",
    "translator",
    "unicast-rpf",
    "vendor",
    "vrrp",
    "vrrp3",
    "wol-target",
)

COMMANDS = tuple(skip(word) for word in SKIPPED_COMMANDS)
