"""SEIL-style configuration: lexer, parser, model and canonical rendering."""
from passnat.config.errors import ConfigError, ConfigProblem
from passnat.config.model import Config
from passnat.config.parser import parse
from passnat.config.render import render  # the function (it shadows the submodule's name on purpose)

__all__ = ["Config", "ConfigError", "ConfigProblem", "parse_config", "parse_config_file", "render"]


def parse_config(text: str, filename: str = "<config>") -> Config:
    """Parse SEIL configuration text; raises ``ConfigError`` listing every error."""
    return parse(text, filename)


def parse_config_file(path: str) -> Config:
    with open(path, encoding="utf-8") as f:
        return parse_config(f.read(), filename=path)
