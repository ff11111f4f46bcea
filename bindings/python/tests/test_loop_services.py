"""Services whose own event loop drives the handoff (DESIGN §9), handed off
for real by the Python Supervisor: one loop is ``selectors``
(helpers/selectors_service.py), the other asyncio
(helpers/asyncio_service.py), neither with a thread of its own. Each holds
its drain across loop iterations until the test lets it go, which is how
the tests reach a drain that outlasts the supervisor's liveness timeout, a
handoff cancelled mid-drain, and a successor stopped while it waits for
Begin."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import HERE, reap

import libhandoff
from libhandoff import Cause, Outcome, Party, SpawnSpec, Supervisor

SERVICES = {
    "selectors": HERE / "helpers" / "selectors_service.py",
    "asyncio": HERE / "helpers" / "asyncio_service.py",
}
# Above the incumbent's 2 s heartbeat period: a drain held past it is only
# survived if heartbeats flow while the service's loop holds the request.
SUPERVISOR_LIVENESS = 3.0


def ping(port: int) -> tuple[int, int]:
    """(pid, generation) of whoever answers on ``port``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"PING\n")
        answer = sock.makefile("rb").readline().decode().split()
    assert answer[0] == "PONG", answer
    return int(answer[1]), int(answer[2])


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """A bound on a wait, so that a broken service fails the test instead of
    hanging it; never an assertion about how long something took."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


class LoopCluster:
    """A supervisor (this process) with a listener named ``svc``; every
    generation's stderr goes to ``<root>/gen-N-<driver>.log``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.control = root / "svc.ctl"
        self.events_path = root / "events.jsonl"
        self.release = root / "release-drain"
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.listener.getsockname()[1]
        self.supervisor = Supervisor(self.control)
        self.supervisor.add_listener("svc", self.listener)
        self.supervisor.set_timeouts(liveness=SUPERVISOR_LIVENESS, kill_grace=1.0)
        self.children: list[int] = []
        self.generation = 0

    def spec(self, driver: str) -> SpawnSpec:
        command = [
            sys.executable,
            str(SERVICES[driver]),
            "--data-dir",
            str(self.data),
            "--control-socket",
            str(self.control),
            "--events",
            str(self.events_path),
            "--hold-drain-until",
            str(self.release),
        ]
        self.generation += 1
        log = self.root / f"gen-{self.generation}-{driver}.log"
        # exec keeps the pid (LISTEN_PID) and the inherited descriptors.
        script = f"exec {shlex.join(command)} 2>>{shlex.quote(str(log))}"
        path = [str(HERE / "helpers"), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {"PYTHONPATH": os.pathsep.join(path)}
        return SpawnSpec("/bin/sh", ["-c", script], env, deadline=60.0, drain_grace=30.0)

    def spawn_cold(self, driver: str) -> int:
        with self.spec(driver) as spec:
            pid = self.supervisor.spawn_cold(spec)
        self.children.append(pid)
        wait_until(lambda: self.has_event(pid, "serving"), f"pid {pid} serving")
        return pid

    @contextlib.contextmanager
    def handoff_running(self, driver: str) -> Iterator[dict[str, Outcome]]:
        """A handoff on another thread; its outcome is in the dict after."""
        result: dict[str, Outcome] = {}
        spec = self.spec(driver)

        def perform() -> None:
            result["outcome"] = self.supervisor.perform_handoff(spec)

        thread = threading.Thread(target=perform)
        thread.start()
        try:
            yield result
        finally:
            self.release.touch()  # a held drain must not outlive the test
            thread.join()
            spec.close()
            if (outcome := result.get("outcome")) and outcome.successor_pid:
                self.children.append(outcome.successor_pid)

    def events(self) -> list[dict[str, object]]:
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines()]

    def events_of(self, pid: int) -> list[str]:
        return [str(e["event"]) for e in self.events() if e["pid"] == pid]

    def has_event(self, pid: int, name: str) -> bool:
        return name in self.events_of(pid)

    def event(self, pid: int, name: str) -> dict[str, object]:
        """What ``pid`` reported with event ``name``."""
        return next(e for e in self.events() if e["pid"] == pid and e["event"] == name)

    def event_pid(self, name: str, other_than: int) -> int:
        """The pid of the process (not ``other_than``) that reported ``name``."""

        def others() -> list[int]:
            return [
                int(str(e["pid"]))
                for e in self.events()
                if e["event"] == name and e["pid"] != other_than
            ]

        wait_until(lambda: bool(others()), f"another process reporting {name}")
        return others()[0]

    def state(self) -> dict[str, int]:
        state: dict[str, int] = json.loads((self.data / "state.json").read_text())
        return state

    def logs(self) -> str:
        parts = [
            f"---- {p.name}\n{p.read_text(errors='replace')}"
            for p in sorted(self.root.glob("gen-*.log"))
        ]
        return "\n".join([*parts, "---- events", *map(json.dumps, self.events())])

    def close(self) -> None:
        self.release.touch()
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            reap(pid, 5.0)
        self.supervisor.close()
        self.listener.close()


@pytest.fixture
def cluster(short_tmp: Path, request: pytest.FixtureRequest) -> Iterator[LoopCluster]:
    c = LoopCluster(short_tmp)
    try:
        yield c
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(c.logs(), file=sys.stderr)
        c.close()


@pytest.mark.parametrize(("first", "second"), [("selectors", "asyncio"), ("asyncio", "selectors")])
def test_a_drain_held_past_the_liveness_timeout_commits(
    cluster: LoopCluster, first: str, second: str
) -> None:
    old = cluster.spawn_cold(first)
    assert ping(cluster.port) == (old, 1)
    with cluster.handoff_running(second) as result:
        wait_until(lambda: cluster.has_event(old, "drain"), "the drain request")
        # The loop holds the drain; only the library's heartbeats keep the
        # supervisor from taking the incumbent for dead meanwhile.
        time.sleep(SUPERVISOR_LIVENESS + 1.5)
        assert "outcome" not in result  # still draining, not rolled back
    outcome = result["outcome"]
    assert outcome.committed, f"{outcome.abort_reason}\n{cluster.logs()}"
    new = outcome.successor_pid
    assert new is not None
    # The old incumbent took ENDED, stepped down and exited 0.
    assert reap(old, 15.0) == 0, cluster.logs()
    cluster.children.remove(old)
    assert cluster.events_of(old) == ["serving", "drain", "drained", "seal", "ended"]
    assert int(str(cluster.event(old, "drained")["iterations"])) > 1  # held across iterations
    assert cluster.event(old, "ended")["outcome"] == "COMMITTED"
    assert cluster.events_of(new) == ["waiting-for-begin", "took-over"]
    assert ping(cluster.port) == (new, 2)
    assert cluster.state() == {"owner": new, "generation": 2}


@pytest.mark.parametrize("driver", SERVICES)
def test_a_handoff_cancelled_mid_drain_resumes(cluster: LoopCluster, driver: str) -> None:
    old = cluster.spawn_cold(driver)
    with cluster.handoff_running(driver) as result:
        wait_until(lambda: cluster.has_event(old, "drain"), "the drain request")
        cluster.supervisor.cancel()
        # The handoff is over for the supervisor; the incumbent still holds
        # its drain, and resumes once it lets it go.
        wait_until(lambda: "outcome" in result, "the cancelled handoff's outcome")
        assert not cluster.has_event(old, "resume")
    outcome = result["outcome"]
    assert not outcome.committed
    assert outcome.successor_pid is None
    assert (outcome.abort_party, outcome.abort_cause) == (Party.SUPERVISOR, Cause.CANCELLED)
    wait_until(lambda: cluster.has_event(old, "resume"), "the resume request")
    assert cluster.events_of(old) == ["serving", "drain", "drained", "resume"]
    # Still the incumbent, with the lock it never released; the successor
    # never began, so it never wrote anything.
    assert ping(cluster.port) == (old, 1)
    assert cluster.state() == {"owner": old, "generation": 1}
    assert libhandoff.lock_holder(cluster.data) == (True, old)
    # And it hands off when asked again (the drain is not held any more).
    with cluster.handoff_running(driver) as result:
        pass
    assert result["outcome"].committed, cluster.logs()
    assert ping(cluster.port)[1] == 2


@pytest.mark.parametrize("driver", SERVICES)
def test_a_successor_stopped_while_waiting_for_begin(cluster: LoopCluster, driver: str) -> None:
    old = cluster.spawn_cold(driver)
    with cluster.handoff_running(driver) as result:
        # The incumbent holds its drain, so Begin cannot come yet.
        wait_until(lambda: cluster.has_event(old, "drain"), "the drain request")
        waiting = cluster.event_pid("waiting-for-begin", other_than=old)
        os.kill(waiting, signal.SIGTERM)
        wait_until(lambda: cluster.has_event(waiting, "begin-wait-cancelled"), "the cancelled wait")
    outcome = result["outcome"]
    assert not outcome.committed, cluster.logs()
    # The supervisor sees the successor's connection close or its exit,
    # whichever comes first.
    assert outcome.abort_party is Party.SUCCESSOR
    assert outcome.abort_cause in (Cause.CLOSED, Cause.EXITED)
    assert cluster.events_of(waiting) == ["waiting-for-begin", "begin-wait-cancelled"]
    wait_until(lambda: cluster.has_event(old, "resume"), "the resume request")
    # The incumbent serves on (under a new generation if it had sealed and
    # so released the lock); the successor never wrote the data directory.
    assert ping(cluster.port)[0] == old
    assert libhandoff.lock_holder(cluster.data) == (True, old)
    assert cluster.state() == {"owner": old, "generation": 1}
