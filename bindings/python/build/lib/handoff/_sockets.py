"""Listener sockets from the library's descriptors, for both
:class:`~handoff.Inherited` and :class:`~handoff.Successor` (here, so that
neither module needs the other's)."""

from __future__ import annotations

import fcntl
import os
import socket
from enum import IntEnum

__all__ = ["ListenerKind", "socket_from_fd"]


class ListenerKind(IntEnum):
    """What a listener is taken as (``HANDOFF_LISTENER_*``)."""

    TCP = 0
    UDP = 1
    UNIX = 2


def socket_from_fd(fd: int) -> socket.socket:
    """Wrap a descriptor the caller owns as a socket, leaving its file
    status flags (O_NONBLOCK) exactly as they were."""
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        sock = socket.socket(fileno=fd)
        # With socket.setdefaulttimeout() set, the constructor makes the
        # descriptor non-blocking; that flag is shared with the incumbent.
        if fcntl.fcntl(fd, fcntl.F_GETFL) != flags:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        return sock
    except BaseException:
        os.close(fd)
        raise
