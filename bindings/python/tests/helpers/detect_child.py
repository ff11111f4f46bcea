"""Run by the tests as a supervised cold start: reports what detect() found
as JSON to the path in argv[1]."""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import socket
import sys

import libhandoff

VARS = libhandoff.listeners.SUCCESSOR_VARIABLES


def flags(sock: socket.socket) -> dict[str, bool]:
    return {
        "nonblocking": bool(fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK),
        "cloexec": bool(fcntl.fcntl(sock.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC),
    }


def main() -> None:
    report: dict[str, object] = {"before": sorted(v for v in VARS if v in os.environ)}
    if "--default-timeout" in sys.argv:
        socket.setdefaulttimeout(5.0)
    with libhandoff.detect() as inherited:
        libc = ctypes.CDLL(None)
        libc.getenv.restype = ctypes.c_char_p
        report["after_python"] = sorted(v for v in VARS if v in os.environ)
        report["after_c"] = sorted(v for v in VARS if libc.getenv(v.encode()) is not None)
        report["is_successor"] = inherited.is_successor
        report["names"] = inherited.listener_names
        tcp = inherited.take_listener("kv")
        report["tcp"] = {
            "family": tcp.family.name,
            "type": tcp.type.name,
            "port": tcp.getsockname()[1],
            **flags(tcp),
        }
        try:
            inherited.take_listener("kv")
        except libhandoff.ListenerError as e:
            report["second_take"] = type(e).__name__
        try:
            inherited.take_listener("dgram", libhandoff.ListenerKind.TCP)
        except libhandoff.ListenerError as e:
            report["wrong_kind"] = type(e).__name__
        udp = inherited.take_listener("dgram", libhandoff.ListenerKind.UDP)
        report["udp"] = {"family": udp.family.name, "type": udp.type.name}
        unix = inherited.take_listener("local", libhandoff.ListenerKind.UNIX)
        report["unix"] = {"family": unix.family.name, "path": unix.getsockname()}
        report["blocking_listener"] = flags(inherited.take_listener("blocking"))
        report["second_detect_names"] = libhandoff.detect().listener_names
    with open(sys.argv[1] + ".tmp", "w") as out:
        json.dump(report, out)
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])


if __name__ == "__main__":
    main()
