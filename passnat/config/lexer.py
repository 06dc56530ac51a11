"""SEIL line tokenizer: one command per line, whitespace-separated tokens.

Rules (SEIL ``show config`` text, as IIJ's seil2recipe tokenizes it):
  * Tokens are separated by spaces or tabs.  A token is either bare (a run
    of non-blank characters without ``"``) or double-quoted; inside quotes
    ``\\"`` is a quote and ``\\\\`` a backslash, any other backslash is kept
    as is.  An unterminated quote is an error, and so is a quote glued to
    other characters (``abc"d"``, ``"a"b``).
  * A blank line, or a line whose first token starts with ``#``, is ignored.
    passnat also ends a line at a bare token starting with ``#`` (a trailing
    comment); SEIL never prints one, and never prints a bare token that
    starts with ``#``.
  * Control characters other than tab are errors.

Invariant: every token keeps the 1-based column of its first character
(the opening quote for a quoted token) so that errors point at it.
"""
from __future__ import annotations

from dataclasses import dataclass

from passnat.config.errors import Problem

_BLANKS = " \t"


@dataclass(frozen=True, slots=True)
class Token:
    text: str  # the value (quotes and escapes removed)
    column: int  # 1-based column of the first source character
    width: int  # number of source characters (with quotes and escapes)
    quoted: bool = False

    @property
    def end_column(self) -> int:
        """The column just past the token."""
        return self.column + self.width


@dataclass(frozen=True, slots=True)
class Line:
    number: int  # 1-based
    tokens: tuple[Token, ...]
    end_column: int  # where "end of line" errors point: just past the last token


def _check_controls(text: str) -> None:
    for index, char in enumerate(text):
        if char != "\t" and (ord(char) < 0x20 or ord(char) == 0x7F):
            raise Problem(index + 1, f"unexpected control character U+{ord(char):04X}")


def _quoted(text: str, start: int) -> tuple[str, int]:
    """Read a quoted token whose quote is at ``text[start]``; return (value, end index)."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == '"':
            return "".join(out), i + 1
        if char == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
            out.append(text[i + 1])
            i += 2
            continue
        out.append(char)
        i += 1
    raise Problem(start + 1, "unterminated quoted string (missing closing \")")


def _bare(text: str, start: int) -> int:
    """Return the end index of the bare token starting at ``text[start]``."""
    i = start
    while i < len(text) and text[i] not in _BLANKS:
        if text[i] == '"':
            raise Problem(i + 1, 'unexpected " inside a word; quote the whole token')
        i += 1
    return i


def tokenize(text: str) -> tuple[Token, ...]:
    """Split one line (without its newline) into tokens; raise ``Problem``."""
    _check_controls(text)
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        if text[i] in _BLANKS:
            i += 1
            continue
        if text[i] == "#":
            break
        if text[i] == '"':
            value, end = _quoted(text, i)
            if end < len(text) and text[end] not in _BLANKS:
                raise Problem(end + 1, "expected a blank after the closing quote")
            tokens.append(Token(value, i + 1, end - i, quoted=True))
        else:
            end = _bare(text, i)
            tokens.append(Token(text[i:end], i + 1, end - i))
        i = end
    return tuple(tokens)


def split_lines(text: str) -> list[tuple[int, str]]:
    """Number the lines of ``text`` (``\\n`` or ``\\r\\n`` endings)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [(number, line.removesuffix("\r")) for number, line in enumerate(lines, start=1)]


def make_line(number: int, tokens: tuple[Token, ...]) -> Line:
    end = tokens[-1].end_column if tokens else 1
    return Line(number, tokens, end)
