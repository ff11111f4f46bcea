"""The data-dir lock and its generation."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import libhandoff
from libhandoff import Lock, lock_holder


def test_generation_goes_up_on_every_acquire(short_tmp) -> None:
    generations = []
    for _ in range(3):
        lock = Lock.acquire(short_tmp / "data")
        generations.append(lock.generation)
        lock.release()
    assert generations == [1, 2, 3]
    assert (short_tmp / "data" / ".handoff.lock").exists()


def test_held_lock_refuses_a_second_holder(short_tmp) -> None:
    with Lock.acquire(short_tmp) as lock:
        assert lock.held
        assert lock_holder(short_tmp) == (True, os.getpid())
        assert (short_tmp / ".handoff.pidfile").read_text() == f"{os.getpid()}\n"
        with pytest.raises(libhandoff.LockHeldError):
            Lock.acquire(short_tmp)
        started = time.monotonic()
        with pytest.raises(libhandoff.LockHeldError):
            Lock.acquire(short_tmp, timeout=0.2)
        # A lower bound, not a performance claim: the retry really waited.
        assert time.monotonic() - started >= 0.15
    assert lock.closed
    assert lock_holder(short_tmp) == (False, 0)
    # Kept (a full disk must not keep the next holder from writing it), but
    # naming nobody.
    assert (short_tmp / ".handoff.pidfile").read_text() == "\n"


def test_another_process_holding_the_lock(short_tmp) -> None:
    script = (
        "import libhandoff, sys, time\n"
        f"lock = libhandoff.Lock.acquire({str(short_tmp)!r})\n"
        "print(lock.generation, flush=True)\n"
        "sys.stdin.readline()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        assert child.stdout.readline().strip() == "1"
        assert lock_holder(short_tmp) == (True, child.pid)
        with pytest.raises(libhandoff.LockHeldError, match=str(child.pid)):
            Lock.acquire(short_tmp)
        child.stdin.write("\n")
        child.stdin.flush()
        # A process that exits loses the lock; the retry takes it then.
        with Lock.acquire(short_tmp, timeout=5) as lock:
            assert lock.generation == 2
    finally:
        child.kill()
        child.wait()


def test_release_consumes_the_lock(short_tmp) -> None:
    lock = Lock.acquire(short_tmp)
    lock.release()
    assert lock.closed
    with pytest.raises(libhandoff.WrongStateError):
        lock.release()
    with pytest.raises(libhandoff.WrongStateError):
        _ = lock.generation
    lock.close()  # idempotent


def test_a_lock_moved_into_an_incumbent_is_empty(short_tmp) -> None:
    lock = Lock.acquire(short_tmp / "data")
    generation = lock.generation
    with libhandoff.Incumbent.bind(short_tmp / "ctl", lock) as incumbent:
        assert not lock.held
        assert lock.generation == 0
        assert incumbent.generation == generation
        with pytest.raises(libhandoff.WrongStateError):
            libhandoff.Incumbent.bind(short_tmp / "ctl2", lock)
        lock.close()
        assert lock_holder(short_tmp / "data") == (True, os.getpid())
    assert lock_holder(short_tmp / "data") == (False, 0)
