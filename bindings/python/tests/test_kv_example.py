"""The Python example service against its contract (examples/README.md):
the log format, replay, the line protocol and stopping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import kvlog  # examples/python, on the path through conftest
import pytest
from conftest import REPO, KvCluster, reap
from kvclient import pipeline, request

import libhandoff

FOO_BAR = bytes.fromhex("13000000137ce6da01010000000000000003000300666f6f626172")
FOO_BAZ = bytes.fromhex("13000000a12284410102000000000000000300030066 6f 6f 62 61 7a")


def test_log_records_match_the_worked_example() -> None:
    assert kvlog.crc32c(b"123456789") == 0xE3069283
    assert kvlog.encode_record(1, b"foo", b"bar") == FOO_BAR
    assert kvlog.encode_record(2, b"foo", b"baz") == FOO_BAZ


def test_a_torn_tail_is_cut_on_start(cluster: KvCluster) -> None:
    cluster.data_dir.mkdir()
    log = cluster.data_dir / "kv.log"
    log.write_bytes(FOO_BAR + FOO_BAZ + FOO_BAR[:10])
    cluster.spawn_cold("py")
    assert request(cluster.port, "GET foo") == "VALUE baz"
    assert log.stat().st_size == 54
    assert "truncated a torn tail of 10 bytes" in cluster.logs()
    assert "generation 1, 2 record(s)" in cluster.logs()


def test_a_log_of_another_format_is_refused(cluster: KvCluster) -> None:
    cluster.data_dir.mkdir()
    log = cluster.data_dir / "kv.log"
    body = bytearray(FOO_BAR[8:])
    body[0] = 2  # an op this format does not have, with a valid checksum
    record = len(body).to_bytes(4, "little") + kvlog.crc32c(bytes(body)).to_bytes(4, "little")
    log.write_bytes(FOO_BAR + record + body)
    before = log.read_bytes()
    with cluster.spec("py") as spec:
        pid = cluster.supervisor.spawn_cold(spec)
    cluster.children.append(pid)
    assert reap(pid, 15) == 1
    cluster.children.remove(pid)
    assert log.read_bytes() == before
    assert "refusing to open" in cluster.logs()


def test_line_protocol(cluster: KvCluster) -> None:
    pid = cluster.spawn_cold("py")
    lines = [
        "SET k v",
        "GET k",
        "GET missing",
        "PING",
        "",
        "NOPE",
        "GET",
        "SET a b c",
        "GET  k",
        "GET k ",
        "SET k " + "v" * 257,
        "SET k\tv x",
        "PING\r",
        "x" * 1025,
        "GET k",
    ]
    answers = pipeline(cluster.port, lines)
    assert answers == [
        "OK 1",
        "VALUE v",
        "NOTFOUND",
        f"PONG {pid} python",
        "ERR empty line",
        "ERR unknown command",
        "ERR wrong number of arguments",
        "ERR wrong number of arguments",
        "ERR fields are separated by exactly one space",
        "ERR fields are separated by exactly one space",
        "ERR invalid value (1 to 256 printable ASCII bytes, no spaces)",
        "ERR invalid key (1 to 256 printable ASCII bytes, no spaces)",
        f"PONG {pid} python",
        "ERR line too long (at most 1024 bytes)",
        "VALUE v",
    ]


def test_sigterm_stops_cleanly(cluster: KvCluster) -> None:
    pid = cluster.spawn_cold("py")
    assert request(cluster.port, "SET k v") == "OK 1"
    os.kill(pid, signal.SIGTERM)
    assert reap(pid, 15) == 0
    cluster.children.remove(pid)
    assert libhandoff.lock_holder(cluster.data_dir) == (False, 0)
    assert "exiting with status 0" in cluster.logs()
    # The next generation finds the write.
    cluster.spawn_cold("py")
    assert request(cluster.port, "GET k") == "VALUE v"
    assert request(cluster.port, "SET k w") == "OK 2"


def test_a_nonblocking_listener_is_served_and_left_so(cluster: KvCluster) -> None:
    cluster.listener.setblocking(False)  # shared by every generation
    first = cluster.spawn_cold("py")
    answers = pipeline(cluster.port, [f"SET k{i} v{i}" for i in range(20)])
    assert answers == ["OK 1"] * 20
    outcome = cluster.handoff("py")
    assert outcome.committed, cluster.logs()
    assert reap(first, 15) == 0
    cluster.children.remove(first)
    assert pipeline(cluster.port, [f"GET k{i}" for i in range(20)]) == [
        f"VALUE v{i}" for i in range(20)
    ]
    assert cluster.listener.getblocking() is False


@pytest.mark.parametrize("args", [["--bogus"], ["--data-dir", "/tmp/x"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "python" / "kv.py"), *args],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
