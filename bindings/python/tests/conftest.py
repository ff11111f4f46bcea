"""Shared fixtures: the repository's paths, short temporary directories (Unix
socket paths are limited to 108 bytes), and a supervised key-value cluster
whose processes are always killed and reaped, whatever the test did."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _enclosing_repo() -> Path | None:
    for candidate in [HERE, *HERE.parents]:
        if (candidate / "include" / "handoff.h").is_file():
            return candidate
    return None


def _find_repo() -> Path:
    """The tree these tests sit in or, for a copy of them run against an
    installed wheel (scripts/test-wheel.sh), $HANDOFF_SOURCE_TREE: the
    header, the vectors and the examples are read from there."""
    if IN_TREE is not None:
        return IN_TREE
    given = os.environ.get("HANDOFF_SOURCE_TREE")
    if given and (Path(given) / "include" / "handoff.h").is_file():
        return Path(given)
    raise RuntimeError(
        "run the tests inside the libhandoff repository, or set HANDOFF_SOURCE_TREE to it"
        f" (no include/handoff.h above {HERE} or in {given!r})"
    )


IN_TREE = _enclosing_repo()
REPO = _find_repo()
HEADER = REPO / "include" / "handoff.h"
VECTORS = REPO / "tests" / "vectors"
KV_PY = REPO / "examples" / "python" / "kv.py"
KV_C = REPO / "examples" / "c" / "build" / "kv-c"
# The Python example's modules (kvlog) are tested directly too.
sys.path.append(str(KV_PY.parent))

# In the tree, use its library unless told otherwise (the Makefile sets it
# too); a copy run against an installed wheel loads the wheel's own.
if IN_TREE is not None and "HANDOFF_LIBRARY" not in os.environ:
    built = REPO / "target" / "release" / "libhandoff.so"
    if built.exists():
        os.environ["HANDOFF_LIBRARY"] = str(built)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A fresh directory with a short path, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="ho-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fast_tmp() -> Iterator[Path]:
    """As short_tmp, on a tmpfs when there is one: for tests that repeat
    fsyncing operations (lock cycles) a thousand times and check
    descriptors, not durability."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else "/tmp"
    path = Path(tempfile.mkdtemp(prefix="ho-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def open_fds() -> set[str]:
    """This process's open descriptors."""
    return set(os.listdir("/proc/self/fd"))


def reap(pid: int, timeout: float) -> int | None:
    """Wait up to ``timeout`` for child ``pid``: its exit code (negative:
    killed by that signal), or None if it is still running."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if got == pid:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


class KvCluster:
    """A supervisor (this process) with a listener named ``kv`` on
    127.0.0.1, handing the example service off between generations.
    Every generation's stderr goes to ``<dir>/gen-N.log``."""

    def __init__(self, root: Path) -> None:
        import libhandoff

        self.root = root
        self.data_dir = root / "data"
        self.control = root / "kv.ctl"
        self.journal = root / "journal" / "state.bin"
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self.listener.getsockname()[1]
        self.supervisor = libhandoff.Supervisor(self.control)
        self.supervisor.add_listener("kv", self.listener)
        self.supervisor.set_journal(self.journal)
        self.supervisor.set_timeouts(kill_grace=1.0)
        self.children: list[int] = []
        self.generation = 0

    def spec(self, impl: str, *extra: str, drain_grace: float = 10.0):
        """How to run one generation of ``impl`` ("py" or "c")."""
        import libhandoff

        if impl == "py":
            command = [sys.executable, str(KV_PY)]
        else:
            if not KV_C.exists():
                pytest.fail(f"{KV_C} is not built: run `make build` at the top of the tree")
            command = [str(KV_C)]
        command += [
            "--data-dir",
            str(self.data_dir),
            "--control-socket",
            str(self.control),
            *extra,
        ]
        self.generation += 1
        log = self.root / f"gen-{self.generation}-{impl}.log"
        # exec keeps the pid (LISTEN_PID) and the inherited descriptors.
        script = f"exec {shlex.join(command)} 2>>{shlex.quote(str(log))}"
        return libhandoff.SpawnSpec(
            "/bin/sh", ["-c", script], deadline=30.0, drain_grace=drain_grace
        )

    def spawn_cold(self, impl: str, *extra: str) -> int:
        with self.spec(impl, *extra) as spec:
            pid = self.supervisor.spawn_cold(spec)
        self.children.append(pid)
        wait_serving(self.port, pid)
        return pid

    def handoff(self, impl: str, *extra: str):
        with self.spec(impl, *extra) as spec:
            outcome = self.supervisor.perform_handoff(spec)
        if outcome.successor_pid:
            self.children.append(outcome.successor_pid)
        return outcome

    def logs(self) -> str:
        parts = []
        for path in sorted(self.root.glob("gen-*.log")):
            parts.append(f"---- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def close(self) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            reap(pid, 5.0)
        self.supervisor.close()
        self.listener.close()


def wait_serving(port: int, pid: int, timeout: float = 15.0) -> None:
    """Wait until PING on ``port`` is answered by ``pid``."""
    from kvclient import request

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            last = request(port, "PING", timeout=2.0)
            if last.split()[:2] == ["PONG", str(pid)]:
                return
        except OSError as e:
            last = repr(e)
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} is not serving on port {port} (last answer: {last})")


@pytest.fixture
def cluster(short_tmp: Path, request: pytest.FixtureRequest) -> Iterator[KvCluster]:
    """A supervised cluster; its processes are killed and reaped afterwards,
    and their logs printed when the test failed."""
    kv = KvCluster(short_tmp)
    try:
        yield kv
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(kv.logs(), file=sys.stderr)
        kv.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
