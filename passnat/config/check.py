"""``passnat check``: parse a configuration file and report, without starting anything.

Warnings (unless ``quiet``) and errors go to stderr, one per line in the
``file:line:column: severity: message`` form; a one-line summary goes to
stdout.  Exit status: 0 no errors, 1 errors, 2 the file cannot be read.
"""
from __future__ import annotations

import sys
from typing import TextIO

from passnat.config.errors import ConfigError, ConfigProblem
from passnat.config.model import Config
from passnat.config.parser import parse


def check_file(path: str, quiet: bool = False) -> int:
    """Check the configuration at ``path``; return the exit status."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        print(f"passnat: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        config = parse(_decode(path, data), path)
    except ConfigError as exc:
        _report(exc.warnings if not quiet else [], exc.errors, sys.stderr)
        print(f"{path}: {_count(len(exc.errors), 'error')}, {_count(len(exc.warnings), 'warning')}")
        return 1
    if not quiet:
        for warning in config.warnings:
            print(warning, file=sys.stderr)
    print(f"{path}: OK: {_summary(config)}, {_count(len(config.warnings), 'warning')}")
    return 0


def _decode(path: str, data: bytes) -> str:
    """UTF-8 text; an undecodable byte is an error at its line and column."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        problem = ConfigProblem(path, line, column, f"invalid UTF-8 byte 0x{data[exc.start]:02x}")
        raise ConfigError([problem]) from None


def _report(warnings: list[ConfigProblem], errors: list[ConfigProblem], out: TextIO) -> None:
    for problem in sorted([*warnings, *errors], key=lambda p: (p.line, p.column)):
        print(problem, file=out)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _summary(config: Config) -> str:
    nat = config.nat
    rules = len(nat.napt_private) + len(nat.napt_global) + len(nat.snapt) + len(nat.static) + len(nat.dynamic)
    return ", ".join((
        _count(len(config.interfaces), "interface"),
        _count(len(config.routes), "route"),
        _count(rules, "NAT rule"),
        _count(len(config.filters), "filter"),
    ))
