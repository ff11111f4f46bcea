#!/usr/bin/env python3
"""kv-py: a key-value server over TCP that hands itself off with libhandoff.

    kv.py --data-dir DIR --control-socket PATH [--listen tcp://HOST:PORT] [--verbose]
          [--no-moves]

The same contract as examples/c (examples/README.md): line protocol, log
format, handoff behaviour; either can take over from the other.

The main thread runs a poll(2) event loop that owns every connection, the
log and the table. libhandoff serves the control socket on a thread of its
own and hands the loop its work through one descriptor (the incumbent's
fileno()): when it is readable the loop takes the request (drain, seal,
resume, or the end of serving), carries it out across as many iterations
as it needs and completes it. No thread, lock or wake pipe of our own.

When both sides of a handoff speak protocol v2, the connections are not
drained: each moves to the successor with its half-received line, its
answers not yet written (made durable first) and its overlong-line state,
and the client never sees a close (examples/README.md, "Moving
connections"). ``--no-moves`` takes part as protocol v1 instead: the drain
closes the connections and a successor adopts nothing.

``--fail-seal`` (for tests) makes the seal raise, so every handoff rolls
back and this process keeps serving. ``--exit-after-adopt`` (for tests)
makes a successor exit after adopting what moved and before Ready, so the
handoff rolls back after the descriptors moved.

Every open of the log (cold start, successor, resume_after_abort) happens
with the data-dir lock held and before serving, and may compact it (kvlog).
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import ipaddress
import os
import select
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field

import libhandoff
from kvlog import FatalLogError, KvLog, LogFormatError, item_valid
from libhandoff import (
    AdoptedItem,
    Incumbent,
    ItemKind,
    Lock,
    LockHeldError,
    Request,
    RequestKind,
    ServeOutcome,
)

BUILD_ID = b"kv-py"
TAG = "python"
MAX_LINE = 1024  # a request line is at most this long before its '\n'
IN_CAP = MAX_LINE + 1
OUT_HIGH = 64 * 1024  # stop reading a connection while this much output waits
MAX_CONNS = 1000
DRAIN_GRACE_MS = 1000  # for a connection that has not sent its first request
LINGER_MS = 500  # read and discard after shutdown(SHUT_WR), before close
TICK_MS = 100
BEGIN_TIMEOUT = 60.0
SUCCESSOR_LOCK_TIMEOUT = 5.0
COLD_LOCK_TIMEOUT = 2.0

PID = os.getpid()
VERBOSE = False
POLLIN, POLLOUT = select.POLLIN, select.POLLOUT
POLL_READ = select.POLLIN | select.POLLHUP | select.POLLERR


def say(message: str) -> None:
    print(f"kv-py[{PID}] {message}", file=sys.stderr, flush=True)


def fatal(message: str) -> None:
    """No answer may leave after a failed fsync: exit at once."""
    say(f"fatal: {message}")
    os._exit(1)


def now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def on_library_event(level: libhandoff.LogLevel, message: str) -> None:
    if level > libhandoff.LogLevel.INFO and not VERBOSE:
        return
    names = {1: "error", 2: "warn", 3: "info", 4: "debug"}
    print(
        f"kv-py[{PID}] handoff {names.get(level, '?')}: {message}",
        file=sys.stderr,
        flush=True,
    )


@dataclass(eq=False)
class Conn:
    sock: socket.socket
    fd: int
    dead: bool = False  # close at the end of this iteration
    eof: bool = False  # the peer closed its side
    discarding: bool = False  # inside an overlong line: skip to its newline
    lingering: bool = False  # shut down for writing; reading and discarding
    moved: bool = False  # handed to the successor: untouched until the outcome
    linger_until: int = 0
    served: int = 0  # lines answered
    drain_answered: int = 0  # lines answered since the drain began
    out: bytearray = field(default_factory=bytearray)
    inbuf: bytearray = field(default_factory=bytearray)


class Server:
    """The service, on the main thread: connections, the log, the table and
    the handoff's requests."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.data_dir: str = options.data_dir
        self.control_path: str = options.control_socket
        self.fail_seal: bool = options.fail_seal
        self.moves: bool = not options.no_moves
        self.exit_after_adopt: bool = options.exit_after_adopt
        self.listener: socket.socket | None = None
        self.listen_url = "tcp://?:0"
        self.log = KvLog(self.data_dir)
        self.table: dict[bytes, bytes] = {}
        self.inc: Incumbent | None = None
        self.conns: list[Conn] = []
        self.accepting = False
        # Out of descriptors (EMFILE and the like): the listener is not
        # polled until then, so a full descriptor table is not a busy loop.
        self.accept_resume_at = 0
        self.accept_starved = False  # logged once per episode
        self.draining: Request | None = None
        self.drain_deadline = 0
        self.finished = False
        self.exit_code = 1
        self.sig_r, self.sig_w = socket.socketpair()
        self.sig_r.setblocking(False)
        self.sig_w.setblocking(False)

    # -- connections ---------------------------------------------------------

    def reply(self, conn: Conn, line: str) -> None:
        conn.out += line.encode() + b"\n"

    def handle_line(self, conn: Conn, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        conn.served += 1
        if self.draining is not None:
            conn.drain_answered += 1
        if not line:
            self.reply(conn, "ERR empty line")
            return
        fields = line.split(b" ")
        want = {b"PING": 1, b"GET": 2, b"SET": 3}.get(fields[0])
        if want is None:
            self.reply(conn, "ERR unknown command")
        elif b"" in fields:
            self.reply(conn, "ERR fields are separated by exactly one space")
        elif len(fields) != want:
            self.reply(conn, "ERR wrong number of arguments")
        elif want >= 2 and not item_valid(fields[1]):
            self.reply(
                conn, "ERR invalid key (1 to 256 printable ASCII bytes, no spaces)"
            )
        elif want == 3 and not item_valid(fields[2]):
            self.reply(
                conn, "ERR invalid value (1 to 256 printable ASCII bytes, no spaces)"
            )
        elif want == 1:
            self.reply(conn, f"PONG {PID} {TAG}")
        elif want == 2:
            value = self.table.get(fields[1])
            conn.out += b"NOTFOUND\n" if value is None else b"VALUE " + value + b"\n"
        else:
            assert self.inc is not None
            generation = self.inc.generation
            try:
                self.log.append(generation, fields[1], fields[2])
            except FatalLogError as e:
                fatal(str(e))
            except OSError as e:
                self.reply(conn, f"ERR write failed: {e.strerror or e}")
                return
            self.table[fields[1]] = fields[2]
            # Queued, and sent only after this iteration's fsync.
            self.reply(conn, f"OK {generation}")

    def process_input(self, conn: Conn) -> None:
        buf = conn.inbuf
        start = 0
        while (nl := buf.find(b"\n", start)) >= 0:
            if conn.discarding:
                conn.discarding = False
                conn.served += 1
                if self.draining is not None:
                    conn.drain_answered += 1
                self.reply(conn, f"ERR line too long (at most {MAX_LINE} bytes)")
            else:
                self.handle_line(conn, bytes(buf[start:nl]))
            start = nl + 1
        rest = len(buf) - start
        if conn.discarding:
            rest = 0  # still inside the overlong line
        elif rest == IN_CAP:
            conn.discarding = True  # a full buffer and no newline
            rest = 0
        del buf[: len(buf) - rest]

    def conn_read(self, conn: Conn) -> None:
        for _ in range(16):
            if conn.dead or conn.eof:
                return
            if not conn.lingering and len(conn.out) >= OUT_HIGH:
                return
            room = 4096 if conn.lingering else IN_CAP - len(conn.inbuf)
            try:
                data = conn.sock.recv(room)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                conn.dead = True
                return
            if not data:
                conn.eof = True
            elif not conn.lingering:
                conn.inbuf += data
                self.process_input(conn)

    def conn_flush(self, conn: Conn) -> None:
        while not conn.dead and conn.out:
            try:
                n = conn.sock.send(conn.out, socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                conn.dead = True
                return
            del conn.out[:n]

    def conn_linger(self, conn: Conn) -> None:
        """Close gracefully: FIN after the answers already sent, then read
        and discard for a while, so that a request racing the close is not
        answered by a reset that could destroy answers not read yet."""
        if conn.lingering or conn.dead:
            return
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            conn.dead = True
            return
        if conn.eof:
            conn.dead = True
            return
        conn.lingering = True
        conn.inbuf.clear()
        conn.linger_until = now_ms() + LINGER_MS

    def reap_conns(self) -> None:
        kept = []
        for conn in self.conns:
            if conn.dead:
                conn.sock.close()
            else:
                kept.append(conn)
        self.conns = kept

    def live_conns(self) -> int:
        return sum(1 for c in self.conns if not c.lingering and not c.moved)

    def accept_some(self) -> None:
        """Accept what is waiting. The listener's O_NONBLOCK flag is shared
        with the supervisor and every other generation and is never changed
        here: poll said it is readable; a non-blocking listener is accepted
        from until EAGAIN, a blocking one once per poll."""
        assert self.listener is not None
        flags = fcntl.fcntl(self.listener.fileno(), fcntl.F_GETFL)
        tries = 64 if flags & os.O_NONBLOCK else 1
        while tries > 0 and len(self.conns) < MAX_CONNS:
            tries -= 1
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # The connection stays queued; try again in a tick.
                    if not self.accept_starved:
                        say(f"accept: {e}; retrying every {TICK_MS} ms")
                    self.accept_starved = True
                    self.accept_resume_at = now_ms() + TICK_MS
                else:
                    say(f"accept: {e}")
                return
            if self.accept_starved:
                say("accepting again")
                self.accept_starved = False
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns.append(Conn(sock, sock.fileno()))

    # -- handoff requests, carried out by the event loop --------------------------

    def move_conns(self, request: Request) -> None:
        """A drain that moves (protocol v2): every connection goes to the
        successor at once, between two requests, with its partial line, its
        answers not yet written and whether it is inside an overlong line;
        none is drained. A connection whose peer closed and that has nothing
        left to write is closed instead."""
        self.accepting = False
        # The answers that move may acknowledge writes of this iteration:
        # nothing is fsynced or sent here. The seal, queued right behind
        # this drain, makes them durable (or, when it comes an iteration
        # later, this loop's group commit does), and no answer to them
        # leaves before that: the successor writes carried answers only once
        # it holds the lock, and after an abort the group commit comes
        # before any send. The connections are passed on meanwhile.
        moving = []
        for conn in self.conns:
            if conn.dead or conn.lingering:
                continue
            if conn.eof and not conn.out:
                conn.dead = True
            else:
                moving.append(conn)
        self.reap_conns()
        try:
            for conn in moving:
                request.move(
                    ItemKind.CONNECTION,
                    "kv",
                    conn.sock,
                    unread=bytes(conn.inbuf),
                    unwritten=bytes(conn.out),
                    state=b"\x01" if conn.discarding else b"\x00",
                )
                conn.moved = True
        except libhandoff.HandoffError as e:
            # Items leave only with a completed drain: nothing has moved.
            for conn in moving:
                conn.moved = False
            say(f"cannot move a connection: {e} ({e.status_name})")
            request.fail(f"cannot move a connection: {e}")
            return
        unwritten = sum(len(conn.out) for conn in moving)
        unread = sum(len(conn.inbuf) for conn in moving)
        say(
            f"moving {len(moving)} connection(s) to the successor:"
            f" {unwritten} byte(s) unwritten, {unread} unread"
        )
        request.set_drained(open_conns_remaining=0, accept_closed=True)
        request.complete()

    def drain_step(self) -> None:
        if self.draining is None:
            return
        late = now_ms() >= self.drain_deadline
        for conn in self.conns:
            if conn.dead or conn.lingering:
                continue
            if conn.out:
                if late:
                    conn.dead = True
                continue
            # Answered the request in progress; idle between requests; closed
            # by the peer; or out of time. A connection that has not sent its
            # first request yet (or part of a line) gets until the deadline.
            idle = conn.served > 0 and not conn.inbuf and not conn.discarding
            if conn.drain_answered > 0 or idle or conn.eof or late:
                self.conn_linger(conn)
        self.reap_conns()
        if self.live_conns() > 0:
            return
        request, self.draining = self.draining, None
        self.sync_log()
        request.set_drained(open_conns_remaining=0, accept_closed=True)
        request.complete()

    def sync_log(self) -> None:
        try:
            self.log.sync()
        except OSError as e:
            fatal(f"fsync {self.log.path}: {e}")

    def preload_log(self) -> None:
        """A successor's warm-up: replay the incumbent's log read-only while
        it still serves, so that after the seal only the records appended
        since are left to replay (nobody is accepted from the drain to
        Ready). Before the handshake: the supervisor drains the incumbent as
        soon as the successor's Hello arrives."""
        started = now_ms()
        try:
            records = self.log.preload()
        except LogFormatError as e:
            raise StartupError(f"preloading the log: {e}") from e
        except OSError as e:
            # Not fatal: opening after the lock decides whether it matters.
            say(f"no preload (the whole log is replayed after the lock): {e}")
            return
        say(f"preloaded {records} record(s) in {now_ms() - started} ms")

    def open_log(self, generation: int) -> None:
        """Open, replay and maybe compact the log; ``generation`` is the
        lock's (the compacted records are stamped with it). A failed
        directory fsync after a compaction raises FatalLogError."""
        self.table = self.log.open(generation)
        preloaded = self.log.preload_records
        opened = self.log.opened_records  # before any compaction
        if self.log.preload_kept:
            say(
                f"kept {preloaded} preloaded record(s), replayed"
                f" {opened - preloaded} appended since"
            )
        elif self.log.preload_kept is not None:
            say(f"the log changed under the preload: replayed all {opened} record(s)")
        if self.log.truncated:
            say(
                f"truncated a torn tail of {self.log.truncated} bytes from {self.log.path}"
            )
        if self.log.compact_error is not None:
            say(
                f"compaction failed (the log is kept as it is): {self.log.compact_error}"
            )
        if (done := self.log.compacted) is not None:
            say(
                f"compacted the log: {done.before} record(s) -> {done.after} in {done.ms} ms"
            )

    def take_requests(self) -> None:
        """Take every request waiting on the incumbent's descriptor. A drain
        is only begun here: drain_step() completes it in a later iteration."""
        assert self.inc is not None
        while not self.finished:
            try:
                request = self.inc.take_request()
            except libhandoff.HandoffError as e:
                say(f"error: serving failed: {e} ({e.status_name})")
                self.step_down(None)
                return
            if request is None:
                return
            try:
                self.carry_out(request)
            except Exception:  # noqa: BLE001 (a failed step must not end the service)
                # The request's context manager failed it (the library
                # rolls back and asks for a resume): keep serving.
                say(f"{request.kind.name.lower()} failed:\n{traceback.format_exc()}")

    def carry_out(self, request: Request) -> None:
        if request.kind is RequestKind.DRAIN and request.moves:
            self.move_conns(request)
        elif request.kind is RequestKind.DRAIN:
            grace = min(request.time_left_ms // 2, DRAIN_GRACE_MS)
            say(f"draining {self.live_conns()} connection(s)")
            self.accepting = False
            self.draining = request
            self.drain_deadline = now_ms() + grace
            self.drain_step()
        elif request.kind is RequestKind.SEAL:
            with request:
                self.seal(request)
        elif request.kind is RequestKind.RESUME:
            with request:
                self.resume(request)
        else:
            self.step_down(request.outcome)

    def seal(self, request: Request) -> None:
        if self.fail_seal:
            raise RuntimeError("seal failed on purpose (--fail-seal)")
        records = self.log.records
        try:
            self.log.close()
        except OSError as e:
            # As in the group commit: the answers a moving drain carried wait
            # for this fsync, and none may leave after it failed (a later
            # fsync may report success for pages the kernel dropped).
            fatal(f"seal: fsync/close {self.log.path}: {e}")
        request.push_revision(records)
        say(f"sealed at revision {records}")

    def resume(self, request: Request) -> None:
        assert self.inc is not None
        if not self.log.is_open:
            try:
                # The library took the lock back: a new generation.
                self.open_log(self.inc.generation)
            except (OSError, LogFormatError, FatalLogError) as e:
                reason = f"fatal: {e}" if isinstance(e, FatalLogError) else str(e)
                say(f"cannot reopen the log to resume: {reason}")
                request.fail(reason)
                self.finished, self.exit_code = True, 1
                return
        # The moved connections are ours again, their file status flags
        # restored by the library, their state as we kept it.
        taken_back = sum(1 for c in self.conns if c.moved)
        for conn in self.conns:
            conn.moved = False
        self.accepting = True
        say(
            f"resumed after an aborted handoff (generation {self.inc.generation}),"
            f" {taken_back} moved connection(s) taken back"
        )

    def step_down(self, outcome: ServeOutcome | None) -> None:
        """Serving has ended (None: it failed); finish what lingers, then exit."""
        self.finished = True
        self.accepting = False
        self.draining = None
        # Our copies of the moved connections: closed, never shut down,
        # which would end them for the successor too.
        for conn in self.conns:
            conn.dead = conn.dead or conn.moved
        self.reap_conns()
        if outcome == ServeOutcome.COMMITTED:
            say("handoff committed: stepping down")
            self.exit_code = 0
        elif outcome == ServeOutcome.SUPERSEDED:
            say(
                "superseded by another holder of the data dir: stepping down without writing"
            )
            self.exit_code = 0
        elif outcome is not None:
            say(f"serving stopped ({outcome.name})")
            self.exit_code = 1
        else:
            self.exit_code = 1

    # -- the event loop ------------------------------------------------------------

    def serve(self) -> None:
        assert self.listener is not None and self.inc is not None
        listen_fd = self.listener.fileno()
        # Adopted connections: their carried output goes first, then their
        # carried input is answered (after this iteration's fsync).
        for conn in self.conns:
            self.conn_flush(conn)
            self.process_input(conn)
        while True:
            if self.finished and not self.conns:
                break
            poller = select.poll()
            poller.register(self.sig_r, POLLIN)
            if not self.finished:
                poller.register(self.inc, POLLIN)  # readable: a request waits
            now = now_ms()
            polled_listener = (
                self.accepting
                and not self.finished
                and len(self.conns) < MAX_CONNS
                and now >= self.accept_resume_at
            )
            if polled_listener:
                poller.register(listen_fd, POLLIN)
            wake_at = now + TICK_MS
            polled = [conn for conn in self.conns if not conn.moved]
            for conn in polled:
                events = 0
                if not conn.eof and (conn.lingering or len(conn.out) < OUT_HIGH):
                    events |= POLLIN
                if conn.out:
                    events |= POLLOUT
                if conn.lingering:
                    wake_at = min(wake_at, conn.linger_until)
                poller.register(conn.fd, events)
            if self.draining is not None:
                wake_at = min(wake_at, self.drain_deadline)
            ready = dict(poller.poll(max(wake_at - now, 0)))

            if ready.get(self.sig_r.fileno()):
                try:
                    sig = self.sig_r.recv(1)
                    say(f"signal {sig[0] if sig else '?'}: shutting down")
                except BlockingIOError:
                    say("signal: shutting down")
                break
            # Requests that have arrived are read before a drain is taken
            # up, so that they are answered rather than cut off.
            for conn in polled:
                if ready.get(conn.fd, 0) & POLL_READ:
                    self.conn_read(conn)
            if polled_listener and ready.get(listen_fd, 0) & POLLIN and self.accepting:
                self.accept_some()
            if not self.finished and ready.get(self.inc.fileno()):
                self.take_requests()

            # Group commit: every write of this iteration is made durable
            # before any answer leaves, so no client sees a value that could
            # be lost.
            self.sync_log()

            now = now_ms()
            for conn in self.conns:
                if conn.moved:  # this iteration's drain moved it: hands off
                    continue
                self.conn_flush(conn)
                if (
                    conn.lingering
                    and (conn.eof or now >= conn.linger_until)
                    or not conn.lingering
                    and conn.eof
                    and not conn.out
                ):
                    conn.dead = True
            self.reap_conns()
            self.drain_step()
            if self.finished:
                # Stepping down: everything was drained; let lingering
                # connections run out.
                for conn in self.conns:
                    self.conn_linger(conn)
                self.reap_conns()

    # -- start-up --------------------------------------------------------------------

    def describe_listener(self) -> None:
        assert self.listener is not None
        host, port = self.listener.getsockname()[:2]
        if self.listener.family == socket.AF_INET6:
            host = f"[{host}]"
        self.listen_url = f"tcp://{host}:{port}"

    def start_cold(self, inherited: libhandoff.Inherited, listen: str | None) -> None:
        with inherited:
            if "kv" in inherited.listener_names:
                self.listener = inherited.take_listener("kv")
            elif listen is not None:
                self.listener = bind_listener(listen)
            else:
                raise StartupError(
                    "no listener named kv was inherited and --listen was not given"
                )
        lock = cold_lock(self.data_dir)
        with lock:  # empty once it moved into the incumbent; released on failure
            self.open_log(lock.generation)
            self.inc = Incumbent.bind(self.control_path, lock)
        self.describe_listener()
        say(
            f"cold start on {self.listen_url}: generation {self.inc.generation},"
            f" {self.log.records} record(s)"
        )

    def start_successor(self, inherited: libhandoff.Inherited) -> None:
        with inherited:
            succ = inherited.successor()
        with succ:
            self.preload_log()
            succ.set_adopts_descriptors(self.moves)
            succ.handshake(BUILD_ID)
            # Before Begin, so that its thread is not started in the
            # blackout; it beats from Begin to Ready.
            succ.start_heartbeats()
            try:
                succ.wait_for_begin(BEGIN_TIMEOUT)
            except libhandoff.HandoffError as e:
                # ABORTED, PEER_CLOSED or TIMEOUT: the handoff is over; leave
                # the data dir alone.
                raise StartupError(f"the handoff did not begin: {e}") from e
            self.listener = succ.take_listener("kv")
            # Invariant 5: nothing is written before the lock is held.
            with Lock.acquire(self.data_dir, timeout=SUCCESSOR_LOCK_TIMEOUT) as lock:
                self.open_log(lock.generation)  # goes on from the preload
                self.adopt_conns(succ, lock)
                if self.exit_after_adopt:
                    raise StartupError(
                        "exiting after adopting, as asked (--exit-after-adopt)"
                    )
                self.describe_listener()
                self.inc = succ.announce_ready(
                    self.control_path,
                    lock,
                    listening_on=[self.listen_url],
                    healthz_ok=True,
                    advertised_revision_per_shard=[self.log.records],
                )
        say(
            f"took over on {self.listen_url}: generation {self.inc.generation},"
            f" {self.log.records} record(s)"
        )

    def adopt_conns(self, succ: libhandoff.Successor, lock: Lock) -> None:
        """What the incumbent moved, taken with the lock held and the log
        open; served from Ready on (serve() writes the carried output
        first). Anything this service cannot take fails the start-up, and
        the handoff rolls back."""
        items = succ.adopt(lock)
        try:
            conns = [adopted_conn(item) for item in items]
        except StartupError:
            for item in items:
                item.close()  # close, never shutdown: they go back
            raise
        self.conns.extend(conns)
        if conns:
            say(f"adopted {len(conns)} connection(s)")

    def install_signals(self) -> None:
        """From here on SIGTERM/SIGINT stop the service cleanly (before, the
        default action is right: a successor killed before Ready leaves
        nothing behind)."""
        signal.set_wakeup_fd(self.sig_w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _sig, _frame: None)

    def run(self) -> int:
        assert self.inc is not None
        self.install_signals()
        self.inc.set_build_id(BUILD_ID)
        self.inc.set_moves_descriptors(self.moves)
        self.inc.start_loop()
        self.accepting = True
        self.serve()
        if not self.finished:
            # Stopped by a signal: roll back a handoff in progress (the
            # drain we hold fails) and stop the serve thread.
            self.inc.stop()
            self.exit_code = 0
        return self.exit_code

    def free(self) -> None:
        # The log is closed (fsynced) before the lock goes with the incumbent.
        try:
            self.log.close()
        except OSError as e:
            say(f"closing the log: {e}")
        if self.inc is not None:
            self.inc.close()
        for conn in self.conns:
            conn.sock.close()
        self.conns = []
        if self.listener is not None:
            self.listener.close()
        for sock in (self.sig_r, self.sig_w):
            sock.close()


class StartupError(Exception):
    """Start-up failed; the message says why."""


def adopted_conn(item: AdoptedItem) -> Conn:
    """A moved connection as ours: its partial line, its answers not yet
    written, and whether it is inside an overlong line (state: one byte,
    examples/README.md)."""
    if item.kind is not ItemKind.CONNECTION or len(item.unread) > IN_CAP:
        raise StartupError(
            f"moved item {item.name!r} ({item.kind.name}, {len(item.unread)} bytes unread)"
            " is not a connection this service can take"
        )
    sock = item.socket  # non-blocking, as adopted
    return Conn(
        sock,
        sock.fileno(),
        discarding=item.state[:1] not in (b"", b"\x00"),
        out=bytearray(item.unwritten),
        inbuf=bytearray(item.unread),
    )


def bind_listener(url: str) -> socket.socket:
    """--listen tcp://HOST:PORT (HOST may be [v6])."""
    if not url.startswith("tcp://"):
        raise StartupError(f"--listen {url}: expected tcp://HOST:PORT")
    rest = url[len("tcp://") :]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise StartupError(f"--listen {url}: expected tcp://HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    family = socket.AF_INET
    if host:
        try:
            family = (
                socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else family
            )
        except ValueError:
            family = socket.AF_UNSPEC
    try:
        infos = socket.getaddrinfo(
            host or None, int(port), family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
        af, kind, proto, _, addr = infos[0]
        sock = socket.socket(af, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(socket.SOMAXCONN)
        except BaseException:
            sock.close()
            raise
    except OSError as e:
        raise StartupError(f"--listen {url}: {e}") from e
    return sock


def cold_lock(data_dir: str) -> Lock:
    try:
        return Lock.acquire(data_dir)
    except LockHeldError as e:
        say(
            f"data dir {data_dir} is locked ({e}); retrying for {COLD_LOCK_TIMEOUT:g} s"
        )
        return Lock.acquire(data_dir, timeout=COLD_LOCK_TIMEOUT)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kv-py",
        description="A key-value server that hands itself off with libhandoff.",
    )
    parser.add_argument("--data-dir", required=True, help="the data directory")
    parser.add_argument(
        "--control-socket", required=True, help="the incumbent's control socket"
    )
    parser.add_argument(
        "--listen", help="tcp://HOST:PORT to bind without an inherited kv"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="also print debug events"
    )
    parser.add_argument(
        "--fail-seal", action="store_true", help="(tests) make every seal fail"
    )
    parser.add_argument(
        "--no-moves",
        action="store_true",
        help="hand off as protocol v1: close connections at a drain, adopt nothing",
    )
    parser.add_argument(
        "--exit-after-adopt",
        action="store_true",
        help="(tests) as a successor, exit after adopting, before Ready",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    global VERBOSE
    options = parse_args(argv)  # exits 2 on a usage error
    VERBOSE = options.verbose
    libhandoff.set_log_callback(on_library_event)
    server = Server(options)
    code = 1
    try:
        inherited = libhandoff.detect()
        if inherited.is_successor:
            server.start_successor(inherited)
        else:
            server.start_cold(inherited, options.listen)
        code = server.run()
        say(f"exiting with status {code}")
    except (StartupError, LogFormatError) as e:
        say(f"error: {e}")
    except FatalLogError as e:
        say(f"fatal: {e}")
    except libhandoff.HandoffError as e:
        say(f"error: {e} ({e.status_name})")
    except OSError as e:
        say(f"error: {e}")
    finally:
        server.free()
        libhandoff.set_log_callback(None)
    return code


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(0)
    except BrokenPipeError:
        sys.exit(1)
