"""The command tree: how a tokenized line finds its handler, and how handlers read arguments.

A ``Command`` is a path of words (``"nat snapt add"``) with either a handler
or nothing (a real SEIL command passnat skips with a warning).  Path words
in angle brackets are placeholders: ``<if>`` matches an interface name passnat
runs on, ``<seil-if>`` one of the SEIL interface families it does not have.
``CommandTree`` stores the paths in a trie; a line goes to the deepest node
on its path that has a command (so ``nat timeout`` handles ``nat timeout 900``
while ``nat timeout protocol`` handles its own lines).

Handlers read their arguments through ``Args``, which raises ``Problem``
(column + message) for anything unexpected; nothing else in the parser
formats an error position.  ``read_params`` reads SEIL's keyword arguments
in any order, as the IIJ converter's ``read_params`` does.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from passnat.config.errors import Problem
from passnat.config.lexer import Line, Token
from passnat.config.values import INTERFACE, ValueType, is_skipped_interface

if TYPE_CHECKING:
    from passnat.config.builder import ConfigBuilder

T = TypeVar("T")


def quote_token(token: Token) -> str:
    return f'"{token.text}"'


class Args:
    """A cursor over the tokens of a line after the command path."""

    def __init__(self, line: Line, start: int, bound: Mapping[str, Token]):
        self.line = line
        self._pos = start
        #: tokens matched by placeholders of the path, e.g. ``bound["if"]``
        self.bound = dict(bound)

    def peek(self) -> Token | None:
        tokens = self.line.tokens
        return tokens[self._pos] if self._pos < len(tokens) else None

    def at_end(self) -> bool:
        return self.peek() is None

    def next(self, expected: str) -> Token:
        token = self.peek()
        if token is None:
            raise Problem(self.line.end_column, f"expected {expected}, got end of line")
        self._pos += 1
        return token

    def take(self, value_type: ValueType[T]) -> T:
        """Read one token and convert it; on failure point at that token."""
        return convert(self.next(value_type.expected), value_type)

    def end(self) -> None:
        token = self.peek()
        if token is not None:
            raise Problem(token.column, f"expected end of line, got {quote_token(token)}")


def convert(token: Token, value_type: ValueType[T]) -> T:
    try:
        return value_type.convert(token.text)
    except ValueError as exc:
        hint = f" ({exc})" if str(exc) else ""
        raise Problem(token.column, f"expected {value_type.expected}, got {quote_token(token)}{hint}") from None


# ----------------------------------------------------------- keyword params


class Reader(Protocol):
    def __call__(self, args: Args, keyword: Token) -> object: ...


@dataclass(frozen=True, slots=True)
class Param:
    """A keyword argument: ``slot`` names the value; several keywords may share one."""

    slot: str
    read: Reader


@dataclass(frozen=True, slots=True)
class Given(Generic[T]):
    """A keyword argument as read: its value, its keyword token and its first value token."""

    value: T
    keyword: Token
    argument: Token | None = None  # None for a bare keyword

    @property
    def column(self) -> int:
        """Where to point at the value (the keyword for a bare keyword)."""
        return (self.argument or self.keyword).column


def value_param(slot: str, value_type: ValueType[T]) -> Param:
    """``<keyword> <value>``."""
    return Param(slot, lambda args, keyword: args.take(value_type))


def flag_param(slot: str, value: object) -> Param:
    """A bare keyword (``enable``, ``top``) that sets ``slot`` to ``value``."""
    return Param(slot, lambda args, keyword: value)


def _checked(given: Given[object], kind: type[T]) -> T:
    if not isinstance(given.value, kind):
        raise TypeError(f"{given.keyword.text}: {given.value!r} is not a {kind.__name__}")
    return given.value


def param(params: Mapping[str, Given[object]], slot: str, kind: type[T], default: T) -> T:
    """The value read for ``slot`` (checked to be a ``kind``), or ``default``."""
    given = params.get(slot)
    return default if given is None else _checked(given, kind)


def optional_param(params: Mapping[str, Given[object]], slot: str, kind: type[T]) -> T | None:
    """The value read for ``slot`` (a ``kind`` or None), or None when not given."""
    given = params.get(slot)
    return None if given is None or given.value is None else _checked(given, kind)


def read_params(args: Args, table: Mapping[str, Param]) -> dict[str, Given[object]]:
    """Read ``keyword value`` pairs in any order until the end of the line.

    A slot given twice (``enable ... disable``) is an error naming both places.
    """
    given: dict[str, Given[object]] = {}
    expected = (f"one of: {', '.join(table)}" if len(table) > 1 else next(iter(table))) + " or end of line"
    while not args.at_end():
        keyword = args.next(expected)
        param = table.get(keyword.text)
        if param is None:
            raise Problem(keyword.column, f"expected {expected}, got {quote_token(keyword)}")
        earlier = given.get(param.slot)
        if earlier is not None:
            raise Problem(
                keyword.column,
                f"{quote_token(keyword)} repeats {quote_token(earlier.keyword)} "
                f"given at column {earlier.keyword.column}",
            )
        argument = args.peek()
        value = param.read(args, keyword)
        given[param.slot] = Given(value, keyword, argument if args.peek() is not argument else None)
    return given


# -------------------------------------------------------------- the tree

Handler = Callable[["ConfigBuilder", Args], None]


@dataclass(frozen=True, slots=True)
class Command:
    """A command path and its handler; ``handler`` None means "skip with a warning".

    A handler's docstring is its SEIL syntax.
    """

    path: str
    handler: Handler | None = None


def skip(path: str) -> Command:
    """A real SEIL command passnat does not implement."""
    return Command(path)


def _is_interface(text: str) -> bool:
    try:
        INTERFACE.convert(text)
    except ValueError:
        return False
    return True


#: placeholder word -> (predicate, phrase for "expected ...")
_PLACEHOLDERS: dict[str, tuple[Callable[[str], bool], str]] = {
    "<if>": (_is_interface, INTERFACE.expected),
    "<seil-if>": (is_skipped_interface, "a SEIL interface name"),
}


@dataclass(slots=True)
class _Node:
    words: dict[str, _Node] = field(default_factory=dict)
    placeholders: dict[str, _Node] = field(default_factory=dict)
    command: Command | None = None

    def child(self, token: Token) -> tuple[_Node, str | None] | None:
        node = self.words.get(token.text)
        if node is not None:
            return node, None
        for word, child in self.placeholders.items():
            if _PLACEHOLDERS[word][0](token.text):
                return child, word[1:-1]
        return None

    def implemented(self) -> bool:
        """Does any command at or below this node have a handler?"""
        if self.command is not None and self.command.handler is not None:
            return True
        return any(n.implemented() for n in (*self.words.values(), *self.placeholders.values()))

    def expected(self) -> str:
        words = sorted(w for w, n in self.words.items() if n.implemented())
        words += [_PLACEHOLDERS[p][1] for p, n in self.placeholders.items() if n.implemented()]
        if len(words) == 1:
            return words[0]
        return "one of: " + ", ".join(words)


@dataclass(frozen=True, slots=True)
class Match:
    """The command a line resolved to."""

    command: Command
    args: Args
    #: the tokens of the matched path (for "... is not supported" warnings)
    path_tokens: tuple[Token, ...]


class CommandTree:
    def __init__(self, commands: tuple[Command, ...]):
        self._root: _Node = _Node()
        for command in commands:
            self._insert(command)

    def _insert(self, command: Command) -> None:
        node = self._root
        for word in command.path.split():
            table = node.placeholders if word in _PLACEHOLDERS else node.words
            node = table.setdefault(word, _Node())
        if node.command is not None:
            raise ValueError(f"command {command.path!r} registered twice")
        node.command = command

    def lookup(self, line: Line) -> Match:
        """Resolve ``line`` to the deepest command on its path; raise ``Problem``."""
        node = self._root
        best: tuple[Command, int] | None = None
        bound: dict[str, Token] = {}
        tokens = line.tokens
        depth = 0
        while depth < len(tokens):
            step = node.child(tokens[depth])
            if step is None:
                break
            node, name = step
            if name is not None:
                bound[name] = tokens[depth]
            depth += 1
            if node.command is not None:
                best = (node.command, depth)
        if best is None:
            raise self._no_command(line, node, depth)
        command, used = best
        return Match(command, Args(line, used, bound), tokens[:used])

    @staticmethod
    def _no_command(line: Line, node: _Node, depth: int) -> Problem:
        if depth == len(line.tokens):
            return Problem(line.end_column, f"expected {node.expected()}, got end of line")
        token = line.tokens[depth]
        hint = ""
        if depth == 0:
            hint = " (unknown command)"
        elif token.text.endswith("*"):
            hint = " (interface wildcards are not supported by passnat)"
        return Problem(token.column, f"expected {node.expected()}, got {quote_token(token)}{hint}")
