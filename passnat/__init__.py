"""passnat: a NAT/NAPT router in Python whose reason to exist is VPN passthrough.

The public API (the daemon, the pcap replay and the tests all use it)::

    config = passnat.parse_config(text)        # SEIL-style configuration
    router = passnat.Router(config)            # the sans-IO engine
    outputs = router.handle("lan0", packet, now)   # -> [Output(interface, next_hop, packet)]
    router.next_deadline(); router.on_timer(now)
    router.sessions(now); router.counters(); router.reconfigure(config)
"""
from passnat.config import ConfigError, ConfigProblem, parse_config, parse_config_file, render
from passnat.config.model import Config
from passnat.nat.actions import Output
from passnat.nat.drops import Drop
from passnat.nat.router import Router

__all__ = ["Config", "ConfigError", "ConfigProblem", "Drop", "Output", "Router", "parse_config",
           "parse_config_file", "render"]
__version__ = "0.1.0"
