"""Shared helpers for the configuration tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from passnat.config.errors import ConfigError
from passnat.config.model import Config
from passnat.config.parser import parse

DATA = Path(__file__).parent / "data"


def errors_of(text: str, filename: str = "t.conf") -> list[str]:
    """The errors parsing ``text`` gives, as ``file:line:col: error: message`` strings."""
    with pytest.raises(ConfigError) as info:
        parse(text, filename)
    return [str(problem) for problem in info.value.errors]


def parse_one(line: str) -> Config:
    return parse(line + "\n", "t.conf")
