"""The SEIL line tokenizer: tokens, columns, quoting, comments."""
from __future__ import annotations

import pytest

from passnat.config.errors import Problem
from passnat.config.lexer import Token, split_lines, tokenize


def texts(line: str) -> list[str]:
    return [token.text for token in tokenize(line)]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("nat timeout 900", ["nat", "timeout", "900"]),
        ("  nat\ttimeout   900  ", ["nat", "timeout", "900"]),
        ('hostname ""', ["hostname", ""]),
        ('interface lan1 description "IIJmio Hikari"', ["interface", "lan1", "description", "IIJmio Hikari"]),
        (r'label "a \"quoted\" word"', ["label", 'a "quoted" word']),
        (r'label "back\\slash"', ["label", "back\\slash"]),
        (r'label "other \n escape"', ["label", r"other \n escape"]),
        ('label "日本語 ラベル"', ["label", "日本語 ラベル"]),
        ("filter add a direction in/out", ["filter", "add", "a", "direction", "in/out"]),
        ("", []),
        ("   ", []),
        ("# a comment line", []),
        ("   # indented comment", []),
        ("interface lan1 mtu 1454   # trailing comment", ["interface", "lan1", "mtu", "1454"]),
        ('label "# not a comment"', ["label", "# not a comment"]),
        ("src a#b", ["src", "a#b"]),
    ],
)
def test_tokens(line: str, expected: list[str]) -> None:
    assert texts(line) == expected


def test_columns_are_one_based_and_point_at_the_opening_quote() -> None:
    tokens = tokenize('  hostname "gw 1" x')
    assert tokens == (
        Token("hostname", 3, 8),
        Token("gw 1", 12, 6, quoted=True),
        Token("x", 19, 1),
    )
    assert tokens[1].end_column == 18


@pytest.mark.parametrize(
    ("line", "column", "message"),
    [
        ('hostname "gw1', 10, 'unterminated quoted string (missing closing ")'),
        (r'hostname "gw1\"', 10, 'unterminated quoted string (missing closing ")'),
        ('hostname "gw"1', 14, "expected a blank after the closing quote"),
        ('hostname gw"1"', 12, 'unexpected " inside a word; quote the whole token'),
        ("hostname gw\x07", 12, "unexpected control character U+0007"),
    ],
)
def test_errors(line: str, column: int, message: str) -> None:
    with pytest.raises(Problem) as info:
        tokenize(line)
    assert (info.value.column, info.value.message) == (column, message)


def test_split_lines_numbers_lines_and_drops_crlf() -> None:
    assert split_lines("a\r\nb\n\nc") == [(1, "a"), (2, "b"), (3, ""), (4, "c")]
    assert split_lines("a\n") == [(1, "a")]
    assert split_lines("") == []
