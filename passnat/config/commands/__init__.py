"""The command table: every SEIL command passnat reads, one module per feature.

Each module lists its ``Command``s in a ``COMMANDS`` tuple; a handler's
docstring is the SEIL syntax it implements (as IIJ's seil2recipe converter
keeps the syntax line on each rule).  Commands without a handler are real
SEIL commands that passnat skips with a warning.  ``ALL_COMMANDS`` is the
explicit union the parser builds its tree from.
"""
from passnat.config.commands import filter as filter_commands
from passnat.config.commands import ha, interface, nat, option, route, skipped, system
from passnat.config.syntax import Command

ALL_COMMANDS: tuple[Command, ...] = (
    *system.COMMANDS,
    *interface.COMMANDS,
    *route.COMMANDS,
    *nat.COMMANDS,
    *filter_commands.COMMANDS,
    *option.COMMANDS,
    *ha.COMMANDS,
    *skipped.COMMANDS,
)

__all__ = ["ALL_COMMANDS"]
