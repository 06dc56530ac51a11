"""``ha sync ...`` (passnat extension): session synchronisation between two passnat routers.

    ha sync peer <IPv4address>          the other router's address on the sync link (required)
    ha sync key <string>                the shared secret, 16-256 characters (required)
    ha sync local <IPv4address>         this router's address on the sync link (listen / connect from)
    ha sync interface <linux-name>      the Linux interface of the sync link (not one passnat forwards on)
    ha sync port <1-65535>              TCP port (default 7822)

SEIL's own ``vrrp`` lines stay skipped: the election is keepalived's (docs/ha.md).
Each parameter is given once; a configuration with any ``ha sync`` line needs
``peer`` and ``key`` (checked after the last line, pointing at the first ``ha`` line).
"""
from __future__ import annotations

import re
from dataclasses import replace

from passnat.config.builder import ConfigBuilder
from passnat.config.errors import Problem
from passnat.config.syntax import Args, Command
from passnat.config.values import HOST, STRING, ValueType, integer

KEY_MIN, KEY_MAX = 16, 256
_LINUX_IF = re.compile(r"[A-Za-z0-9_.:@+-]{1,15}")


def _linux_interface(text: str) -> str:
    if not _LINUX_IF.fullmatch(text) or text in (".", ".."):
        raise ValueError("at most 15 letters, digits or _.:@+-")
    return text


LINUX_INTERFACE = ValueType("a Linux interface name (e.g. eth2)", _linux_interface)
PORT = integer(1, 65535, "a TCP port")


def _key(text: str) -> str:
    if not KEY_MIN <= len(text) <= KEY_MAX:
        raise ValueError(f"{len(text)} characters; the shared key needs {KEY_MIN}-{KEY_MAX}")
    return text


KEY = ValueType("a shared key of 16-256 characters", _key)


def _set(b: ConfigBuilder, args: Args, field: str, value: object) -> None:
    args.end()
    keyword = args.line.tokens[2]
    earlier = b.ha_lines.get(field)
    if earlier is not None:
        raise Problem(keyword.column, f"ha sync {field} is already given (line {earlier})")
    b.ha_lines[field] = b.line
    if b.ha_first is None:
        b.ha_first = (b.line, args.line.tokens[0].column)
    b.ha = replace(b.ha, **{field: value})  # type: ignore[arg-type]


def peer(b: ConfigBuilder, args: Args) -> None:
    """ha sync peer <IPv4address>   (passnat extension)"""
    _set(b, args, "peer", args.take(HOST))


def local(b: ConfigBuilder, args: Args) -> None:
    """ha sync local <IPv4address>   (passnat extension)"""
    _set(b, args, "local", args.take(HOST))


def interface(b: ConfigBuilder, args: Args) -> None:
    """ha sync interface <linux-interface>   (passnat extension)"""
    _set(b, args, "interface", args.take(LINUX_INTERFACE))


def key(b: ConfigBuilder, args: Args) -> None:
    """ha sync key <string>   (passnat extension; 16-256 characters)"""
    token = args.peek()
    value = args.take(STRING)
    if token is not None:
        try:
            _key(value)
        except ValueError as e:
            raise Problem(token.column, f"expected {KEY.expected}, got {len(value)} character(s)") from e
    _set(b, args, "key", value)


def port(b: ConfigBuilder, args: Args) -> None:
    """ha sync port <1-65535>   (passnat extension; default 7822)"""
    _set(b, args, "port", args.take(PORT))


COMMANDS = (
    Command("ha sync peer", peer),
    Command("ha sync local", local),
    Command("ha sync interface", interface),
    Command("ha sync key", key),
    Command("ha sync port", port),
)
