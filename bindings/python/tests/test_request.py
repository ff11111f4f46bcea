"""Requests taken by this process's own loop (Incumbent.start_loop): an
incumbent in this process, handed off by a Python supervisor (also in this
process, on a thread) to a Python successor (helpers/successor_child.py)."""

from __future__ import annotations

import os
import selectors
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_incumbent import RecordingService, Setup

import libhandoff
from libhandoff import Cause, Incumbent, Outcome, Request, RequestKind, ServeOutcome


@pytest.fixture
def setup(short_tmp: Path) -> Iterator[Setup]:
    s = Setup(short_tmp)
    try:
        yield s
    finally:
        s.close()


def next_request(incumbent: Incumbent) -> Request:
    """Wait (with a selector, as a service's loop would) for a request."""
    with selectors.DefaultSelector() as sel:
        sel.register(incumbent, selectors.EVENT_READ)
        while True:
            assert sel.select(timeout=20), "no request came"
            request = incumbent.take_request()
            if request is not None:
                return request


class Handoff:
    """perform() on another thread, so this one can play the service."""

    def __init__(self, setup: Setup) -> None:
        self.outcome: Outcome | None = None
        self.thread = threading.Thread(target=self._run, args=(setup,))
        self.thread.start()

    def _run(self, setup: Setup) -> None:
        self.outcome = setup.perform()

    def join(self) -> Outcome:
        self.thread.join()
        assert self.outcome is not None
        return self.outcome


def test_a_request_is_completed_once_and_a_failed_seal_resumes(setup: Setup) -> None:
    incumbent = setup.incumbent
    incumbent.start_loop()
    assert incumbent.take_request() is None  # nothing asked yet
    running = Handoff(setup)
    drain = next_request(incumbent)
    assert (drain.kind, drain.done, drain.outcome) == (RequestKind.DRAIN, False, None)
    assert 0 < drain.time_left <= 5
    with pytest.raises(libhandoff.WrongStateError):
        drain.push_revision(1)  # a seal's setter on a drain
    drain.set_drained(0, True)
    drain.complete()
    assert drain.done
    with pytest.raises(libhandoff.WrongStateError, match="already completed"):
        drain.complete()
    seal = next_request(incumbent)
    assert seal.kind is RequestKind.SEAL
    with pytest.raises(RuntimeError, match="disk on fire"), seal:
        raise RuntimeError("disk on fire")
    assert seal.done  # failed by the context manager
    resume = next_request(incumbent)
    assert resume.kind is RequestKind.RESUME
    with resume:
        pass
    outcome = running.join()
    assert not outcome.committed
    assert outcome.abort_cause is Cause.SEAL_FAILED
    assert outcome.abort_reason is not None
    assert "RuntimeError: disk on fire" in outcome.abort_reason
    # Still serving, with the lock it never released.
    assert incumbent.wait(0) is None
    assert incumbent.take_request() is None
    assert libhandoff.lock_holder(setup.data) == (True, os.getpid())
    assert incumbent.generation == setup.generation


def test_a_committed_handoff_ends_with_ended(setup: Setup) -> None:
    incumbent = setup.incumbent
    incumbent.start_loop()
    running = Handoff(setup)
    kinds = []
    while True:
        request = next_request(incumbent)
        kinds.append(request.kind)
        if request.kind is RequestKind.ENDED:
            break
        with request:
            if request.kind is RequestKind.SEAL:
                request.push_revision(7)
    assert running.join().committed
    assert kinds == [RequestKind.DRAIN, RequestKind.SEAL, RequestKind.ENDED]
    assert request.outcome is ServeOutcome.COMMITTED
    assert request.done  # nothing to complete
    with pytest.raises(libhandoff.WrongStateError):
        request.complete()
    assert incumbent.take_request() is None  # nothing after ENDED
    assert incumbent.wait(0) is ServeOutcome.COMMITTED


def test_a_held_request_is_spent_when_the_incumbent_closes(setup: Setup) -> None:
    incumbent = setup.incumbent
    incumbent.start_loop()
    running = Handoff(setup)
    drain = next_request(incumbent)
    # Serving cannot end while the loop holds a request: only wait(0).
    with pytest.raises(libhandoff.WrongStateError, match="complete the request"):
        incumbent.wait(1)
    incumbent.close()  # stops serving: the drain we held fails
    assert not running.join().committed
    with pytest.raises(libhandoff.WrongStateError, match="closed"):
        drain.complete()


def test_descriptor_and_requests_belong_to_the_loop_form(setup: Setup) -> None:
    incumbent = setup.incumbent
    with pytest.raises(libhandoff.WrongStateError, match="start_loop"):
        incumbent.fileno()
    incumbent.start(RecordingService())  # the callback form
    with pytest.raises(libhandoff.WrongStateError, match="start_loop"):
        incumbent.fileno()
    with pytest.raises(libhandoff.WrongStateError):
        incumbent.take_request()
    with pytest.raises(libhandoff.WrongStateError):
        incumbent.start_loop()
