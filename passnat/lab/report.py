"""The demo report: a side-by-side table (passnat | kernel NAT), throughput, then the details
of every scenario with the session lines that prove it.

Pure formatting: takes ``Outcome``s and ``Throughput``s, returns text.
Evidence is trimmed to ``max_evidence`` lines per scenario and router (the
full run is in the run directory's logs).
"""
from __future__ import annotations

import textwrap
from collections.abc import Sequence

from passnat.lab.scenarios.base import Outcome, Scenario
from passnat.lab.throughput import Throughput

COL = 42
NAME_W = 36


def _cell(o: Outcome | None) -> list[str]:
    if o is None:
        return ["-"]
    text = o.summary if o.ok is None else f"{o.verdict}  {o.summary}"
    return textwrap.wrap(text, COL) or [o.verdict]


def table(scenarios: Sequence[Scenario], results: dict[str, dict[str, Outcome]],
          routers: Sequence[tuple[str, str]]) -> list[str]:
    name_w = NAME_W
    head = f"{'#':>2} {'scenario':<{name_w}}" + "".join(f" | {title:<{COL}}" for _, title in routers)
    out = [head, "-" * len(head)]
    for i, sc in enumerate(scenarios, 1):
        cells = [_cell(results.get(r, {}).get(sc.id)) for r, _ in routers]
        title = textwrap.wrap(sc.title, name_w)
        rows = max([len(title), *(len(c) for c in cells)])
        for k in range(rows):
            num = f"{i:>2}" if k == 0 else "  "
            left = title[k] if k < len(title) else ""
            out.append(f"{num} {left:<{name_w}}" + "".join(
                f" | {(c[k] if k < len(c) else ''):<{COL}}" for c in cells))
    return out


def throughput_lines(tp: dict[str, Throughput]) -> list[str]:
    if not tp:
        return []
    parts = [t.text() for t in tp.values()]
    line = "iperf3 TCP pc1 -> srv1, 1 stream, offloads off: " + "; ".join(parts)
    p, k = tp.get("passnat"), tp.get("kernel")
    if p and k and not p.error and not k.error and k.bits_per_second > 0:
        line += f"; passnat/kernel = {100 * p.bits_per_second / k.bits_per_second:.0f} %"
    loads = {t.load for t in tp.values()}
    return [line, (f"(load average during the runs: {' / '.join(sorted(loads))}; numbers on a shared "
                   "2-core machine are noisy)")]


def details(scenarios: Sequence[Scenario], results: dict[str, dict[str, Outcome]],
            routers: Sequence[tuple[str, str]], max_evidence: int = 24) -> list[str]:
    out: list[str] = []
    for i, sc in enumerate(scenarios, 1):
        out.append("")
        out.append(f"{i:>2}. {sc.title}  [{sc.id}]   router variant: {sc.variant.label()}")
        out += textwrap.wrap(sc.shows, 100, initial_indent="    shows: ", subsequent_indent="           ")
        for r, title in routers:
            o = results.get(r, {}).get(sc.id)
            if o is None:
                continue
            out.append(f"    {title}: {o.verdict} ({o.seconds:.1f} s) {o.summary}")
            out += [f"      {d}" for d in o.details]
            ev = o.evidence
            if ev:
                label = "show status nat" if r == "passnat" else "conntrack -L"
                out.append(f"      {label}:")
                shown = ev[:max_evidence]
                out += [f"        {e}" for e in shown]
                if len(ev) > len(shown):
                    out.append(f"        ... ({len(ev) - len(shown)} more lines in the run log)")
    return out


def render(scenarios: Sequence[Scenario], results: dict[str, dict[str, Outcome]],
           routers: Sequence[tuple[str, str]], tp: dict[str, Throughput], header: Sequence[str],
           config: str) -> str:
    lines = list(header)
    lines += ["", "Router configuration (passnat, base variant; scenarios change only the lines they name):"]
    lines += ["  | " + ln for ln in config.rstrip().splitlines()]
    lines += ["", "Results", *table(scenarios, results, routers)]
    if tp:
        lines += ["", *throughput_lines(tp)]
    lines += ["", "Details (each scenario: what it shows, the verdicts, the router's session lines)"]
    lines += details(scenarios, results, routers)
    return "\n".join(lines) + "\n"
