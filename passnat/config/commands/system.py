"""``hostname``."""
from __future__ import annotations

from passnat.config.builder import ConfigBuilder
from passnat.config.syntax import Args, Command
from passnat.config.values import STRING


def hostname(b: ConfigBuilder, args: Args) -> None:
    """hostname <hostname>"""
    b.hostname = args.take(STRING)
    args.end()


COMMANDS = (Command("hostname", hostname),)
