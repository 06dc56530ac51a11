"""The packet filter (R16): SEIL ``filter add`` rules, counters and states.

``engine.Filter`` is what the router holds (``router.filter``); ``rules``
compiles the configuration's rules, ``state`` keeps the dynamic states,
``status`` gives ``show status filter`` data (``router.filter_status(now)``).
"""
from __future__ import annotations

from passnat.filter.engine import Filter
from passnat.filter.status import format_status

__all__ = ["Filter", "format_status"]
