"""One clear line instead of a traceback when a Python package passnat needs is missing.

``pip install passnat`` brings everything ``passnat run``, ``show``,
``doctor``, ``replay`` and ``--capture`` need (pyroute2, scapy).  The lab's
ESP peers also need ``cryptography`` (``pip install 'passnat[lab]'``); the
tests need the ``test`` extra.  ``missing_message`` turns the
``ModuleNotFoundError`` of such a package into the line the ``passnat``
command prints (exit status 1).
"""
from __future__ import annotations

import importlib.util

#: top-level module -> (what needs it, how to install it)
PACKAGES: dict[str, tuple[str, str]] = {
    "pyroute2": ("passnat run: netlink for interfaces, addresses, qdiscs", "pip install pyroute2"),
    "scapy": ("pcapng files: passnat replay, passnat run --capture, the lab", "pip install scapy"),
    "cryptography": ("passnat lab: its ESP peers", "pip install 'passnat[lab]'"),
    "pytest": ("the tests", "pip install 'passnat[test]'"),
    "hypothesis": ("the tests", "pip install 'passnat[test]'"),
    "prometheus_client": ("the tests", "pip install 'passnat[test]'"),
}


def missing_message(e: ModuleNotFoundError) -> str | None:
    """The line for a missing third-party package, or None (a module of passnat itself: a bug)."""
    name = (e.name or "").split(".")[0]
    if not name or name == "passnat":
        return None
    what, how = PACKAGES.get(name, ("passnat", f"pip install {name}"))
    return f"passnat: the Python package {name} is not installed (needed by {what}); install it: {how}"


def require(*modules: str) -> None:
    """Raise ModuleNotFoundError for the first of ``modules`` that is not installed."""
    for m in modules:
        if importlib.util.find_spec(m) is None:
            raise ModuleNotFoundError(f"No module named {m!r}", name=m)
