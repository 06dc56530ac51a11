"""SEIL-style configuration: lexer, parser, model and canonical rendering."""
from passnat.config.errors import ConfigError, ConfigProblem
from passnat.config.model import Config

__all__ = ["Config", "ConfigError", "ConfigProblem", "parse_config", "parse_config_file", "render"]


def parse_config(text: str, filename: str = "<config>") -> Config:
    from passnat.config.parser import parse

    return parse(text, filename)


def parse_config_file(path: str) -> Config:
    with open(path, encoding="utf-8") as f:
        return parse_config(f.read(), filename=path)


def render(config: Config) -> str:
    from passnat.config.render import render as _render

    return _render(config)
