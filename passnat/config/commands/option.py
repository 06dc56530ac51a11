"""``option ip ...``: the reverse-path check (R28), fragment requeueing (R22) and its passnat limits;
``reject`` (R27).

passnat's default is ``unicast-rpf strict`` (BCP 38 / RFC 3704): a packet whose
source address does not route back out of the interface it came in on is
dropped; SEIL's default is ``none``.

passnat's default is ``fragment-requeueing on`` where SEIL's is off: RFC 4787
REQ-14 requires a NAT to handle fragments that arrive out of order.  The
spelling ``fragment-reqeueueing`` (a typo in IIJ's own blog post, the seed
article) is accepted with a warning.  Other ``option ip`` and ``option ipv6``
settings are skipped.
"""
from __future__ import annotations

from dataclasses import replace

from passnat.config.builder import ConfigBuilder
from passnat.config.model import RejectMode, UnicastRpf
from passnat.config.syntax import Args, Command, skip
from passnat.config.values import ON_OFF, enum_choice, integer, or_default

REQUEUEING_LIMIT = or_default(integer(1, 65535, "a fragment count"), 256)
REQUEUEING_TIMEOUT = or_default(integer(1, 60, "seconds"), 5)
_TYPO = "fragment-reqeueueing"
UNICAST_RPF = or_default(enum_choice(UnicastRpf), UnicastRpf.STRICT)


def unicast_rpf(b: ConfigBuilder, args: Args) -> None:
    """option ip unicast-rpf { strict | loose | none | system-default }   (passnat default: strict; SEIL: none)"""
    mode = args.take(UNICAST_RPF)
    args.end()
    b.options = replace(b.options, unicast_rpf=mode)


def fragment_requeueing(b: ConfigBuilder, args: Args) -> None:
    """option ip fragment-requeueing { on | off }   (passnat default: on; SEIL: off)"""
    enabled = args.take(ON_OFF)
    args.end()
    b.options = replace(b.options, fragment_requeueing=enabled)


def fragment_requeueing_typo(b: ConfigBuilder, args: Args) -> None:
    """option ip fragment-reqeueueing { on | off }   (the seed article's misspelling)"""
    fragment_requeueing(b, args)
    keyword = args.line.tokens[2]
    b.warn(keyword.column, f"{_TYPO} is a misspelling of fragment-requeueing; read as fragment-requeueing")


def fragment_requeueing_limit(b: ConfigBuilder, args: Args) -> None:
    """option ip fragment-requeueing-limit { <count> | system-default }   (passnat extension; default 256)"""
    limit = args.take(REQUEUEING_LIMIT)
    args.end()
    b.options = replace(b.options, fragment_requeueing_limit=limit)


def fragment_requeueing_timeout(b: ConfigBuilder, args: Args) -> None:
    """option ip fragment-requeueing-timeout { <seconds> | system-default }   (passnat extension; default 5)"""
    seconds = args.take(REQUEUEING_TIMEOUT)
    args.end()
    b.options = replace(b.options, fragment_requeueing_timeout=float(seconds))


REJECT_MODE = or_default(enum_choice(RejectMode), RejectMode.LAN)


def reject(b: ConfigBuilder, args: Args) -> None:
    """option ip reject { lan | all | off | system-default }   (passnat extension; default lan)

    Packets for a service the router does not offer get a TCP RST or an ICMP
    port/protocol unreachable (rate limited): lan from interfaces that are
    not NAT interfaces, all from every interface, off never (silent drop).
    """
    mode = args.take(REJECT_MODE)
    args.end()
    b.options = replace(b.options, reject=mode)


COMMANDS = (
    Command("option ip reject", reject),
    Command("option ip unicast-rpf", unicast_rpf),
    Command("option ip fragment-requeueing", fragment_requeueing),
    Command(f"option ip {_TYPO}", fragment_requeueing_typo),
    Command("option ip fragment-requeueing-limit", fragment_requeueing_limit),
    Command("option ip fragment-requeueing-timeout", fragment_requeueing_timeout),
    *(
        skip(f"option ip {word}")
        for word in (
            "accept-redirect",
            "broadcast-icmp",
            "directed-broadcast",
            "mask-reply",
            "monitor-linkstate",
            "multipath-selection",
            "recursive-lookup",
            "redirects",
            "update-connected-route",
        )
    ),
    skip("option ipv6"),
    skip("option statistics"),
)
