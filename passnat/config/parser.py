"""Parse SEIL configuration text into a ``Config``.

Each line is tokenized, resolved through the command tree (the table of
handlers in ``passnat.config.commands``) and handed to its handler, which
adds to a ``ConfigBuilder``.  A malformed line is recorded and parsing goes
on, so that one run reports every error of a file; a real SEIL command
passnat does not implement is skipped with a warning.

Invariants:
  * ``parse`` either returns a ``Config`` (warnings in ``Config.warnings``)
    or raises ``ConfigError`` with every error and warning; it raises
    nothing else for any input text.
  * Each error names file, line and the column of the offending token, and
    says what was expected.
"""
from __future__ import annotations

from passnat.config.builder import ConfigBuilder
from passnat.config.commands import ALL_COMMANDS
from passnat.config.errors import ConfigError, ConfigProblem, Problem
from passnat.config.lexer import Line, make_line, split_lines, tokenize
from passnat.config.model import Config
from passnat.config.syntax import CommandTree

COMMAND_TREE = CommandTree(ALL_COMMANDS)


def parse(text: str, filename: str = "<config>") -> Config:
    """Parse ``text`` (the contents of ``filename``); raise ``ConfigError`` on any error."""
    builder = ConfigBuilder(filename)
    errors: list[ConfigProblem] = []
    for number, source in split_lines(text):
        builder.line = number
        try:
            tokens = tokenize(source)
            if tokens:
                _run(builder, make_line(number, tokens))
        except Problem as problem:
            errors.append(ConfigProblem(filename, number, problem.column, problem.message))
    errors.extend(builder.finish())
    if errors:
        raise ConfigError(errors, builder.warnings)
    return builder.build()


def _run(builder: ConfigBuilder, line: Line) -> None:
    match = COMMAND_TREE.lookup(line)
    if match.command.handler is None:
        command = " ".join(token.text for token in match.path_tokens)
        builder.skip_line(match.path_tokens[-1].column, command)
        return
    match.command.handler(builder, match.args)
