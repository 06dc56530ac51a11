"""Programs the lab runs inside its hosts (``python -m passnat.lab.peers.<name>``).

Conventions shared by every peer:
  * stdlib plus scapy/cryptography only, no passnat imports beyond this package;
  * with ``--barrier`` a peer prints ``READY`` once it is set up and waits for
    a line on stdin before it starts, so the harness can start several peers
    at the same instant despite interpreter start-up time;
  * a peer's result is one JSON object on the last line of its stdout;
  * peers bound their own run time (``--duration``/``--count``/``--timeout``)
    and end on SIGTERM with their summary printed.
"""
