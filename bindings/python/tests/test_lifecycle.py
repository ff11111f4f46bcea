"""Resources: close(), with and garbage collection free them; use after
close raises (never crashes); create/close cycles leak no descriptor."""

from __future__ import annotations

import gc
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import open_fds

import libhandoff
from libhandoff import (
    FrameReader,
    Incumbent,
    Lock,
    MessageHandle,
    MessageKind,
    SpawnSpec,
    Supervisor,
)
from libhandoff.messages import Begin, Field

CYCLES = 1000


class Quiet:
    def drain(self, ctx: libhandoff.HookContext) -> None:
        pass

    def seal(self, ctx: libhandoff.HookContext) -> None:
        pass

    def resume_after_abort(self) -> None:
        pass


def _use_after_close_cases(root: Path) -> list[tuple[str, object, Callable[[object], object]]]:
    lock = Lock.acquire(root / "a")
    incumbent = Incumbent.bind(root / "ctl", Lock.acquire(root / "b"))
    return [
        ("lock", lock, lambda o: o.generation),  # type: ignore[attr-defined]
        ("lock release", Lock.acquire(root / "c"), lambda o: o.release()),  # type: ignore[attr-defined]
        ("message", MessageHandle.new(MessageKind.BEGIN), lambda o: o.encode()),  # type: ignore[attr-defined]
        (
            "message field",
            MessageHandle.new(MessageKind.BEGIN),
            lambda o: o.set_bytes(Field.HANDOFF_ID, bytes(16)),  # type: ignore[attr-defined]
        ),
        ("reader", FrameReader(), lambda o: o.feed(b"x")),  # type: ignore[attr-defined]
        ("reader next", FrameReader(), lambda o: o.next()),  # type: ignore[attr-defined]
        ("supervisor", Supervisor(root / "s.ctl"), lambda o: o.set_journal("/tmp/j")),  # type: ignore[attr-defined]
        ("spec", SpawnSpec("/bin/true"), lambda o: o.add_arg("x")),  # type: ignore[attr-defined]
        ("inherited", libhandoff.detect(), lambda o: o.listener_names),  # type: ignore[attr-defined]
        ("incumbent", incumbent, lambda o: o.start(Quiet())),  # type: ignore[attr-defined]
        (
            "incumbent wait",
            Incumbent.bind(root / "ctl2", Lock.acquire(root / "d")),
            lambda o: o.wait(0),  # type: ignore[attr-defined]
        ),
    ]


def test_use_after_close_raises(short_tmp: Path) -> None:
    for what, obj, use in _use_after_close_cases(short_tmp):
        obj.close()  # type: ignore[attr-defined]
        assert obj.closed, what  # type: ignore[attr-defined]
        with pytest.raises(libhandoff.WrongStateError, match="closed"):
            use(obj)
        obj.close()  # type: ignore[attr-defined]  # idempotent
        with pytest.raises(libhandoff.WrongStateError), obj:  # type: ignore[attr-defined]
            pass


def test_with_closes(short_tmp: Path) -> None:
    with Supervisor(short_tmp / "ctl") as sup:
        assert not sup.closed
    assert sup.closed
    with pytest.raises(ValueError, match="boom"), FrameReader() as reader:
        raise ValueError("boom")
    assert reader.closed
    # A lock left by an exception is still released.
    with pytest.raises(ValueError, match="boom"), Lock.acquire(short_tmp / "d"):
        raise ValueError("boom")
    assert libhandoff.lock_holder(short_tmp / "d") == (False, 0)


def _no_leak(cycle: Callable[[int], None], cycles: int = CYCLES) -> None:
    cycle(-1)  # warm up (lazy loading, first-time allocations)
    gc.collect()
    before = open_fds()
    for i in range(cycles):
        cycle(i)
    gc.collect()
    assert open_fds() == before


def test_lock_cycles_leak_nothing(fast_tmp: Path) -> None:
    def cycle(i: int) -> None:
        if i % 2:
            Lock.acquire(fast_tmp).release()
        else:
            with Lock.acquire(fast_tmp):
                pass

    _no_leak(cycle)
    with Lock.acquire(fast_tmp) as lock:
        assert lock.generation == CYCLES + 2


def test_message_cycles_leak_nothing() -> None:
    frame = Begin(handoff_id=bytes(16)).encode()

    def cycle(_: int) -> None:
        with MessageHandle.new(MessageKind.BEGIN) as handle:
            handle.encode()
        libhandoff.messages.decode(frame)
        with FrameReader() as reader:
            reader.feed(frame)
            reader.next()

    _no_leak(cycle)


def test_supervisor_cycles_leak_nothing(fast_tmp: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def cycle(_: int) -> None:
        with Supervisor(fast_tmp / "ctl") as sup, SpawnSpec("/bin/true", ["a"], {"K": "V"}):
            sup.add_listener("kv", listener)  # the supervisor's own duplicate
            sup.set_journal(fast_tmp / "j")
            sup.set_timeouts(liveness=1, hello=1, kill_grace=1)

    with listener:
        _no_leak(cycle)


def test_incumbent_and_detect_cycles_leak_nothing(fast_tmp: Path) -> None:
    def cycle(i: int) -> None:
        with libhandoff.detect():
            pass
        with Lock.acquire(fast_tmp / "data") as lock, Incumbent.bind(fast_tmp / "ctl", lock) as inc:
            if i % 10 == 0:  # a serve thread too, now and then
                inc.start(Quiet())
                inc.stop()

    _no_leak(cycle)
    assert libhandoff.callbacks._registry == {}


def test_garbage_collection_frees(fast_tmp: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def cycle(_: int) -> None:
        sup = Supervisor(fast_tmp / "ctl")
        sup.add_listener("kv", listener)
        Lock.acquire(fast_tmp / "data")  # dropped at once: released
        inc = Incumbent.bind(fast_tmp / "ctl", Lock.acquire(fast_tmp / "data2"))
        inc.start(Quiet())
        del sup, inc

    with listener:
        _no_leak(cycle, 200)
    assert libhandoff.lock_holder(fast_tmp / "data") == (False, 0)
    assert libhandoff.lock_holder(fast_tmp / "data2") == (False, 0)
    assert libhandoff.callbacks._registry == {}
