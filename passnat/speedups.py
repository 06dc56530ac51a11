"""Which data plane this process runs: the compiled one (passnat/_speedups.c) or pure Python.

The C extension is optional: ``pip install`` builds it when a compiler is
there, and ``PASSNAT_PURE=1`` turns it off.  Without it passnat runs the same
paths in Python (slower, same bytes).  The daemon says which one at start-up,
``show status``/``show counters`` and the metrics show it (``mode()``,
``reason()``).
"""
from __future__ import annotations

import os
from types import ModuleType

_built: ModuleType | None
_module: ModuleType | None
_reason: str
try:
    from passnat import _speedups as _built  # type: ignore[attr-defined,no-redef]
    _reason = "passnat._speedups is built"
except ImportError as e:  # pragma: no cover - depends on the build
    _built, _reason = None, f"passnat._speedups is not built ({e})"
_module = _built
if os.environ.get("PASSNAT_PURE"):
    _module, _reason = None, "PASSNAT_PURE is set"


def module() -> ModuleType | None:
    """The compiled module, or None when the pure-Python data plane runs."""
    return _module


def built() -> ModuleType | None:
    """The compiled module if it is built, whatever ``PASSNAT_PURE`` says: tests that compare the
    compiled paths with the Python ones use it (the router and the daemon use ``module()``)."""
    return _built


def mode() -> str:
    """``compiled`` or ``python``."""
    return "compiled" if _module is not None else "python"


def reason() -> str:
    """Why: ``passnat._speedups is built``, ``PASSNAT_PURE is set``, or the import error."""
    return _reason
