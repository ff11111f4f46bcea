"""The demo's verdict on kept connections, on made-up runs (no service, no
clock): a close excused only in a handoff known to have drained in protocol
v1; and how the supervisor's log says which protocol a handoff used. Run by
`make test-demo`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo
import loadgen
import report

EPOCH = 1000.0


def handoffs(*protocols: str) -> list[demo.Handoff]:
    """One handoff per protocol, triggered at 1 s, 2 s, ... after EPOCH."""
    return [
        demo.Handoff("c", float(n + 1), float(n + 1) + 0.05, True, source="c", protocol=protocol)
        for n, protocol in enumerate(protocols)
    ]


def results(*closes: float | None) -> loadgen.Results:
    """One persistent client per entry, connected at 0.5 s; its connection
    closed by the server at that many seconds, or still open (None)."""
    r = loadgen.Results()
    for client, closed in enumerate(closes):
        at = None if closed is None else EPOCH + closed
        r.kept.append(loadgen.KeptConnection(client, EPOCH + 0.5, answered=3, closed=at, how="x"))
        if at is not None:
            r.kept.append(loadgen.KeptConnection(client, at))
            r.resent += 1
    return r


def test_nothing_closed_in_v2_handoffs() -> None:
    kept = report.kept_connections(results(None, None), handoffs("v2", "v2"), EPOCH)
    assert (kept.closed, kept.reconnects, kept.offences) == (0, 0, [])
    assert kept.stayed_open == kept.open_at_first == 2


def test_a_v1_handoff_may_close_connections() -> None:
    kept = report.kept_connections(results(1.01, 1.02), handoffs("v1", "v2"), EPOCH)
    assert kept.closed_by == [2, 0]
    assert (kept.reconnects, kept.resent, kept.stayed_open, kept.offences) == (2, 2, 0, [])


def test_a_close_in_a_v2_handoff_fails() -> None:
    kept = report.kept_connections(results(None, 2.01), handoffs("v1", "v2"), EPOCH)
    assert kept.closed_by == [0, 1]
    assert len(kept.offences) == 1 and "handoff 2 c -> c moved the connections" in kept.offences[0]
    summary = report.summarize(results(None, 2.01), handoffs("v1", "v2"), [], EPOCH, [])
    assert not summary.ok and "RESULT: FAILED" in summary.text


def test_a_close_the_log_does_not_explain_fails() -> None:
    kept = report.kept_connections(results(1.5), handoffs("unknown"), EPOCH)
    assert len(kept.offences) == 1 and "does not say" in kept.offences[0]
    # Unknown but nothing closed: nothing to explain.
    assert report.kept_connections(results(None), handoffs("unknown"), EPOCH).offences == []


def test_a_close_before_any_handoff_fails() -> None:
    kept = report.kept_connections(results(0.7), handoffs("v1"), EPOCH)
    assert (kept.closed_before, kept.closed_by) == (1, [0])
    assert kept.offences == ["1 kept connection(s) closed before any handoff"]


def test_the_summary_says_which_handoffs_closed_connections() -> None:
    summary = report.summarize(results(1.01, None), handoffs("v1"), [], EPOCH, [], persistent=2)
    assert summary.ok
    assert "1 of the 2 open at the first handoff stayed open across every handoff" in summary.text
    assert "handoff 1 c -> c           v1, drained  1 kept connection(s) closed" in summary.text
    assert "all by v1 handoffs" in summary.text


def test_the_drain_line_says_the_protocol(tmp_path: Path) -> None:
    log = tmp_path / "supervisor.log"
    log.write_text(
        "kv-c[1] handoff info: handoff 11-aa: draining (budget 5s), moving up to 19931 descriptor(s)\n"
        "kv-py[2] handoff info: handoff 22-bb: draining (budget 5s)\n"
    )
    assert demo.drain_protocol(log, "11-aa") == "v2"
    assert demo.drain_protocol(log, "22-bb") == "v1"
    assert demo.drain_protocol(log, "33-cc") == "unknown"
    assert demo.drain_protocol(log, "") == "unknown"
    assert demo.drain_protocol(tmp_path / "missing.log", "11-aa") == "unknown"
