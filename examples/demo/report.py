"""The demo's report: numbers in text, and a picture of latency over time
with each handoff's phases drawn as bands."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from demo import Handoff
    from loadgen import Results

PHASE_COLOURS = {
    "hello": "#d9d9d9",
    "spawn": "#c6dbef",
    "drain": "#fdd0a2",
    "seal": "#fc9272",
    "ready": "#a1d99b",
    "commit": "#9e9ac8",
}


@dataclass
class Summary:
    text: str
    ok: bool


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def _in_handoff(t: float, handoffs: Sequence[Handoff]) -> bool:
    return any(h.started <= t <= h.ended for h in handoffs)


@dataclass
class Kept:
    """What the handoffs did to the persistent clients' connections."""

    # Per handoff, the kept connections the server closed that it is blamed
    # for: the last handoff triggered before the close was seen.
    closed_by: list[int] = field(default_factory=list)
    # Closed with no handoff triggered yet.
    closed_before: int = 0
    # Open when the first handoff was triggered, and still open at the stop.
    open_at_first: int = 0
    stayed_open: int = 0
    reconnects: int = 0
    resent: int = 0
    # Why the demo fails, one line each.
    offences: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    @property
    def closed(self) -> int:
        return sum(self.closed_by) + self.closed_before


def label(n: int, h: Handoff) -> str:
    return f"handoff {n + 1} {h.source or '?'} -> {h.target}"


def kept_connections(results: Results, handoffs: Sequence[Handoff], epoch: float) -> Kept:
    """Each close of a kept connection blamed on the last handoff triggered
    before the client saw it (it sees it on its next request, or at the
    stop). A close is excused only in a handoff known to have drained in
    protocol v1 (one of its two services does not move connections); in a
    v2 handoff, in one the log says nothing about, or before any handoff, it
    is an offence."""
    kept = Kept(closed_by=[0] * len(handoffs), reconnects=results.reconnects(), resent=results.resent)
    starts = [h.started for h in handoffs]
    for c in results.closed_by_server():
        assert c.closed is not None
        seen = c.closed - epoch
        blamed = max((i for i, start in enumerate(starts) if start <= seen), default=None)
        if blamed is None:
            kept.closed_before += 1
        else:
            kept.closed_by[blamed] += 1
        if len(kept.examples) < 5:
            kept.examples.append(f"client {c.client}, at {seen:.3f} s, after {c.answered} answer(s): {c.how}")
    if handoffs:
        first = handoffs[0].started + epoch
        initial = [c for c in results.kept if c.opened < first]
        kept.open_at_first = len(initial)
        kept.stayed_open = sum(c.closed is None and not c.given_up for c in initial)
    for n, (h, closed) in enumerate(zip(handoffs, kept.closed_by, strict=True)):
        if closed == 0 or h.protocol == "v1":
            continue
        if h.protocol == "v2":
            kept.offences.append(
                f"{label(n, h)} moved the connections (protocol v2: both services move them) "
                f"but {closed} kept connection(s) were closed"
            )
        else:
            kept.offences.append(
                f"{label(n, h)}: the supervisor's log does not say whether it moved the connections, "
                f"and {closed} kept connection(s) were closed: failing rather than guessing"
            )
    if kept.closed_before:
        kept.offences.append(f"{kept.closed_before} kept connection(s) closed before any handoff")
    return kept


def leftover_processes(work: Path) -> list[str]:
    """Processes still running whose command line names the demo's files."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(work) in cmdline:
            found.append(f"{entry}: {cmdline.strip()}")
    return found


def summarize(
    results: Results,
    handoffs: Sequence[Handoff],
    lost: list[str],
    epoch: float,
    leftovers: list[str],
    persistent: int | None = None,
) -> Summary:
    ok_samples = [s for s in results.samples if s.failure is None]
    steady = [s.latency * 1000 for s in ok_samples if not _in_handoff(s.start - epoch, handoffs)]
    during = [s.latency * 1000 for s in ok_samples if _in_handoff(s.start - epoch, handoffs)]
    failed = sum(results.failures.values())
    committed = sum(h.committed for h in handoffs)
    lines = [
        "",
        "== demo report ==",
        f"handoffs: {committed} committed, {len(handoffs) - committed} rolled back "
        f"(cycle: {' -> '.join(['c'] + [h.target for h in handoffs])})",
        f"requests: {len(results.samples)} sent, {failed} failed "
        + (f"({', '.join(f'{k} {v}' for k, v in sorted(results.failures.items()))})" if failed else "")
        + f"; {results.resent} resent after a server close (not failures)",
        f"acknowledged writes: {len(results.acknowledged)}, lost: {len(lost)}",
    ]
    kept = kept_connections(results, handoffs, epoch)
    clients = persistent if persistent is not None else len({c.client for c in results.kept})
    moved = [h for h in handoffs if h.protocol == "v2"]
    drained = [h for h in handoffs if h.protocol == "v1"]
    unknown = len(handoffs) - len(moved) - len(drained)
    lines.append(
        f"kept connections ({clients} persistent clients): {kept.stayed_open} of the {kept.open_at_first} open "
        f"at the first handoff stayed open across every handoff; {sum(kept.closed_by)} closed by the handoffs"
        + (f", {kept.closed_before} before them" if kept.closed_before else "")
        + f"; {kept.reconnects} reconnects ({kept.resent} resends)"
    )
    lines.append(
        f"  handoffs that moved the connections (protocol v2): {len(moved)}; that closed them (v1: one of "
        f"the two does not move them, e.g. --no-moves): {len(drained)}" + (f"; not said by the log: {unknown}" if unknown else "")
    )
    for n, (h, closed) in enumerate(zip(handoffs, kept.closed_by, strict=True)):
        protocol = {"v2": "v2, moved", "v1": "v1, drained"}.get(h.protocol, "unknown")
        lines.append(f"  {label(n, h):<26} {protocol:<12} {closed} kept connection(s) closed")
    if kept.closed_before:
        lines.append(f"  before the first handoff      {kept.closed_before} kept connection(s) closed")
    if kept.offences:
        for example in kept.examples:
            lines.append(f"  closed: {example}")
    lines.append("latency ms        p50      p99      max")
    for name, values in (("steady state", steady), ("during handoffs", during)):
        lines.append(
            f"  {name:<15} {percentile(values, 50):7.2f}  {percentile(values, 99):7.2f}  "
            f"{max(values, default=float('nan')):7.2f}   ({len(values)} requests)"
        )
    phase_names = [name for name in PHASE_COLOURS if any(name == p for h in handoffs for p, _ in h.phases)]
    if phase_names:
        lines.append(
            "handoff phases, median ms: "
            + "  ".join(f"{name} {median([ms for h in handoffs for p, ms in h.phases if p == name]):.1f}" for name in phase_names)
        )
    totals = [(h.ended - h.started) * 1000 for h in handoffs]
    if totals:
        lines.append(f"trigger to outcome, ms: median {median(totals):.1f}, max {max(totals):.1f}")
    for example in results.examples:
        lines.append(f"  failure: {example}")
    if lost:
        lines.append(f"  lost keys (first 10): {lost[:10]}")
    if leftovers:
        lines.append(f"  processes left behind: {leftovers}")
    for offence in kept.offences:
        lines.append(f"  kept connection: {offence}")
    ok = failed == 0 and not lost and committed == len(handoffs) and not leftovers and not kept.offences
    if ok and kept.closed:
        verdict = (
            f"OK: nothing refused, nothing lost; {kept.closed} kept connection(s) closed, "
            "all by v1 handoffs (a service that does not move its connections, e.g. --no-moves)"
        )
    elif ok:
        verdict = "OK: nothing refused, nothing lost, no kept connection closed"
    else:
        verdict = "FAILED"
    lines.append("RESULT: " + verdict)
    return Summary("\n".join(lines), ok)


def write_svg(path: Path, results: Results, handoffs: Sequence[Handoff], epoch: float) -> None:
    """Latency of every request over time (log scale), failures in red, and
    each handoff's phases as coloured bands laid end to end."""
    width, height, left, bottom, top = 1100, 420, 60, 40, 30
    samples = results.samples
    t_end = max([s.start - epoch for s in samples] + [h.ended for h in handoffs] + [1.0])
    lat = [max(s.latency * 1000, 0.01) for s in samples] or [1.0]
    lo, hi = math.log10(min(lat)), math.log10(max(max(lat), 10))

    def x(t: float) -> float:
        return left + (width - left - 20) * t / t_end

    def y(ms: float) -> float:
        v = (math.log10(max(ms, 0.01)) - lo) / max(hi - lo, 1e-9)
        return height - bottom - v * (height - bottom - top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="18" font-size="14">Request latency during {len(handoffs)} live handoffs '
        f"(C, Python, Go); bands are handoff phases</text>",
    ]
    for h in handoffs:
        t = h.started
        total_ms = sum(ms for _, ms in h.phases) or (h.ended - h.started) * 1000
        scale = (h.ended - h.started) * 1000 / total_ms if total_ms else 1
        for name, ms in h.phases:
            w = ms * scale / 1000
            parts.append(
                f'<rect x="{x(t):.1f}" y="{top}" width="{max(x(t + w) - x(t), 0.8):.1f}" '
                f'height="{height - bottom - top}" fill="{PHASE_COLOURS.get(name, "#eee")}" opacity="0.8">'
                f"<title>{name} {ms:.1f} ms</title></rect>"
            )
            t += w
        parts.append(f'<text x="{x(h.started):.1f}" y="{top - 4}" font-size="9">{h.target} {h.protocol}</text>')
    for s in samples:
        colour = "#d62728" if s.failure else "#1f77b4"
        parts.append(f'<circle cx="{x(s.start - epoch):.1f}" cy="{y(s.latency * 1000):.1f}" r="1.2" fill="{colour}"/>')
    for ms in (0.1, 1, 10, 100, 1000):
        if lo <= math.log10(ms) <= hi:
            parts.append(f'<line x1="{left}" x2="{width - 20}" y1="{y(ms):.1f}" y2="{y(ms):.1f}" stroke="#ccc"/>')
            parts.append(f'<text x="{left - 6}" y="{y(ms) + 4:.1f}" text-anchor="end">{ms:g} ms</text>')
    parts.append(f'<text x="{width / 2:.0f}" y="{height - 8}">time since load start (s), 0 to {t_end:.1f}</text>')
    legend_x = left
    for name, colour in PHASE_COLOURS.items():
        parts.append(f'<rect x="{legend_x}" y="{height - 30}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="{height - 21}">{name}</text>')
        legend_x += 70
    parts.append("</svg>")
    path.write_text("\n".join(parts))
