"""An incumbent in this process, with a Python service, handed off by a
Python supervisor (also in this process) to a Python successor."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HERE, reap

import libhandoff
from libhandoff import HookContext, Incumbent, Lock, ServeOutcome, SpawnSpec, Supervisor

SUCCESSOR_CHILD = HERE / "helpers" / "successor_child.py"


class RecordingService:
    """Records its calls; ``fail`` maps a hook name to what it raises."""

    def __init__(self, fail: dict[str, BaseException] | None = None) -> None:
        self.calls: list[str] = []
        self.threads: set[int] = set()
        self.fail = fail or {}
        self.time_left = 0.0
        self.ctx: HookContext | None = None

    def _called(self, name: str) -> None:
        self.calls.append(name)
        self.threads.add(threading.get_ident())
        if name in self.fail:
            raise self.fail[name]

    def drain(self, ctx: HookContext) -> None:
        self.time_left = ctx.time_left
        self.ctx = ctx
        self._called("drain")
        ctx.set_drained(0, True)

    def seal(self, ctx: HookContext) -> None:
        self._called("seal")
        ctx.seal_progress(1, 1, 7)
        ctx.push_revision(7)
        ctx.set_fingerprint(bytes(32))

    def resume_after_abort(self) -> None:
        self._called("resume_after_abort")


class Setup:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.control = root / "ctl"
        self.report = root / "report.json"
        self.listener = socket.create_server(("127.0.0.1", 0))
        lock = Lock.acquire(self.data)
        self.generation = lock.generation
        self.incumbent = Incumbent.bind(self.control, lock)
        lock.close()
        self.supervisor = Supervisor(self.control)
        self.supervisor.add_listener("kv", self.listener)
        self.supervisor.set_timeouts(kill_grace=1.0)
        self.children: list[int] = []

    def spec(self) -> SpawnSpec:
        args = [str(SUCCESSOR_CHILD), str(self.report), str(self.data), str(self.control)]
        return SpawnSpec(sys.executable, args, deadline=20, drain_grace=5)

    def read_report(self) -> dict:
        """The successor's report (written once it serves)."""
        deadline = time.monotonic() + 15
        while not self.report.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return json.loads(self.report.read_text())

    def perform(self) -> libhandoff.Outcome:
        with self.spec() as spec:
            outcome = self.supervisor.perform_handoff(spec)
        if outcome.successor_pid:
            self.children.append(outcome.successor_pid)
        return outcome

    def close(self) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if reap(pid, 5) is None:
                os.kill(pid, signal.SIGKILL)
                reap(pid, 5)
        self.incumbent.close()
        self.supervisor.close()
        self.listener.close()


@pytest.fixture
def setup(short_tmp: Path) -> Iterator[Setup]:
    s = Setup(short_tmp)
    try:
        yield s
    finally:
        s.close()


def test_commit_to_a_python_successor(setup: Setup) -> None:
    service = RecordingService()
    setup.incumbent.set_build_id(b"in-process")
    setup.incumbent.set_liveness_timeout(5)
    setup.incumbent.start(service)
    assert setup.incumbent.wait(0) is None  # serving
    outcome = setup.perform()
    assert outcome.committed, outcome.abort_reason
    assert setup.incumbent.wait(5) is ServeOutcome.COMMITTED
    assert setup.incumbent.wait(0) is ServeOutcome.COMMITTED
    assert service.calls == ["drain", "seal"]
    assert 0 < service.time_left <= 5
    # A hook context is valid only during its callback.
    assert service.ctx is not None
    with pytest.raises(libhandoff.WrongStateError, match="during its callback"):
        service.ctx.push_revision(1)
    # The callbacks ran on the library's thread, not on this one.
    assert threading.get_ident() not in service.threads
    assert setup.incumbent.callback_errors == ()
    report = setup.read_report()
    assert report["is_successor"] is True
    assert report["names"] == ["kv"]
    assert report["env_left"] == []
    assert report["take_before_begin"] == "WrongStateError"
    assert report["handoff_id"] == str(outcome.handoff_id)
    assert report["generation"] == setup.generation + 1
    assert report["incumbent_generation"] == setup.generation + 1
    assert report["lock_after_ready"] is False
    assert libhandoff.lock_holder(setup.data) == (True, outcome.successor_pid)


def test_a_seal_that_raises_rolls_back(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    boom = RuntimeError("disk on fire")
    service = RecordingService(fail={"seal": boom})
    setup.incumbent.start(service)
    with caplog.at_level(logging.ERROR, logger="libhandoff"):
        outcome = setup.perform()
    assert not outcome.committed
    assert outcome.abort_reason is not None
    assert "RuntimeError: disk on fire" in outcome.abort_reason
    assert service.calls == ["drain", "seal", "resume_after_abort"]
    # Logged with its traceback, and kept for the caller.
    records = [r for r in caplog.records if r.name == "libhandoff"]
    assert any(r.exc_info and r.exc_info[1] is boom for r in records)
    assert setup.incumbent.callback_errors == (boom,)
    # Still the incumbent, with the lock it never released.
    assert setup.incumbent.wait(0) is None
    assert setup.incumbent.generation == setup.generation
    assert libhandoff.lock_holder(setup.data) == (True, os.getpid())
    # And it can still hand off once the service behaves.
    del service.fail["seal"]
    outcome = setup.perform()
    assert outcome.committed, outcome.abort_reason
    assert setup.incumbent.wait(5) is ServeOutcome.COMMITTED


def test_a_deliberate_hook_failure(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    service = RecordingService(fail={"drain": libhandoff.HookFailedError("not now")})
    setup.incumbent.start(service)
    with caplog.at_level(logging.WARNING, logger="libhandoff"):
        outcome = setup.perform()
    assert not outcome.committed
    assert service.calls == ["drain", "resume_after_abort"]
    warnings = [r for r in caplog.records if r.name == "libhandoff"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert "not now" in warnings[0].getMessage()
    assert warnings[0].exc_info is None
    assert setup.incumbent.wait(0) is None


def test_a_base_exception_in_a_callback_reaches_wait(setup: Setup) -> None:
    service = RecordingService(fail={"drain": KeyboardInterrupt()})
    setup.incumbent.start(service)
    outcome = setup.perform()
    assert not outcome.committed
    with pytest.raises(KeyboardInterrupt):
        setup.incumbent.wait(0)
    assert setup.incumbent.wait(0) is None  # raised once; still serving


def test_the_service_stays_alive_until_destroy(setup: Setup) -> None:
    service = RecordingService()
    calls = service.calls
    ref = weakref.ref(service)
    setup.incumbent.start(service)
    del service
    gc.collect()
    assert ref() is not None  # the library may still call it
    outcome = setup.perform()
    assert outcome.committed
    assert calls == ["drain", "seal"]
    assert setup.incumbent.wait(5) is ServeOutcome.COMMITTED
    # Serving ended: the library called destroy, which let the service go.
    gc.collect()
    assert ref() is None
    assert libhandoff.callbacks._registry == {}
    setup.incumbent.close()


def test_stop_and_start_errors(setup: Setup) -> None:
    with pytest.raises(TypeError, match="drain"):
        setup.incumbent.start(object())  # type: ignore[arg-type]
    setup.incumbent.start(RecordingService())
    with pytest.raises(libhandoff.WrongStateError):
        setup.incumbent.start(RecordingService())
    with pytest.raises(libhandoff.WrongStateError):
        setup.incumbent.set_build_id(b"too late")
    assert len(libhandoff.callbacks._registry) == 1  # the failed start left nothing
    setup.incumbent.stop()
    assert setup.incumbent.wait(0) is ServeOutcome.STOPPED
    assert libhandoff.callbacks._registry == {}
    # Nobody serves the control socket now.
    setup.supervisor.set_timeouts(hello=0.3)
    with pytest.raises(libhandoff.IoError):
        setup.perform()


def test_no_incumbent_means_the_handoff_never_started(short_tmp: Path) -> None:
    with Supervisor(short_tmp / "nobody.ctl") as sup, SpawnSpec("/bin/true") as spec:
        sup.set_timeouts(hello=0.3)
        with pytest.raises(libhandoff.IoError, match=r"nobody\.ctl"):
            sup.perform_handoff(spec)


def test_exiting_while_serving_is_clean(short_tmp: Path) -> None:
    # An incumbent never closed, a log callback never reset: the interpreter
    # stops both at exit, before the library's threads could call into it.
    script = (
        "import libhandoff, sys\n"
        "class S:\n"
        "    def drain(self, ctx): pass\n"
        "    def seal(self, ctx): pass\n"
        "    def resume_after_abort(self): pass\n"
        "libhandoff.forward_to_logging()\n"
        f"lock = libhandoff.Lock.acquire({str(short_tmp / 'data')!r})\n"
        f"inc = libhandoff.Incumbent.bind({str(short_tmp / 'ctl')!r}, lock)\n"
        "inc.start(S())\n"
        "print('serving', flush=True)\n"
        "sys.exit(3)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert result.stdout == "serving\n"
    assert result.returncode == 3, result.stderr
    assert libhandoff.lock_holder(short_tmp / "data") == (False, 0)
