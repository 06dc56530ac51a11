"""Configuration problems: every error names file, line, column and what was expected.

``Problem`` is raised while one line is read (it knows only the column);
the parser turns it into a ``ConfigProblem`` with the file name and line.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    filename: str
    line: int  # 1-based
    column: int  # 1-based
    message: str
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        return f"{self.filename}:{self.line}:{self.column}: {self.severity}: {self.message}"


class ConfigError(Exception):
    """Raised by ``parse_config`` when any line is malformed; carries all problems at once."""

    def __init__(self, errors: list[ConfigProblem], warnings: list[ConfigProblem] | None = None):
        self.errors = list(errors)
        self.warnings = list(warnings or [])
        super().__init__("\n".join(str(e) for e in self.errors))


class Problem(Exception):
    """An error at one column of the line being parsed."""

    def __init__(self, column: int, message: str):
        super().__init__(message)
        self.column = column
        self.message = message
