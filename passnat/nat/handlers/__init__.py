"""Protocol handlers (registered plug-ins; see ``base``)."""
from __future__ import annotations

from passnat.nat.handlers.base import Handler


def default_handlers() -> list[Handler]:
    """One instance of every built-in handler, for a new router."""
    from passnat.nat.handlers.esp import EspHandler
    from passnat.nat.handlers.icmp import IcmpHandler
    from passnat.nat.handlers.other import OtherHandler
    from passnat.nat.handlers.pptp import PptpGreHandler, PptpHandler
    from passnat.nat.handlers.tcpudp import TcpUdpHandler

    return [TcpUdpHandler(), PptpHandler(), IcmpHandler(), EspHandler(), OtherHandler(), PptpGreHandler()]
