"""What the handoff asks of the service: a drain, a seal, a resume, or the
news that serving ended; and the report the service fills in.

A callback gets a :class:`HookContext`, valid during the call. A service
that runs its own loop (:meth:`Incumbent.start_loop
<handoff.Incumbent.start_loop>`) takes a :class:`Request`, works on it
across as many loop iterations as it needs, and completes it once with
:meth:`Request.complete` or :meth:`Request.fail`.
"""

from __future__ import annotations

import contextlib
from enum import IntEnum
from types import TracebackType
from typing import Any

from . import _lib
from ._managed import Managed, encode_str
from .errors import HandoffError, HookFailedError, WrongStateError, check
from .moves import Descriptor, ItemKind, descriptor_of

__all__ = ["HookContext", "Request", "RequestKind", "ServeOutcome", "failure_reason"]


class ServeOutcome(IntEnum):
    """How serving ended (``HANDOFF_SERVE_*``)."""

    #: A successor took over: finish the remaining reads and exit 0.
    COMMITTED = 1
    #: Another process holds the lock: exit without writing.
    SUPERSEDED = 2
    #: Stopped by :meth:`Incumbent.stop` or ``close()``.
    STOPPED = 3


class RequestKind(IntEnum):
    """What a :class:`Request` asks (``HANDOFF_REQUEST_*``; ``NONE`` is
    :meth:`Incumbent.take_request <handoff.Incumbent.take_request>`
    returning None)."""

    #: Stop accepting, answer the work in progress, fsync; report with
    #: :meth:`Request.set_drained` before the deadline.
    DRAIN = 1
    #: Flush and close the writers; report with :meth:`Request.push_revision`.
    SEAL = 2
    #: The handoff rolled back: reopen what the seal closed, accept again.
    RESUME = 3
    #: Serving is over; :attr:`Request.outcome` says how. Nothing to complete.
    ENDED = 4


def failure_reason(exc: BaseException) -> str:
    """The reason the supervisor sees for a step failed by ``exc``:
    ``"<ExceptionType>: <message>"``, or just the message of a
    :class:`HookFailedError` (the way to fail on purpose)."""
    if isinstance(exc, HookFailedError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class HookContext:
    """A callback's view of the handoff, valid only during that callback
    (afterwards every method raises :class:`WrongStateError`)."""

    def __init__(self, ptr: Any) -> None:
        self._ptr = ptr

    def _live(self) -> Any:
        if self._ptr is None:
            raise WrongStateError("a hook context is valid only during its callback")
        return self._ptr

    @property
    def time_left_ms(self) -> int:
        """Milliseconds left before the step's deadline (0 when past it)."""
        return int(_lib.lib().handoff_hook_time_left_ms(self._live()))

    @property
    def time_left(self) -> float:
        """Seconds left before the step's deadline (0 when past it)."""
        return self.time_left_ms / 1000.0

    def set_drained(self, open_conns_remaining: int = 0, accept_closed: bool = True) -> None:
        """For a drain: what is left open and whether accepting stopped
        (the defaults when not called: 0 and True)."""
        check(
            _lib.lib().handoff_hook_set_drained,
            self._live(),
            open_conns_remaining,
            accept_closed,
        )

    @property
    def moves(self) -> bool:
        """For a drain: whether it moves descriptors (protocol v2: both
        peers speak it and the service asked with
        :meth:`Incumbent.set_moves_descriptors
        <handoff.Incumbent.set_moves_descriptors>`). Then :meth:`move`
        every connection the service keeps instead of closing it; otherwise
        close them, as without protocol v2. False for a seal."""
        return bool(_lib.lib().handoff_hook_moves(self._live()))

    @property
    def move_limit(self) -> int:
        """For a drain that moves: how many descriptors the successor can
        hold (it may be 0; moving more rolls the handoff back naming that
        limit, the service keeping every connection). 0 when the drain
        moves nothing, and for a seal."""
        return int(_lib.lib().handoff_hook_move_limit(self._live()))

    def move(
        self,
        kind: ItemKind,
        name: str,
        descriptor: Descriptor,
        *,
        unread: bytes = b"",
        unwritten: bytes = b"",
        state: bytes = b"",
    ) -> None:
        """For a drain that moves (:attr:`moves`): hand
        ``descriptor`` to the successor as an item of ``kind`` named
        ``name`` (UTF-8, at most 255 bytes), with the bytes read and not
        processed (``unread``), produced and not written (``unwritten``;
        any write they acknowledge must be durable first) and the service's
        own ``state`` (together at most 1,048,000 bytes).

        ``descriptor`` is a :class:`socket.socket` for a
        :attr:`ItemKind.CONNECTION` (or anything with ``fileno()``), or a
        descriptor number for a named :attr:`ItemKind.DESCRIPTOR` such as
        a memfd. The bytes are copied, the descriptor is not: keep the
        socket (or descriptor) open and neither read nor write it until
        the outcome. Once serving ends committed (an ENDED request), close
        it, never ``shutdown()``, which would end the connection for the
        successor too; on a RESUME it is the service's again (the library
        restored its file status flags, O_NONBLOCK included): carry on from
        the state kept for it.

        Refused, with nothing recorded: :class:`WrongStateError` when this
        drain moves nothing, :class:`InvalidArgumentError` for a bad kind,
        name, size or descriptor (a closed socket). Moving more than
        :attr:`move_limit` is recorded: the handoff then rolls back before
        anything moves, the supervisor naming the successor's limit."""
        fd = descriptor_of(descriptor)
        raw_name = encode_str(name, "an item name")
        unread, unwritten, state = bytes(unread), bytes(unwritten), bytes(state)
        check(
            _lib.lib().handoff_hook_move,
            self._live(),
            int(kind),
            raw_name,
            fd,
            unread,
            len(unread),
            unwritten,
            len(unwritten),
            state,
            len(state),
        )

    def push_revision(self, revision: int) -> None:
        """For a seal: append the last revision of the next shard."""
        check(_lib.lib().handoff_hook_push_revision, self._live(), revision)

    def set_fingerprint(self, fingerprint: bytes) -> None:
        """For a seal: the 32-byte fingerprint of the sealed data dir."""
        fingerprint = bytes(fingerprint)
        check(
            _lib.lib().handoff_hook_set_fingerprint,
            self._live(),
            fingerprint,
            len(fingerprint),
        )

    def seal_progress(self, shards_sealed: int, shards_total: int, last_revision: int) -> None:
        """For a seal: report progress of a long seal to the supervisor
        (sent at once)."""
        check(
            _lib.lib().handoff_hook_seal_progress,
            self._live(),
            shards_sealed,
            shards_total,
            last_revision,
        )


class Request(HookContext):
    """A request taken by the service's own loop, to complete exactly once.

    Fill in the report with the setters (:meth:`set_drained`, and
    :meth:`move` when :attr:`move_limit` allows it, for a drain;
    :meth:`push_revision`, :meth:`seal_progress`, :meth:`set_fingerprint`
    for a seal), then :meth:`complete` it, or :meth:`fail` it with a reason.
    Heartbeats go on meanwhile, so a drain may take many loop iterations
    (until :attr:`time_left` runs out). Used as a context manager it
    completes the request when the block ends, and fails it (with
    ``"<ExceptionType>: <message>"``) when the block raises; the exception
    still propagates. Once completed, or once its incumbent is closed,
    every method raises :class:`WrongStateError`. Use it from one thread at
    a time, like its incumbent.
    """

    def __init__(
        self,
        owner: Managed,
        ptr: Any,
        kind: RequestKind,
        outcome: ServeOutcome | None = None,
    ) -> None:
        super().__init__(ptr)
        # The library frees the request with its incumbent, and reuses it for
        # the next request of its kind: never touch it after completion.
        self._owner = owner
        self._kind = kind
        self._outcome = outcome
        self._done = kind is RequestKind.ENDED

    @property
    def kind(self) -> RequestKind:
        """What is asked."""
        return self._kind

    @property
    def outcome(self) -> ServeOutcome | None:
        """For ENDED, how serving ended; None for the other kinds."""
        return self._outcome

    @property
    def done(self) -> bool:
        """Whether it was completed (an ENDED request always is)."""
        return self._done

    def _live(self) -> Any:
        if self._done:
            raise WrongStateError(f"this {self._kind.name} request was already completed")
        self._owner._handle  # noqa: B018 (raises once the incumbent is closed)
        return self._ptr

    def complete(self) -> None:
        """Report the step done, with what the setters filled in."""
        self._finish(0)

    def fail(self, reason: str) -> None:
        """Report the step failed; the supervisor sees ``reason``. A failed
        drain or seal rolls the handoff back (a RESUME request follows)."""
        text = reason.replace("\0", "\\0").encode("utf-8", "replace")
        check(_lib.lib().handoff_hook_fail, self._live(), text)
        self._finish(HookFailedError.STATUS)

    def _finish(self, status: int) -> None:
        ptr = self._live()
        self._done = True  # even when the library refuses: it is not ours now
        check(_lib.lib().handoff_hook_complete, ptr, status)

    def __enter__(self) -> Request:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._done:
            return
        if exc is None:
            self.complete()
            return
        # A closed incumbent refuses the failure; the exception on its way
        # says more than that would.
        with contextlib.suppress(HandoffError):
            self.fail(failure_reason(exc))

    def __repr__(self) -> str:
        state = "done" if self._done else "pending"
        return f"<Request {self._kind.name} {state}>"
