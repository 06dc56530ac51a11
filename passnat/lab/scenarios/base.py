"""Scenario plumbing: what a scenario is, what it returns, and how one is run.

A ``Scenario`` names a router ``Variant`` and a check function.  The runner
applies the variant to the current router backend (a fresh passnat daemon,
or a flushed kernel NAT), calls the check with a ``Ctx`` and returns an
``Outcome``: verdict, one-line summary, details, and the router's own
session lines that prove it (passnat's ``show status nat``, the kernel's
conntrack table), filtered by the scenario's evidence pattern.

Invariants:
  * every peer a scenario started is stopped (by pid) when it returns or
    raises; the router is left running for the next scenario;
  * a scenario is retried once only when it could not *start* (a LabError:
    a peer that did not come up); a verdict is never retried away;
  * verdicts count N of M where the network may lose a packet, and are
    strict where a wrong delivery would show (foreign SPIs, wrong tags).
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from passnat.lab.lab import Lab
from passnat.lab.proc import LabError, Proc
from passnat.lab.routers import RouterBackend
from passnat.lab.variants import Variant


@dataclass
class Check:
    ok: bool
    summary: str
    details: list[str] = field(default_factory=list)

    @staticmethod
    def all(parts: list[tuple[str, Check]]) -> Check:
        ok = all(c.ok for _, c in parts)
        summary = "; ".join(f"{name}: {'ok' if c.ok else 'FAILED'}" for name, c in parts)
        details = []
        for name, c in parts:
            details.append(f"[{name}] {'ok' if c.ok else 'FAILED'}: {c.summary}")
            details += ["    " + d for d in c.details]
        return Check(ok, summary, details)


@dataclass
class Ctx:
    lab: Lab
    router: RouterBackend
    evidence: list[str] = field(default_factory=list)

    def snapshot(self, pattern: str, label: str = "") -> list[str]:
        """Keep the router's session lines matching ``pattern`` as evidence (now)."""
        rx = re.compile(pattern, re.IGNORECASE)
        lines = [ln for block in session_blocks(self.router.status_lines())
                 if any(rx.search(b) for b in block) for ln in block]
        head = f"-- {label} ({self.router.title})" if label else f"-- {self.router.title}"
        self.evidence.append(head)
        self.evidence += lines or ["(no matching session lines)"]
        return lines


_SESSION_START = re.compile(r"^\s*\d+:\S")


def session_blocks(lines: list[str]) -> list[list[str]]:
    """Group ``show status nat`` lines: a session line and the indented lines after it (SPIs,
    Call IDs) form one block; any other unindented line (conntrack) is a block of its own."""
    blocks: list[list[str]] = []
    for ln in lines:
        if blocks and not _SESSION_START.match(ln) and ln[:1].isspace() and blocks[-1]:
            blocks[-1].append(ln)
        else:
            blocks.append([ln])
    return blocks


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    shows: str
    variant: Variant
    func: Callable[[Ctx], Check]
    evidence: str
    #: None: run it on the kernel NAT too; a string: why the kernel column is "n/a"
    kernel_na: str | None = None


@dataclass
class Outcome:
    scenario: str
    router: str
    ok: bool | None  # None: not applicable to this router
    summary: str
    details: list[str]
    evidence: list[str]
    seconds: float
    error: str | None = None

    @property
    def verdict(self) -> str:
        return "n/a" if self.ok is None else ("PASS" if self.ok else "FAIL")


def run_scenario(lab: Lab, sc: Scenario, *, retries: int = 1) -> Outcome:
    router = lab.router
    if router is None:
        raise LabError("no router running in the lab")
    t0 = time.monotonic()
    if router.name == "kernel" and sc.kernel_na:
        return Outcome(sc.id, router.name, None, sc.kernel_na, [], [], 0.0)
    error = None
    for attempt in range(retries + 1):
        ctx = Ctx(lab, router)
        try:
            lab.apply(sc.variant)
            check = sc.func(ctx)
            return Outcome(sc.id, router.name, check.ok, check.summary, check.details, ctx.evidence,
                           time.monotonic() - t0)
        except LabError as e:
            error = f"attempt {attempt + 1}: {e}"
        finally:
            lab.stop_peers()
    return Outcome(sc.id, router.name, False, "could not run: " + (error or "?").splitlines()[0],
                   (error or "").splitlines()[1:], [], time.monotonic() - t0, error)


# ------------------------------------------------------------------ peer helpers

def go(*procs: Proc, timeout: float = 20.0) -> None:
    """Wait until every peer printed READY, then release them all at once."""
    for p in procs:
        deadline = time.monotonic() + timeout
        while True:
            line = p.readline(max(0.0, deadline - time.monotonic()))
            if line is not None and line.strip() == "READY":
                break
            if line is None:
                raise LabError(f"{p.name} in {p.ns} did not get ready (log {p.log}): "
                               f"{_tail(p)}")
    for p in procs:
        p.send("go\n")


def ready(*procs: Proc, timeout: float = 20.0) -> None:
    """Like ``go`` for servers that need no synchronised start: wait READY, release."""
    go(*procs, timeout=timeout)


def result_of(p: Proc, timeout: float = 30.0) -> dict[str, Any]:
    """The JSON result line a peer printed last (waits for it to end, stopping it after timeout)."""
    out = p.output(timeout)
    for line in reversed(out.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
    raise LabError(f"{p.name} in {p.ns} printed no result (log {p.log}): {_tail(p)}")


def finish(p: Proc) -> dict[str, Any]:
    """Stop a server-type peer (SIGTERM) and read its summary."""
    p.stop()
    return result_of(p, 5.0)


def _tail(p: Proc) -> str:
    if p.log is None:
        return ""
    try:
        return " | ".join(p.log.read_text(errors="replace").splitlines()[-5:])
    except OSError:
        return ""
