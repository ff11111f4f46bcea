"""Run by the tests as a successor: takes over from an in-process incumbent
and reports as JSON to argv[1]; argv[2] is the data dir, argv[3] the
control socket. Serves a trivial service until SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import sys

import libhandoff

VARS = libhandoff.listeners.SUCCESSOR_VARIABLES


class Service:
    def drain(self, ctx: libhandoff.HookContext) -> None:
        pass

    def seal(self, ctx: libhandoff.HookContext) -> None:
        pass

    def resume_after_abort(self) -> None:
        pass


def write(report: dict[str, object]) -> None:
    with open(sys.argv[1] + ".tmp", "w") as out:
        json.dump(report, out)
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])


def main() -> int:
    data_dir, control = sys.argv[2], sys.argv[3]
    report: dict[str, object] = {}
    inherited = libhandoff.detect()
    report["is_successor"] = inherited.is_successor
    report["names"] = inherited.listener_names
    report["env_left"] = sorted(v for v in VARS if v in os.environ)
    with inherited, inherited.successor() as succ:
        try:
            succ.take_listener("kv")
        except libhandoff.WrongStateError as e:
            report["take_before_begin"] = type(e).__name__
        report["handoff_id"] = str(succ.handshake(b"successor-child"))
        try:
            succ.wait_for_begin(30)
        except libhandoff.HandoffError as e:
            report["begin"] = type(e).__name__
            write(report)
            return 1
        succ.start_heartbeats()
        listener = succ.take_listener("kv")
        with libhandoff.Lock.acquire(data_dir, timeout=5) as lock:
            generation = lock.generation
            incumbent = succ.announce_ready(
                control,
                lock,
                listening_on=[f"tcp://127.0.0.1:{listener.getsockname()[1]}"],
                advertised_revision_per_shard=[7],
            )
            report["lock_after_ready"] = lock.held
    report["generation"] = generation
    report["incumbent_generation"] = incumbent.generation
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with incumbent:
        incumbent.start(Service())
        write(report)
        incumbent.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
