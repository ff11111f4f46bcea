"""The supervisor: owns the listeners for the life of the service, starts
its first generation and hands it off to new ones.

::

    listener = socket.create_server(("127.0.0.1", 8080))
    with handoff.Supervisor("/run/kv.ctl") as sup:
        sup.add_listener("kv", listener)
        sup.set_journal("/var/lib/handoff/kv/state.bin")
        spec = handoff.SpawnSpec("/usr/bin/kv", ["--data-dir", "/srv/kv"])
        pid = sup.spawn_cold(spec)
        ...
        outcome = sup.perform_handoff(spec)
        if outcome.committed: ...   # outcome.successor_pid now serves

Every process the supervisor starts (the cold start, a committed
successor) is the caller's child to wait for (``os.waitpid``); a successor
of a rolled-back handoff is killed and reaped by the library.
:meth:`Supervisor.perform_handoff` blocks for the whole handoff with the
GIL released, so other Python threads keep running meanwhile.
"""

from __future__ import annotations

import ctypes
import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from ctypes import byref, c_bool, c_uint32
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

from . import _lib
from ._managed import Managed, PathLike, encode_path, encode_str, to_ms
from .errors import check

__all__ = ["Outcome", "PhaseTimings", "Recovery", "SpawnSpec", "Supervisor"]


class SpawnSpec(Managed):
    """What to run for a generation, and the handoff's budgets.

    ``binary`` is a path or a name looked up in ``PATH``; ``env`` is added to
    the supervisor's own environment. ``deadline`` is the whole handoff's
    budget and ``drain_grace`` the incumbent's drain budget, in seconds.
    """

    _FREE = "handoff_spawn_spec_free"
    _WHAT = "spawn spec"

    def __init__(
        self,
        binary: PathLike,
        args: Iterable[str | bytes] = (),
        env: Mapping[str, str] | None = None,
        *,
        deadline: float = 60.0,
        drain_grace: float = 25.0,
    ) -> None:
        out = ctypes.POINTER(_lib.handoff_spawn_spec)()
        check(_lib.lib().handoff_spawn_spec_new, encode_path(binary), byref(out))
        super().__init__(out)
        for arg in args:
            self.add_arg(arg)
        for key, value in (env or {}).items():
            self.set_env(key, value)
        self.set_budgets(deadline, drain_grace)

    def add_arg(self, arg: str | bytes) -> None:
        """Append an argument."""
        raw = os.fsencode(arg)
        check(_lib.lib().handoff_spawn_spec_add_arg, self._handle, encode_str(raw, "an argument"))

    def set_env(self, key: str, value: str) -> None:
        """Set an environment variable for the child."""
        check(
            _lib.lib().handoff_spawn_spec_set_env,
            self._handle,
            encode_str(os.fsencode(key), "a variable name"),
            encode_str(os.fsencode(value), "a variable value"),
        )

    def set_budgets(self, deadline: float, drain_grace: float) -> None:
        """The whole-handoff deadline and the drain budget, in seconds."""
        check(
            _lib.lib().handoff_spawn_spec_set_budgets,
            self._handle,
            to_ms(deadline, "deadline", limit=2**64 - 1, minimum=1),
            to_ms(drain_grace, "drain_grace", limit=2**64 - 1, minimum=1),
        )


@dataclass(frozen=True)
class PhaseTimings:
    """How long each phase of a handoff took, in microseconds."""

    #: Connect to the incumbent and exchange Hello.
    hello_us: int
    #: Spawn the successor and exchange its Hello.
    spawn_us: int
    #: PrepareHandoff to Drained.
    drain_us: int
    #: SealRequest to SealComplete.
    seal_us: int
    #: Begin to Ready.
    ready_us: int
    #: Commit and journal clear.
    commit_us: int
    #: The whole handoff.
    total_us: int


_E = TypeVar("_E", bound=IntEnum)


class Step(IntEnum):
    """A step of a handoff (``HANDOFF_STEP_*``): where a rollback happened."""

    NONE = 0
    HELLO = 1
    SPAWN = 2
    DRAIN = 3
    SEAL = 4
    READY = 5
    COMMIT = 6


class Party(IntEnum):
    """Who caused a rollback (``HANDOFF_PARTY_*``)."""

    NONE = 0
    INCUMBENT = 1
    SUCCESSOR = 2
    SUPERVISOR = 3


class Cause(IntEnum):
    """What caused a rollback (``HANDOFF_CAUSE_*``); see the header."""

    NONE = 0
    SPAWN = 1
    EXITED = 2
    CLOSED = 3
    SILENT = 4
    DEADLINE = 5
    SEAL_FAILED = 6
    PROTOCOL = 7
    IO = 8
    JOURNAL = 9
    CANCELLED = 10
    LIMIT = 11


def _enum(kind: type[_E], value: int, fallback: _E) -> _E:
    """A value from C as ``kind``; one this binding does not know yet (a newer
    library) as ``fallback``, the reason's text still saying what it is."""
    try:
        return kind(value)
    except ValueError:
        return fallback


@dataclass(frozen=True)
class Outcome:
    """The result of a handoff that reached the incumbent.

    ``committed`` false is a rollback: ``abort_reason`` says why for people,
    ``abort_step``, ``abort_party`` and ``abort_cause`` for programs (all
    ``NONE`` when committed). ``successor_pid`` is the new incumbent (the
    caller's child to wait for) when committed, else None.
    """

    committed: bool
    handoff_id: uuid.UUID
    incumbent_pid: int
    successor_pid: int | None
    abort_reason: str | None
    timings: PhaseTimings
    abort_step: Step = Step.NONE
    abort_party: Party = Party.NONE
    abort_cause: Cause = Cause.NONE


@dataclass(frozen=True)
class Recovery:
    """What :meth:`Supervisor.resume_from_journal` found: whether a handoff
    was in flight, and whether its successor had become the incumbent."""

    recovered: bool
    committed: bool


class Supervisor(Managed):
    """A supervisor for the service whose incumbent serves ``control_path``.

    Configure it from one thread; then :meth:`perform_handoff` may be called
    from any thread (a second call while one runs raises
    :class:`HandoffInProgressError` at once). Closing it closes its copies
    of the listeners.
    """

    _FREE = "handoff_supervisor_free"
    _WHAT = "supervisor"

    def __init__(self, control_path: PathLike) -> None:
        out = ctypes.POINTER(_lib.handoff_supervisor)()
        check(_lib.lib().handoff_supervisor_new, encode_path(control_path), byref(out))
        super().__init__(out)

    def add_listener(self, name: str, listener: socket.socket | int) -> None:
        """Hand the listening socket to every generation as ``name``. The
        supervisor keeps its own duplicate; the caller still owns
        ``listener``."""
        fd = listener if isinstance(listener, int) else listener.fileno()
        check(
            _lib.lib().handoff_supervisor_add_listener,
            self._handle,
            encode_str(name, "a listener name"),
            fd,
        )

    def set_journal(self, path: PathLike) -> None:
        """Record each step of a handoff in the journal at ``path``."""
        check(_lib.lib().handoff_supervisor_set_journal, self._handle, encode_path(path))

    def set_timeouts(
        self,
        *,
        liveness: float | None = None,
        hello: float | None = None,
        kill_grace: float | None = None,
    ) -> None:
        """Timeouts in seconds; None keeps the default (liveness 10, hello
        5, kill grace 2)."""

        def ms(value: float | None, what: str) -> int:
            return 0 if value is None else to_ms(value, what, minimum=1)

        check(
            _lib.lib().handoff_supervisor_set_timeouts,
            self._handle,
            ms(liveness, "liveness"),
            ms(hello, "hello"),
            ms(kill_grace, "kill_grace"),
        )

    def spawn_cold(self, spec: SpawnSpec) -> int:
        """Start the first generation (a cold start, with the listeners);
        its pid. The child is the caller's to wait for."""
        pid = c_uint32()
        check(_lib.lib().handoff_supervisor_spawn_cold, self._handle, spec._handle, byref(pid))
        return int(pid.value)

    def perform_handoff(self, spec: SpawnSpec) -> Outcome:
        """Hand the service off to a new process run from ``spec``.

        A rollback is an :class:`Outcome` with ``committed`` false; an
        exception means the handoff never started (no incumbent answering:
        :class:`IoError`; one already running: :class:`HandoffInProgressError`).
        """
        out = ctypes.POINTER(_lib.handoff_outcome)()
        lib = _lib.lib()
        check(lib.handoff_supervisor_perform_handoff, self._handle, spec._handle, byref(out))
        try:
            raw_id = ctypes.create_string_buffer(16)
            check(lib.handoff_outcome_handoff_id, out, raw_id)
            t = _lib.handoff_phase_timings()
            check(lib.handoff_outcome_timings, out, byref(t))
            committed = bool(lib.handoff_outcome_committed(out))
            reason = lib.handoff_outcome_abort_reason(out)
            successor = int(lib.handoff_outcome_successor_pid(out))
            return Outcome(
                committed=committed,
                handoff_id=uuid.UUID(bytes=raw_id.raw),
                incumbent_pid=int(lib.handoff_outcome_incumbent_pid(out)),
                successor_pid=successor if committed and successor else None,
                abort_reason=reason.decode("utf-8", "replace") if reason is not None else None,
                timings=PhaseTimings(
                    hello_us=t.hello_us,
                    spawn_us=t.spawn_us,
                    drain_us=t.drain_us,
                    seal_us=t.seal_us,
                    ready_us=t.ready_us,
                    commit_us=t.commit_us,
                    total_us=t.total_us,
                ),
                abort_step=_enum(Step, lib.handoff_outcome_abort_step(out), Step.NONE),
                abort_party=_enum(Party, lib.handoff_outcome_abort_party(out), Party.NONE),
                abort_cause=_enum(Cause, lib.handoff_outcome_abort_cause(out), Cause.NONE),
            )
        finally:
            lib.handoff_outcome_free(out)

    def cancel(self) -> None:
        """Cancel the handoff :meth:`perform_handoff` runs on another thread:
        it rolls back at once, its outcome's ``abort_cause`` is
        ``Cause.CANCELLED``. Any thread; a no-op when no handoff runs."""
        _lib.lib().handoff_supervisor_cancel(self._handle)

    def resume_from_journal(self) -> Recovery:
        """After a supervisor restart: finish or roll back a handoff the
        journal shows in flight, then clear the journal."""
        recovered, committed = c_bool(), c_bool()
        check(
            _lib.lib().handoff_supervisor_resume_from_journal,
            self._handle,
            byref(recovered),
            byref(committed),
        )
        return Recovery(bool(recovered.value), bool(committed.value))
