"""kv.log, the example service's append-only log (format: examples/README.md).

One record per acknowledged SET, each with its length and a CRC-32C of its
body, so that a torn last record is found and cut away on open. The same
bytes as the C implementation (examples/c/kvlog.c): either can open the
other's data directory. An open compacts a log that is mostly overwritten
records (one record per key, renamed over kv.log; see "Compaction").
"""

from __future__ import annotations

import errno
import os
import struct
import time
from dataclasses import dataclass

LOG_FILE = "kv.log"
COMPACT_FILE = "kv.log.compact"  # a compaction being written; never replayed
# An open compacts the log when it holds at least this many records...
COMPACT_MIN_RECORDS = 65_536
# ...and at least this many times as many records as the table has keys.
COMPACT_MIN_RATIO = 2
# The compacted file is built and written this much at a time: few write
# calls, and never a second copy of the whole table in memory.
_COMPACT_CHUNK = 1 << 20
OP_SET = 1
MAX_ITEM = 256
HEADER = 8  # body_len u32, crc u32
BODY_FIXED = 13  # op u8, generation u64, key_len u16, value_len u16
_HEADER = struct.Struct("<II")
_BODY = struct.Struct("<BQHH")


def _crc_tables() -> list[list[int]]:
    """Slicing-by-16: tables[0] is the usual byte table; tables[k][b] is the
    register's change from byte b followed by k zero bytes."""
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    tables = [table]
    for _ in range(15):
        tables.append([table[c & 0xFF] ^ (c >> 8) for c in tables[-1]])
    return tables


_CRC_TABLES = _crc_tables()
# 16 bytes a step: the first 4 as one word (the register is xored into them),
# then 12 single bytes. Replay checks every record's CRC; a step of 16 bytes
# takes about half the time of 16 steps of the byte loop.
_CRC_BLOCK = struct.Struct("<I12B")


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), reflected; ``crc32c(b"123456789") == 0xE3069283``.
    Start with ``crc = 0``; feed pieces by passing the previous result."""
    t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, t14, t15 = _CRC_TABLES
    crc ^= 0xFFFFFFFF
    whole = len(data) & ~15
    if whole:
        for block in _CRC_BLOCK.iter_unpack(memoryview(data)[:whole]):
            w, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15 = block
            w ^= crc
            crc = (
                t15[w & 0xFF]
                ^ t14[(w >> 8) & 0xFF]
                ^ t13[(w >> 16) & 0xFF]
                ^ t12[w >> 24]
                ^ t11[b4]
                ^ t10[b5]
                ^ t9[b6]
                ^ t8[b7]
                ^ t7[b8]
                ^ t6[b9]
                ^ t5[b10]
                ^ t4[b11]
                ^ t3[b12]
                ^ t2[b13]
                ^ t1[b14]
                ^ t0[b15]
            )
    for byte in data[whole:]:
        crc = t0[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


_ITEM_BYTES = bytes(range(0x21, 0x7F))


def item_valid(item: bytes) -> bool:
    """A key or value: 1 to 256 bytes, each printable ASCII other than space."""
    # translate() deletes every allowed byte: anything left is not allowed.
    return 1 <= len(item) <= MAX_ITEM and not item.translate(None, _ITEM_BYTES)


def encode_record(generation: int, key: bytes, value: bytes) -> bytes:
    """One SET record, header and body."""
    body = _BODY.pack(OP_SET, generation, len(key), len(value)) + key + value
    return _HEADER.pack(len(body), crc32c(body)) + body


def should_compact(records: int, keys: int) -> bool:
    """Whether an open rewrites a log of ``records`` valid records whose
    replay left ``keys`` keys in the table (examples/README.md)."""
    return records >= COMPACT_MIN_RECORDS and records >= COMPACT_MIN_RATIO * keys


class LogFormatError(Exception):
    """A record with a valid checksum that this format does not allow: the
    file is of another format, and the service must not start."""


class FatalLogError(Exception):
    """A failed append that could not be cut back, or a compacted log whose
    rename could not be made durable: the process must exit."""

    def __str__(self) -> str:
        # Raised `from` the OSError that caused it: say both.
        return f"{super().__str__()}: {self.__cause__}"


class CompactionError(Exception):
    """A compaction failed before its rename: kv.log is as it was (and still
    open), kv.log.compact is removed; the service goes on with the old log."""


@dataclass(frozen=True)
class Compacted:
    """A compaction done: the records before and after, and how long it took."""

    before: int
    after: int
    ms: int


def replay(buf: bytes, table: dict[bytes, bytes], base: int = 0) -> tuple[int, int]:
    """Replay ``buf``, the bytes of the log from offset ``base``, into
    ``table`` (later records win): the length of the valid records at its
    start and their number. A torn or corrupt record ends them; one with a
    valid checksum that this format does not allow raises LogFormatError."""
    off = 0
    records = 0
    size = len(buf)
    while True:
        if size - off < HEADER:
            return off, records  # the end, or a torn header
        body_len, crc = _HEADER.unpack_from(buf, off)
        if not BODY_FIXED + 2 <= body_len <= BODY_FIXED + 2 * MAX_ITEM:
            return off, records  # garbage length: a torn or zero-filled tail
        if size - off - HEADER < body_len:
            return off, records  # torn body
        body = buf[off + HEADER : off + HEADER + body_len]
        if crc32c(body) != crc:
            return off, records  # corrupt: cut here
        op, _generation, key_len, value_len = _BODY.unpack_from(body)
        key = body[BODY_FIXED : BODY_FIXED + key_len]
        value = body[BODY_FIXED + key_len : BODY_FIXED + key_len + value_len]
        if (
            op != OP_SET
            or body_len != BODY_FIXED + key_len + value_len
            or not item_valid(key)
            or not item_valid(value)
        ):
            raise LogFormatError(
                f"record at offset {base + off} has a valid checksum but is not a SET"
                f" record of this format (op {op}, key {key_len} bytes, value"
                f" {value_len} bytes): refusing to open"
            )
        table[key] = value
        records += 1
        off += HEADER + body_len


def _sync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | bytearray) -> None:
    with memoryview(data) as view:  # released before the caller reuses data
        done = 0
        while done < len(view):
            n = os.write(fd, view[done:])
            if n <= 0:
                raise OSError(errno.EIO, "short write")
            done += n


def _read_range(fd: int, start: int, length: int) -> bytes:
    """Bytes [start, start + length) of fd, or fewer if it ends first."""
    parts = []
    got = 0
    while got < length:
        part = os.pread(fd, length - got, start + got)
        if not part:
            break  # shrank under us: parse what was read
        parts.append(part)
        got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _replay_from(
    fd: int, start: int, table: dict[bytes, bytes]
) -> tuple[int, int, int]:
    """Replay fd's records from byte ``start`` (the end of a valid record) to
    its current end into ``table``: the file's size, the end of the last
    valid record, and the number of records replayed."""
    size = os.fstat(fd).st_size
    if size <= start:
        return size, start, 0
    valid, records = replay(_read_range(fd, start, size - start), table, start)
    return size, start + valid, records


@dataclass
class _Preload:
    """What :meth:`KvLog.preload` read, for :meth:`KvLog.open` to go on from."""

    table: dict[bytes, bytes]
    dev: int
    ino: int
    end: int  # the end of the last valid record it read
    records: int


class KvLog:
    """The open log: preload, open (and compact), append, group-commit sync,
    close."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, LOG_FILE)
        self.compact_path = os.path.join(data_dir, COMPACT_FILE)
        self.fd = -1
        self.size = 0
        self.records = 0
        self.dirty = False
        self.truncated = 0
        # Set by open: the valid records it found (before any compaction),
        # and the compaction it did, or why one failed.
        self.opened_records = 0
        self.compacted: Compacted | None = None
        self.compact_error: str | None = None
        self.preload_records = 0  # replayed by the last preload
        # Set by open: None if there was no preload to go on from, True if it
        # went on from it, False if the log had changed under it.
        self.preload_kept: bool | None = None
        self._preload: _Preload | None = None

    @property
    def is_open(self) -> bool:
        return self.fd >= 0

    def preload(self) -> int:
        """A successor's warm-up before the handoff begins: replay the valid
        records of the log as it is now, read-only and without the lock (the
        incumbent still writes: nothing is created, cut or written; a torn or
        corrupt record just ends the preload). The next :meth:`open` replays
        only what was appended since, or everything again if the file is not
        the one preloaded. The number of records preloaded: 0 without a log.
        A record of another format raises LogFormatError; a log that cannot
        be read raises OSError (the caller goes on without a preload)."""
        self._preload = None
        self.preload_records = 0
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0  # no log yet: nothing to preload
        try:
            st = os.fstat(fd)
            table: dict[bytes, bytes] = {}
            _size, end, records = _replay_from(fd, 0, table)
        finally:
            os.close(fd)
        self._preload = _Preload(table, st.st_dev, st.st_ino, end, records)
        self.preload_records = records
        return records

    def open(self, generation: int) -> dict[bytes, bytes]:
        """Open (creating it, durably, if missing) and replay: the table.
        Only with the data-dir lock held; ``generation`` is its generation.
        A stale kv.log.compact is removed first (a compaction that died
        before its rename: kv.log is whole). A torn or corrupt tail is cut
        away and the cut fsynced. After a :meth:`preload`, it goes on from
        the preload if the file is the one preloaded (same device and inode)
        and still holds every byte of it: the log is only appended to, and
        an append is only ever cut back to the end of a whole record, so
        those bytes cannot have changed. Otherwise (and on every later open)
        it replays everything. Then, if :func:`should_compact`, it compacts
        (:meth:`compact`): a failure before the rename is kept in
        ``compact_error`` and the old log stays open; a failed directory
        fsync after it raises FatalLogError."""
        preload, self._preload = self._preload, None
        self.preload_kept = None
        self.compacted = None
        self.compact_error = None
        self.close_quietly()
        try:
            os.unlink(self.compact_path)
        except FileNotFoundError:
            pass
        created = False
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | os.O_CREAT | os.O_EXCL
            fd = os.open(self.path, flags, 0o644)
            created = True
        try:
            if created:
                os.fsync(fd)
                _sync_dir(self.data_dir)
            table: dict[bytes, bytes] = {}
            start = records = 0
            if preload is not None:
                st = os.fstat(fd)
                same_file = (st.st_dev, st.st_ino) == (preload.dev, preload.ino)
                self.preload_kept = same_file and st.st_size >= preload.end
                if self.preload_kept:
                    table, start, records = preload.table, preload.end, preload.records
            size, valid_end, replayed = _replay_from(fd, start, table)
            records += replayed
            self.truncated = size - valid_end
            if valid_end < size:
                os.ftruncate(fd, valid_end)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd, self.size, self.records, self.dirty = fd, valid_end, records, False
        self.opened_records = records
        if should_compact(records, len(table)):
            try:
                self.compacted = self.compact(table, generation)
            except CompactionError as e:
                self.compact_error = str(e)
        return table

    def compact(self, table: dict[bytes, bytes], generation: int) -> Compacted:
        """Rewrite the open log as one SET record per key of ``table`` (its
        replay), stamped ``generation``: write and fsync kv.log.compact,
        rename it over kv.log, fsync the directory, and go on appending to
        the new file. Only with the lock held and before serving. A failure
        before the rename raises CompactionError (kv.log.compact removed,
        the old log still open); one to fsync the directory after it raises
        FatalLogError with the log closed: a power cut could bring the old
        file back and lose whatever would be appended to the new one."""
        if self.fd < 0:
            raise OSError(errno.EBADF, "the log is closed")
        started = time.monotonic_ns()
        before = self.records
        fd = -1
        step = "create"
        try:
            flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            fd = os.open(self.compact_path, flags, 0o644)
            step = "write"
            size = 0
            buf = bytearray()
            for key, value in table.items():
                buf += encode_record(generation, key, value)
                if len(buf) >= _COMPACT_CHUNK:
                    _write_all(fd, buf)
                    size += len(buf)
                    buf.clear()
            _write_all(fd, buf)
            size += len(buf)
            step = "fsync"
            os.fsync(fd)
            step = "rename"
            os.rename(self.compact_path, self.path)
        except BaseException as e:
            if fd >= 0:
                os.close(fd)
            reason = f"{step} {self.compact_path}: {e}"
            try:
                os.unlink(self.compact_path)
            except FileNotFoundError:
                pass
            except OSError as unlink_error:
                # Harmless: the next open removes it before anything else.
                reason += f" (and it could not be removed: {unlink_error})"
            if isinstance(e, OSError):
                raise CompactionError(reason) from e
            raise
        # The descriptor follows the renamed file: appends go to the new log.
        old, self.fd = self.fd, fd
        self.size, self.records, self.dirty = size, len(table), False
        try:
            os.close(old)
        except OSError:
            pass  # the old file is no longer the log
        try:
            _sync_dir(self.data_dir)
        except OSError as e:
            self.close_quietly()
            raise FatalLogError(
                f"cannot fsync {self.data_dir} after renaming {COMPACT_FILE}"
                f" over {LOG_FILE}"
            ) from e
        ms = (time.monotonic_ns() - started) // 1_000_000
        return Compacted(before, len(table), ms)

    def append(self, generation: int, key: bytes, value: bytes) -> None:
        """Append one record (not yet durable: see :meth:`sync`). A failed
        write raises OSError with nothing written; one that cannot be cut
        back raises :class:`FatalLogError`."""
        if self.fd < 0:
            raise OSError(errno.EBADF, "the log is closed")
        record = encode_record(generation, key, value)
        done = 0
        while done < len(record):
            try:
                n = os.write(self.fd, record[done:])
                if n <= 0:
                    raise OSError(errno.EIO, "short write")
            except OSError:
                # Never leave a partial record in the middle of the log.
                if done > 0:
                    try:
                        os.ftruncate(self.fd, self.size)
                    except OSError as e:
                        raise FatalLogError(
                            f"cannot cut a failed write out of {self.path}"
                        ) from e
                raise
            done += n
        self.size += len(record)
        self.records += 1
        self.dirty = True

    def sync(self) -> None:
        """Make every append so far durable (fdatasync), if there was one."""
        if self.fd >= 0 and self.dirty:
            os.fdatasync(self.fd)
            self.dirty = False

    def close(self) -> None:
        """fsync and close."""
        if self.fd < 0:
            return
        fd, self.fd = self.fd, -1
        self.dirty = False
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close_quietly(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
