"""kv.log, the example service's append-only log (format: examples/README.md).

One record per acknowledged SET, each with its length and a CRC-32C of its
body, so that a torn last record is found and cut away on open. The same
bytes as the C implementation (examples/c/kvlog.c): either can open the
other's data directory.
"""

from __future__ import annotations

import errno
import os
import struct

LOG_FILE = "kv.log"
OP_SET = 1
MAX_ITEM = 256
HEADER = 8  # body_len u32, crc u32
BODY_FIXED = 13  # op u8, generation u64, key_len u16, value_len u16
_HEADER = struct.Struct("<II")
_BODY = struct.Struct("<BQHH")


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), reflected; ``crc32c(b"123456789") == 0xE3069283``."""
    crc ^= 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def item_valid(item: bytes) -> bool:
    """A key or value: 1 to 256 bytes, each printable ASCII other than space."""
    return 1 <= len(item) <= MAX_ITEM and all(0x21 <= b <= 0x7E for b in item)


def encode_record(generation: int, key: bytes, value: bytes) -> bytes:
    """One SET record, header and body."""
    body = _BODY.pack(OP_SET, generation, len(key), len(value)) + key + value
    return _HEADER.pack(len(body), crc32c(body)) + body


class LogFormatError(Exception):
    """A record with a valid checksum that this format does not allow: the
    file is of another format, and the service must not start."""


class FatalLogError(Exception):
    """A failed append that could not be cut back: the process must exit."""


def replay(buf: bytes, table: dict[bytes, bytes]) -> tuple[int, int]:
    """Replay ``buf`` into ``table`` (later records win): the end of the last
    valid record and the number of valid records."""
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
                f"record at offset {off} has a valid checksum but is not a SET record of "
                f"this format (op {op}, key {key_len} bytes, value {value_len} bytes): "
                "refusing to open"
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


class KvLog:
    """The open log: append, group-commit sync, close."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, LOG_FILE)
        self.fd = -1
        self.size = 0
        self.records = 0
        self.dirty = False
        self.truncated = 0

    @property
    def is_open(self) -> bool:
        return self.fd >= 0

    def open(self) -> dict[bytes, bytes]:
        """Open (creating it, durably, if missing) and replay: the table.
        A torn or corrupt tail is cut away and the cut fsynced."""
        self.close_quietly()
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
            size = os.fstat(fd).st_size
            buf = os.pread(fd, size, 0) if size else b""
            table: dict[bytes, bytes] = {}
            valid_end, records = replay(buf, table)
            self.truncated = len(buf) - valid_end
            if valid_end < len(buf):
                os.ftruncate(fd, valid_end)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd, self.size, self.records, self.dirty = fd, valid_end, records, False
        return table

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
