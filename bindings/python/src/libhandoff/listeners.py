"""Role detection and the inherited listeners (DESIGN §3).

:func:`detect` asks the library what this process inherited: whether it was
spawned as a successor, and the listeners at fd 3, 4, ... by name. It also
drops ``HANDOFF_ROLE``, ``HANDOFF_SOCK_FD``, ``LISTEN_FDS``,
``LISTEN_FDNAMES``, ``LISTEN_PID`` and ``HANDOFF_CONTROL_SOCKET`` from
``os.environ`` (the library
removes them from the C environment; Python keeps a copy of its own), so
that child processes do not inherit them. Call it early, before other
threads start.

Listeners come back as :class:`socket.socket` objects. Their open file
description, and with it the ``O_NONBLOCK`` flag, is shared with the
supervisor and every other generation: the binding never changes the flag
(even when :func:`socket.setdefaulttimeout` is set), and services must work
whichever way it is set: wait for readability (``selectors``, ``select``,
asyncio) before ``accept()``, and treat ``BlockingIOError`` from it as "no
connection after all".
"""

from __future__ import annotations

import ctypes
import os
import socket
from ctypes import byref, c_char_p, c_int

from . import _lib
from ._managed import Managed, encode_str
from ._sockets import ListenerKind, socket_from_fd
from .errors import check
from .successor import Successor

__all__ = ["SUCCESSOR_VARIABLES", "Inherited", "ListenerKind", "detect"]

#: The variables a supervisor sets for a generation; removed by detect().
SUCCESSOR_VARIABLES = (
    "HANDOFF_ROLE",
    "HANDOFF_SOCK_FD",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "LISTEN_PID",
    "HANDOFF_CONTROL_SOCKET",
)


class Inherited(Managed):
    """What this process inherited: its role and its listeners.

    Created by :func:`detect`. Closing it closes every listener not taken
    (and a successor's control socket, unless a :class:`Successor` took it).
    Not synchronised: use it from one thread at a time.
    """

    _FREE = "handoff_inherited_free"
    _WHAT = "inherited set"

    @property
    def is_successor(self) -> bool:
        """Whether this process was spawned as a successor."""
        return bool(_lib.lib().handoff_inherited_is_successor(self._handle))

    @property
    def listener_names(self) -> list[str]:
        """The names of the inherited listeners in descriptor order (fd 3,
        4, ...), taken ones included; ``"unknown"`` for an unnamed one."""
        lib = _lib.lib()
        handle = self._handle
        names = []
        for index in range(lib.handoff_inherited_listener_count(handle)):
            name = c_char_p()
            check(lib.handoff_inherited_listener_name, handle, index, byref(name))
            names.append((name.value or b"").decode("utf-8", "replace"))
        return names

    def take_listener(self, name: str, kind: ListenerKind = ListenerKind.TCP) -> socket.socket:
        """Take the listener called ``name`` as a socket of ``kind``: the
        socket is the caller's from now on (close-on-exec, O_NONBLOCK as it
        was). Raises :class:`ListenerError` when no listener of that name is
        left or it is of another kind (it then stays here)."""
        fd = c_int(-1)
        check(
            _lib.lib().handoff_inherited_take_listener,
            self._handle,
            encode_str(name, "a listener name"),
            int(kind),
            byref(fd),
        )
        return socket_from_fd(fd.value)

    def successor(self) -> Successor:
        """Start the successor's side of the handoff (see
        :class:`~libhandoff.Successor`). Raises :class:`WrongStateError` on a
        cold start. The control socket and the listeners move into the
        successor; this object keeps only their names and must still be
        closed."""
        out = ctypes.POINTER(_lib.handoff_successor)()
        check(_lib.lib().handoff_successor_new, self._handle, byref(out))
        return Successor(out)


def detect() -> Inherited:
    """Detect this process's role and adopt what it inherited.

    Malformed variables raise :class:`EnvironmentVariableError`, a listener
    that is not an open socket :class:`ListenerError`. A second call finds
    nothing (a cold start without listeners)."""
    out = ctypes.POINTER(_lib.handoff_inherited)()
    try:
        check(_lib.lib().handoff_inherited_detect, byref(out))
    finally:
        # The library removed them from the C environment (on success and
        # on failure alike); drop Python's copy too.
        for name in SUCCESSOR_VARIABLES:
            os.environ.pop(name, None)
    return Inherited(out)
