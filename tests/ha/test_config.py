"""``ha sync`` configuration lines (docs/config.md section 8)."""
from __future__ import annotations

from ipaddress import IPv4Address

import pytest

import passnat
from passnat.config.model import HaSync

BASE = "interface lan0 add 192.168.0.1/24\ninterface lan1 add 203.0.113.1/24\n"
HA = ('ha sync peer 10.255.0.2\nha sync local 10.255.0.1\nha sync interface eth3\n'
      'ha sync key "a shared key of some length"\nha sync port 7900\n')


def test_lines_parse_render_and_read_back() -> None:
    c = passnat.parse_config(BASE + HA)
    assert c.ha == HaSync(peer=IPv4Address("10.255.0.2"), local=IPv4Address("10.255.0.1"), interface="eth3",
                          key="a shared key of some length", port=7900)
    assert c.ha.enabled
    assert passnat.parse_config(passnat.render(c)) == c
    hidden = passnat.render(c, secrets=False)
    assert 'ha sync key "(hidden)"' in hidden and "some length" not in hidden
    assert not passnat.parse_config(BASE).ha.enabled
    assert "ha sync" not in passnat.render(passnat.parse_config(BASE))


@pytest.mark.parametrize(("text", "message"), [
    ("ha sync peer 10.0.0.2\n", "3:1: error: session synchronisation needs ha sync key"),
    ('ha sync key "0123456789abcdef"\n', "3:1: error: session synchronisation needs ha sync peer"),
    ("ha sync key short\n", "3:13: error: expected a shared key of 16-256 characters, got 5 character(s)"),
    ("ha sync port 0\n", '3:14: error: expected a TCP port 1-65535, got "0"'),
    ("ha sync peer 10.0.0.2\nha sync peer 10.0.0.3\n", "4:9: error: ha sync peer is already given (line 3)"),
    ("ha sync interface eth0/1\n", '3:19: error: expected a Linux interface name (e.g. eth2), got "eth0/1"'),
    ('ha sync peer 10.0.0.2\nha sync local 10.0.0.2\nha sync key "0123456789abcdef"\n',
     "4:1: error: ha sync local and ha sync peer are the same address"),
    ("ha sync peer 127.0.0.1\n", '3:14: error: expected an IPv4 host address, got "127.0.0.1"'),
])
def test_errors_name_line_and_column(text: str, message: str) -> None:
    with pytest.raises(passnat.ConfigError) as e:
        passnat.parse_config(BASE + text, "r.conf")
    assert any(str(p).startswith("r.conf:" + message) for p in e.value.errors), [str(p) for p in e.value.errors]
