"""The library's events reach Python logging or a callback."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

import libhandoff
from libhandoff import Incumbent, Lock, LogLevel


class Quiet:
    def drain(self, ctx: libhandoff.HookContext) -> None:
        pass

    def seal(self, ctx: libhandoff.HookContext) -> None:
        pass

    def resume_after_abort(self) -> None:
        pass


def _serve_briefly(root: Path) -> None:
    with Lock.acquire(root / "data") as lock, Incumbent.bind(root / "ctl", lock) as inc:
        inc.start(Quiet())
        inc.stop()


def test_events_reach_logging(short_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    libhandoff.forward_to_logging()
    try:
        with caplog.at_level(logging.DEBUG, logger="libhandoff.library"):
            _serve_briefly(short_tmp)
    finally:
        libhandoff.set_log_callback(None)
    messages = [r.getMessage() for r in caplog.records if r.name == "libhandoff.library"]
    assert any("serving control socket" in m and str(short_tmp) in m for m in messages)


def test_a_callback_gets_level_and_message(short_tmp: Path) -> None:
    events: list[tuple[LogLevel, str]] = []
    libhandoff.set_log_callback(lambda level, message: events.append((level, message)))
    try:
        _serve_briefly(short_tmp)
    finally:
        libhandoff.set_log_callback(None)
    assert events
    assert all(isinstance(level, LogLevel) for level, _ in events)
    count = len(events)
    _serve_briefly(short_tmp)
    assert len(events) == count  # the default is back


def test_a_raising_callback_is_reported_not_fatal(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[BaseException] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))

    def broken(level: LogLevel, message: str) -> None:
        raise ValueError("broken log sink")

    libhandoff.set_log_callback(broken)
    try:
        _serve_briefly(short_tmp)
    finally:
        libhandoff.set_log_callback(None)
    assert seen
    assert all(isinstance(e, ValueError) for e in seen)
