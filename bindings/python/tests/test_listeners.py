"""Role detection and inherited listeners, in processes the supervisor
starts with real descriptors and environment."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HERE, reap

import libhandoff

DETECT_CHILD = HERE / "helpers" / "detect_child.py"
VARS = list(libhandoff.listeners.SUCCESSOR_VARIABLES)


def _spawn_detect(root: Path, *flags: str) -> tuple[dict, socket.socket]:
    tcp = socket.create_server(("127.0.0.1", 0))
    tcp.setblocking(False)  # shared with the child: it must stay so
    blocking = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    local = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    local.bind(str(root / "local.sock"))
    local.listen()
    report_path = root / "report.json"
    try:
        with libhandoff.Supervisor(root / "ctl") as sup:
            for name, sock in (("kv", tcp), ("dgram", udp), ("local", local)):
                sup.add_listener(name, sock)
            sup.add_listener("blocking", blocking.fileno())
            args = [str(DETECT_CHILD), str(report_path), *flags]
            with libhandoff.SpawnSpec(sys.executable, args) as spec:
                pid = sup.spawn_cold(spec)
        assert reap(pid, 20) == 0
        report = json.loads(report_path.read_text())
    finally:
        for sock in (blocking, udp, local):
            sock.close()
    return report, tcp


@pytest.mark.parametrize("flags", [(), ("--default-timeout",)])
def test_cold_start_with_listeners(short_tmp: Path, flags: tuple[str, ...]) -> None:
    report, tcp = _spawn_detect(short_tmp, *flags)
    with tcp:
        assert report["before"] == ["LISTEN_FDNAMES", "LISTEN_FDS", "LISTEN_PID"]
        assert report["after_python"] == []
        assert report["after_c"] == []
        assert report["is_successor"] is False
        assert report["names"] == ["kv", "dgram", "local", "blocking"]
        assert report["tcp"] == {
            "family": "AF_INET",
            "type": "SOCK_STREAM",
            "port": tcp.getsockname()[1],
            "nonblocking": True,
            "cloexec": True,
        }
        # O_NONBLOCK is shared: the child changed nothing, whatever Python's
        # default timeout.
        assert tcp.getblocking() is False
        assert report["blocking_listener"] == {"nonblocking": False, "cloexec": True}
        assert report["second_take"] == "ListenerError"
        assert report["wrong_kind"] == "ListenerError"
        assert report["udp"] == {"family": "AF_INET", "type": "SOCK_DGRAM"}
        assert report["unix"] == {"family": "AF_UNIX", "path": str(short_tmp / "local.sock")}
        assert report["second_detect_names"] == []


def _detect_in_child(env: dict[str, str], setup: str = "") -> dict:
    script = (
        "import json, os, libhandoff\n"
        f"{setup}\n"
        "out = {}\n"
        "try:\n"
        "    with libhandoff.detect() as inh:\n"
        "        out['names'] = inh.listener_names\n"
        "        out['successor'] = inh.is_successor\n"
        "except libhandoff.HandoffError as e:\n"
        "    out['error'] = type(e).__name__\n"
        "    out['message'] = str(e)\n"
        f"out['env_left'] = [v for v in {VARS!r} if v in os.environ]\n"
        "print(json.dumps(out))\n"
    )
    full_env = {k: v for k, v in os.environ.items() if k not in VARS}
    full_env.update(env)
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(result.stdout)


def test_malformed_variables_raise_and_are_dropped() -> None:
    out = _detect_in_child({"HANDOFF_ROLE": "bogus", "LISTEN_FDS": "0"})
    assert out["error"] == "EnvironmentVariableError"
    assert "HANDOFF_ROLE" in out["message"]
    assert out["env_left"] == []


def test_listeners_meant_for_another_process_are_not_adopted() -> None:
    out = _detect_in_child({"LISTEN_FDS": "1", "LISTEN_FDNAMES": "kv", "LISTEN_PID": "1"})
    assert out == {"names": [], "successor": False, "env_left": []}


def test_a_descriptor_that_is_not_a_socket_is_refused() -> None:
    # fd 3, where the listener would be, is a pipe.
    setup = "r, w = os.pipe()\nos.dup2(r, 3)"
    out = _detect_in_child({"LISTEN_FDS": "1", "LISTEN_FDNAMES": "kv"}, setup)
    assert out["error"] == "ListenerError"
    assert out["env_left"] == []
