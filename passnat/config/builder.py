"""The mutable state of a parse: handlers add to it, ``build()`` freezes it into a ``Config``.

Every method that adds an entry first checks it against what earlier lines
added (duplicate filter names, overlapping port forwards, an address on two
interfaces, ...) and raises ``Problem`` *before* changing anything, so a
rejected line leaves no trace and the parse can go on to report the errors
of later lines.

Invariants:
  * ``filters`` is kept in evaluation order: ``top``/``bottom``/``above``/
    ``below`` are applied when the line is read, as SEIL applies them when
    the command is entered.
  * An interface whose every setting is the default (e.g. only
    ``interface lan2 mtu system-default``) is left out of the ``Config``:
    it could not be rendered, and it means the same as no line at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from passnat.config.errors import ConfigProblem, Problem
from passnat.config.lexer import Token
from passnat.config.model import (
    Config,
    DynamicNat,
    FilterAction,
    FilterRule,
    HaSync,
    InterfaceConfig,
    IpOptions,
    NaptGlobal,
    NaptPrivate,
    NatConfig,
    Route,
    SnaptKind,
    SnaptRule,
    StaticNat,
    TcpMss,
)
from passnat.config.values import host_bits_note


@dataclass(slots=True)
class InterfaceDraft:
    """An interface while its lines are read (``interface <if> ...``)."""

    name: str
    addresses: list[IPv4Interface] = field(default_factory=list)
    mtu: int | None = None
    tcp_mss: TcpMss = field(default_factory=TcpMss)
    description: str | None = None

    def freeze(self) -> InterfaceConfig:
        return InterfaceConfig(self.name, tuple(self.addresses), self.mtu, self.tcp_mss, self.description)


@dataclass(frozen=True, slots=True)
class Position:
    """Where ``filter add`` puts its rule: ``top``, ``bottom``, ``above <name>``, ``below <name>``."""

    where: str = "bottom"
    anchor: str | None = None


def _ports_overlap(a: SnaptRule, b: SnaptRule) -> bool:
    assert a.listen is not None and b.listen is not None
    return bool(set(a.protocols()) & set(b.protocols())) and a.listen.first <= b.listen.last and b.listen.first <= a.listen.last


def _snapt_conflict(a: SnaptRule, b: SnaptRule) -> bool:
    """Would two enabled port forwards on one interface claim the same packets?"""
    if a.kind is not b.kind or a.interface != b.interface:
        return False
    if a.kind is SnaptKind.PORTS:
        return _ports_overlap(a, b)
    return a.protocol == b.protocol  # PROTOCOL: same number; DEFAULT: None == None


class ConfigBuilder:
    def __init__(self, filename: str):
        self.filename = filename
        self.line = 0  # the line being handled (set by the parser)
        self.warnings: list[ConfigProblem] = []
        self.hostname: str | None = None
        self.interfaces: dict[str, InterfaceDraft] = {}
        self.routes: list[Route] = []
        self.nat = NatConfig()
        self.filters: list[FilterRule] = []
        self.filter_default = FilterAction.PASS
        self.options = IpOptions()
        self.ha = HaSync()
        self.ha_lines: dict[str, int] = {}  # ha sync parameter -> line that gave it
        self.ha_first: tuple[int, int] | None = None  # (line, column) of the first ``ha`` line
        self._address_lines: dict[IPv4Address, tuple[str, int]] = {}
        self._route_lines: dict[tuple[IPv4Network, int], int] = {}
        self._nat_lines: dict[object, int] = {}
        self._snapt_lines: list[tuple[SnaptRule, int]] = []
        self._reflect_lines: list[tuple[str, int, int]] = []  # (interface, line, column)
        self._filter_lines: dict[str, int] = {}
        self._skipped_filter_lines: dict[str, int] = {}

    # ------------------------------------------------------------ reporting

    def warn(self, column: int, message: str) -> None:
        self.warnings.append(ConfigProblem(self.filename, self.line, column, message, "warning"))

    def skip_line(self, column: int, command: str) -> None:
        """Warn that ``command`` (a real SEIL command) is skipped."""
        self.warn(column, f"{command} is not supported by passnat; line skipped")

    def note_host_bits(self, token: Token) -> None:
        """Warn when ``token`` is a prefix with host bits set (read as its network)."""
        note = host_bits_note(token.text)
        if note is not None:
            self.warn(token.column, note)

    def ignore(self, column: int, what: str) -> None:
        """Warn that part of a line (a real SEIL parameter) has no effect in passnat."""
        self.warn(column, f"{what} is not supported by passnat; ignored")

    # ----------------------------------------------------------- interfaces

    def interface(self, name: str) -> InterfaceDraft:
        return self.interfaces.setdefault(name, InterfaceDraft(name))

    def add_address(self, name: str, address: IPv4Interface, column: int, *, replace_primary: bool) -> None:
        """``interface <if> add`` appends; ``interface <if> address`` replaces the primary."""
        draft = self.interfaces.get(name)
        replaced = draft.addresses[0] if draft and draft.addresses and replace_primary else None
        owner = self._address_lines.get(address.ip)
        if owner is not None and not (replaced is not None and replaced.ip == address.ip):
            where, line = owner
            raise Problem(column, f"address {address.ip} is already configured on {where} (line {line})")
        draft = self.interface(name)
        if replaced is not None:
            del self._address_lines[replaced.ip]
            draft.addresses[0] = address
        else:
            draft.addresses.append(address)
        self._address_lines[address.ip] = (name, self.line)

    # --------------------------------------------------------------- routes

    def add_route(self, route: Route, column: int) -> None:
        key = (route.destination, route.distance)
        if key in self._route_lines:
            raise Problem(column, f"a route to {route.destination} with distance {route.distance} "
                          f"is already configured (line {self._route_lines[key]})")
        self._route_lines[key] = self.line
        self.routes.append(route)

    # ------------------------------------------------------------------ NAT

    def _claim(self, key: object, column: int, what: str) -> None:
        if key in self._nat_lines:
            raise Problem(column, f"{what} (line {self._nat_lines[key]})")
        self._nat_lines[key] = self.line

    def add_napt_private(self, rule: NaptPrivate) -> None:
        self.nat = replace(self.nat, napt_private=(*self.nat.napt_private, rule))

    def add_napt_global(self, rule: NaptGlobal, column: int) -> None:
        self._claim(("napt-global", rule.interface), column,
                    f"interface {rule.interface} already has a NAPT global address")
        self.nat = replace(self.nat, napt_global=(*self.nat.napt_global, rule))

    def add_snapt(self, rule: SnaptRule, column: int) -> None:
        if rule.enabled:
            for other, line in self._snapt_lines:
                if _snapt_conflict(rule, other):
                    raise Problem(column, f"this port forward overlaps the one on line {line} "
                                  f"(same interface {rule.interface})")
            self._snapt_lines.append((rule, self.line))
        self.nat = replace(self.nat, snapt=(*self.nat.snapt, rule))

    def add_static(self, rule: StaticNat, column: int) -> None:
        private_key = ("static-private", rule.interface, rule.private)
        global_key = ("static-global", rule.interface, rule.global_)
        if private_key in self._nat_lines:
            raise Problem(column, f"{rule.private} already has a static NAT mapping on "
                          f"{rule.interface} (line {self._nat_lines[private_key]})")
        self._claim(global_key, column, f"{rule.global_} is already a static NAT global address on {rule.interface}")
        self._nat_lines[private_key] = self.line
        self.nat = replace(self.nat, static=(*self.nat.static, rule))

    def add_reflect(self, interface: str, column: int) -> None:
        self._claim(("reflect", interface), column, f"nat reflect is already on for {interface}")
        self._reflect_lines.append((interface, self.line, column))
        self.nat = replace(self.nat, reflect=(*self.nat.reflect, interface))

    def add_dynamic(self, rule: DynamicNat) -> None:
        self.nat = replace(self.nat, dynamic=(*self.nat.dynamic, rule))

    # --------------------------------------------------------------- filter

    def add_filter(self, rule: FilterRule, position: Position, name_column: int, anchor_column: int) -> None:
        if rule.name in self._filter_lines:
            raise Problem(name_column, f'a filter named "{rule.name}" already exists (line {self._filter_lines[rule.name]})')
        index = self._filter_index(position, anchor_column)
        self._filter_lines[rule.name] = self.line
        self.filters.insert(index, rule)

    def skip_filter(self, name: str) -> None:
        """Remember a filter whose line was skipped, for a clear error if a later rule is placed by it."""
        self._skipped_filter_lines[name] = self.line

    def _filter_index(self, position: Position, anchor_column: int) -> int:
        if position.where == "top":
            return 0
        if position.where == "bottom":
            return len(self.filters)
        names = [f.name for f in self.filters]
        if position.anchor in self._skipped_filter_lines and position.anchor not in names:
            line = self._skipped_filter_lines[position.anchor]
            raise Problem(anchor_column, f'filter "{position.anchor}" was skipped (line {line}); '
                          f"cannot place a rule {position.where} it")
        if position.anchor not in names:
            raise Problem(anchor_column, f'no filter named "{position.anchor}" is configured before this line')
        index = names.index(position.anchor)
        return index if position.where == "above" else index + 1

    # ---------------------------------------------------------------- build

    def finish(self) -> list[ConfigProblem]:
        """Problems only the whole file shows (after the last line)."""
        problems = []
        if self.ha_first is not None:
            line, column = self.ha_first
            missing = [f"ha sync {k}" for k in ("peer", "key") if getattr(self.ha, k) is None]
            if missing:
                problems.append(ConfigProblem(self.filename, line, column,
                                              f"session synchronisation needs {' and '.join(missing)}"))
            elif self.ha.local is not None and self.ha.local == self.ha.peer:
                problems.append(ConfigProblem(self.filename, self.ha_lines["local"], column,
                                              "ha sync local and ha sync peer are the same address"))
        return problems

    def build(self) -> Config:
        interfaces = tuple(d.freeze() for d in self.interfaces.values())
        nat_ifs = self.nat.nat_interfaces()
        for name, line, column in self._reflect_lines:
            if name in nat_ifs:
                self.warnings.append(ConfigProblem(
                    self.filename, line, column, f"{name} is a NAT interface: packets arriving on it are "
                    "translated inbound, never reflected (name the inside interface)", "warning"))
        return Config(
            hostname=self.hostname,
            interfaces=tuple(i for i in interfaces if i != InterfaceConfig(i.name)),
            routes=tuple(self.routes),
            nat=self.nat,
            filters=tuple(self.filters),
            options=self.options,
            filter_default=self.filter_default,
            ha=self.ha,
            warnings=tuple(str(w) for w in self.warnings),
        )
