"""kvlog's preload (examples/README.md, "Lifecycle > Successor"): a successor
replays the log read-only before its handshake, and its open after the lock
goes on from there, unless the file is not the one preloaded or lost bytes
the preload read. Then the compaction at open ("Log format > Compaction").
On real files in a temporary directory; no library needed.

    target/venv/bin/python -m pytest -q examples/python/test_kvlog.py
"""

from __future__ import annotations

import errno
import os
import random
import struct
from collections.abc import Callable
from pathlib import Path

import kvlog
import pytest
from kvlog import (
    COMPACT_FILE,
    COMPACT_MIN_RATIO,
    COMPACT_MIN_RECORDS,
    Compacted,
    CompactionError,
    FatalLogError,
    KvLog,
    LogFormatError,
    crc32c,
    encode_record,
    should_compact,
)

OPENER = 2  # the lock generation of the process that opens the log here


def rec(generation: int, key: str, value: str) -> bytes:
    return encode_record(generation, key.encode(), value.encode())


def records(first: int, count: int, generation: int = 1) -> bytes:
    """count records k<i> = v<i> for i in first .. first + count - 1."""
    return b"".join(
        rec(generation, f"k{i}", f"v{i}") for i in range(first, first + count)
    )


def expected(first: int, count: int) -> dict[bytes, bytes]:
    return {f"k{i}".encode(): f"v{i}".encode() for i in range(first, first + count)}


def append(path: Path, data: bytes) -> None:
    """As the incumbent does: O_APPEND on the same file."""
    with open(path, "ab") as f:
        f.write(data)


def reopened(data_dir: Path) -> dict[bytes, bytes]:
    """What a fresh open (no preload) finds: the reference."""
    log = KvLog(str(data_dir))
    try:
        return log.open(OPENER)
    finally:
        log.close()


def preloaded(tmp_path: Path, data: bytes, count: int) -> tuple[Path, KvLog]:
    """kv.log holding `data`, preloaded: `count` records."""
    path = tmp_path / "kv.log"
    path.write_bytes(data)
    log = KvLog(str(tmp_path))
    assert log.preload() == count
    return path, log


def open_and_close(log: KvLog) -> dict[bytes, bytes]:
    table = log.open(OPENER)
    log.close()
    return table


def test_crc32c_matches_the_bytewise_definition() -> None:
    def bytewise(data: bytes, crc: int = 0) -> int:
        crc ^= 0xFFFFFFFF
        for byte in data:
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        return crc ^ 0xFFFFFFFF

    assert crc32c(b"123456789") == 0xE3069283
    rng = random.Random(7)
    for n in [*range(70), 255, 256, 257, 524, 525, 526, 4096]:
        data = rng.randbytes(n)
        assert crc32c(data) == bytewise(data), n
        start = rng.getrandbits(32)
        assert crc32c(data, start) == bytewise(data, start), n
        cut = rng.randrange(n + 1)
        assert crc32c(data[cut:], crc32c(data[:cut])) == bytewise(data), n


def test_item_valid() -> None:
    assert kvlog.item_valid(b"!")
    assert kvlog.item_valid(b"~" * 256)
    assert kvlog.item_valid(bytes(range(0x21, 0x7F)))
    assert not kvlog.item_valid(b"")
    assert not kvlog.item_valid(b"a" * 257)
    for bad in [*range(0x21), *range(0x7F, 0x100)]:
        assert not kvlog.item_valid(b"ab" + bytes([bad])), bad


def test_preload_then_appends_then_open_keeps_the_preload(tmp_path: Path) -> None:
    path, log = preloaded(tmp_path, records(0, 100), 100)
    assert log.preload_records == 100
    # The incumbent keeps serving: 50 more records, one overwriting k3.
    append(path, records(100, 49, generation=1) + rec(1, "k3", "new"))
    # Proof that open does not read the preloaded bytes again: rewrite the
    # first record in place (same length, valid CRC). This never happens to
    # a real log; here it tells a kept preload from a full replay.
    with open(path, "r+b") as f:
        f.write(rec(1, "k0", "XX"))
    table = log.open(OPENER)
    try:
        assert log.preload_kept is True
        assert log.records == 150
        assert log.truncated == 0
        assert log.size == path.stat().st_size
        want = expected(0, 149)
        want[b"k3"] = b"new"
        assert table == want  # k0 = v0: from the preload, not re-read
        # The log goes on as usual.
        log.append(2, b"k200", b"v200")
        log.sync()
        assert log.records == 151
    finally:
        log.close()
    want[b"k0"] = b"XX"
    want[b"k200"] = b"v200"
    assert reopened(tmp_path) == want


def test_open_right_after_preload_replays_nothing_more(tmp_path: Path) -> None:
    (tmp_path / "kv.log").write_bytes(records(0, 10))
    log = KvLog(str(tmp_path))
    assert log.preload() == 10
    table = open_and_close(log)
    assert log.preload_kept is True
    assert log.records == 10
    assert table == expected(0, 10)


def test_a_replaced_file_is_replayed_from_the_start(tmp_path: Path) -> None:
    path, log = preloaded(tmp_path, records(0, 20), 20)
    # Another file renamed over kv.log: longer than the preload's end, so
    # only its inode tells it apart.
    other = tmp_path / "kv.log.new"
    other.write_bytes(records(1000, 30))
    assert other.stat().st_size >= len(records(0, 20))
    os.rename(other, path)
    table = open_and_close(log)
    assert log.preload_kept is False
    assert log.records == 30
    assert table == expected(1000, 30)  # nothing of the preload is left


def test_a_file_shorter_than_the_preload_end_is_replayed_from_the_start(
    tmp_path: Path,
) -> None:
    path, log = preloaded(tmp_path, records(0, 10), 10)
    inode = path.stat().st_ino
    # The same file, cut back below what the preload read, then appended to.
    os.truncate(path, len(records(0, 4)))
    append(path, records(500, 2))
    assert path.stat().st_ino == inode
    assert path.stat().st_size < len(records(0, 10))
    table = open_and_close(log)
    assert log.preload_kept is False
    assert log.records == 6
    assert table == {**expected(0, 4), **expected(500, 2)}


def test_a_file_cut_into_a_preloaded_record_is_replayed_and_truncated(
    tmp_path: Path,
) -> None:
    path, log = preloaded(tmp_path, records(0, 10), 10)
    cut = len(records(0, 7)) + 5  # inside record 7
    os.truncate(path, cut)
    table = open_and_close(log)
    assert log.preload_kept is False
    assert log.records == 7
    assert log.truncated == 5
    assert path.stat().st_size == len(records(0, 7))
    assert table == expected(0, 7)


def test_a_record_torn_at_preload_and_completed_before_open_is_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "kv.log"
    whole, last = records(0, 5), rec(1, "k5", "v5")
    path.write_bytes(whole + last[:11])  # the incumbent is mid-write
    log = KvLog(str(tmp_path))
    assert log.preload() == 5
    assert path.read_bytes() == whole + last[:11]  # not cut
    append(path, last[11:])
    table = open_and_close(log)
    assert log.preload_kept is True
    assert log.records == 6
    assert log.truncated == 0
    assert table == expected(0, 6)


def test_a_record_still_torn_at_open_is_cut_there(tmp_path: Path) -> None:
    path = tmp_path / "kv.log"
    whole, last = records(0, 5), rec(1, "k5", "v5")
    path.write_bytes(whole + last[:11])
    log = KvLog(str(tmp_path))
    assert log.preload() == 5
    append(path, records(100, 1))  # the tail is not a record: still torn
    table = open_and_close(log)
    assert log.preload_kept is True
    assert log.records == 5
    assert log.truncated == 11 + len(records(100, 1))
    assert path.read_bytes() == whole
    assert table == expected(0, 5)


def test_no_log_at_preload(tmp_path: Path) -> None:
    log = KvLog(str(tmp_path))
    assert log.preload() == 0
    assert os.listdir(tmp_path) == []  # nothing created
    table = open_and_close(log)
    assert log.preload_kept is None  # nothing to go on from
    assert table == {}
    assert log.records == 0
    assert (tmp_path / "kv.log").read_bytes() == b""


def test_no_log_at_preload_then_the_incumbent_writes_one(tmp_path: Path) -> None:
    log = KvLog(str(tmp_path))
    assert log.preload() == 0
    (tmp_path / "kv.log").write_bytes(records(0, 3))
    table = open_and_close(log)
    assert log.records == 3
    assert table == expected(0, 3)


def test_no_data_dir_at_preload(tmp_path: Path) -> None:
    log = KvLog(str(tmp_path / "missing"))
    assert log.preload() == 0
    assert not (tmp_path / "missing").exists()


def test_a_preload_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "kv.log"
    # A valid prefix, a corrupt record, and a torn tail: an open would cut.
    corrupt = bytearray(rec(1, "bad", "crc"))
    corrupt[-1] ^= 0x01
    content = records(0, 8) + bytes(corrupt) + rec(1, "k9", "v9")[:6]
    path.write_bytes(content)
    past = 1_000_000_000 * 1_000_000_000  # 2001-09-09, in ns
    os.utime(path, ns=(past, past))
    before = path.stat()
    dir_before = (tmp_path.stat().st_mtime_ns, sorted(os.listdir(tmp_path)))
    log = KvLog(str(tmp_path))
    assert log.preload() == 8
    after = path.stat()
    assert path.read_bytes() == content
    assert after.st_mtime_ns == before.st_mtime_ns == past
    assert after.st_ctime_ns == before.st_ctime_ns
    assert after.st_size == len(content)
    assert (tmp_path.stat().st_mtime_ns, sorted(os.listdir(tmp_path))) == dir_before
    assert not log.is_open


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write a read-only file")
def test_a_preload_reads_a_log_it_may_not_write(tmp_path: Path) -> None:
    path = tmp_path / "kv.log"
    path.write_bytes(records(0, 4))
    path.chmod(0o444)
    try:
        log = KvLog(str(tmp_path))
        assert log.preload() == 4
    finally:
        path.chmod(0o644)


def test_a_record_of_another_format_is_fatal_at_preload(tmp_path: Path) -> None:
    path = tmp_path / "kv.log"
    body = bytearray(rec(1, "foo", "bar")[8:])
    body[0] = 2  # an op this format does not have, with a valid checksum
    bad = len(body).to_bytes(4, "little") + crc32c(bytes(body)).to_bytes(4, "little")
    content = records(0, 3) + bad + body
    path.write_bytes(content)
    log = KvLog(str(tmp_path))
    with pytest.raises(LogFormatError, match=f"record at offset {len(records(0, 3))} "):
        log.preload()
    assert path.read_bytes() == content


def test_a_record_of_another_format_appended_since_is_fatal_at_open(
    tmp_path: Path,
) -> None:
    path, log = preloaded(tmp_path, records(0, 3), 3)
    body = bytearray(rec(1, "foo", "bar")[8:])
    body[13] = 0x20  # a space in the key, with a valid checksum
    bad = len(body).to_bytes(4, "little") + crc32c(bytes(body)).to_bytes(4, "little")
    append(path, records(3, 2) + bad + body)
    content = path.read_bytes()
    # The offset is the record's place in the file, not in what open read.
    with pytest.raises(LogFormatError, match=f"record at offset {len(records(0, 5))} "):
        log.open(OPENER)
    assert not log.is_open
    assert path.read_bytes() == content


def test_a_later_open_replays_everything_afresh(tmp_path: Path) -> None:
    """resume_after_abort reopens after a seal: a full replay, never the
    preload again."""
    path, log = preloaded(tmp_path, records(0, 5), 5)
    table = log.open(OPENER)
    assert log.preload_kept is True
    log.append(2, b"k5", b"v5")
    log.close()  # the seal
    # Rewrite a preloaded record in place: a fresh replay must see it.
    with open(path, "r+b") as f:
        f.write(rec(1, "k0", "XX"))
    table = open_and_close(log)
    assert log.preload_kept is None
    assert log.records == 6
    want = expected(0, 6)
    want[b"k0"] = b"XX"
    assert table == want


def test_a_fresh_preload_replaces_the_previous_one(tmp_path: Path) -> None:
    path, log = preloaded(tmp_path, records(0, 5), 5)
    append(path, records(5, 5))
    assert log.preload() == 10
    table = open_and_close(log)
    assert log.preload_kept is True
    assert log.records == 10
    assert table == expected(0, 10)


def test_replay_offsets_and_counts() -> None:
    buf = records(0, 3) + b"\0" * 8
    table: dict[bytes, bytes] = {}
    assert kvlog.replay(buf, table) == (len(records(0, 3)), 3)
    assert table == expected(0, 3)


def test_an_unreadable_log_raises_oserror_not_a_format_error(tmp_path: Path) -> None:
    # A directory where the log should be: kv.py goes on without a preload.
    (tmp_path / kvlog.LOG_FILE).mkdir()
    log = KvLog(str(tmp_path))
    with pytest.raises(OSError):
        log.preload()
    assert log.preload_records == 0


# ---- compaction ---------------------------------------------------------------


def parse(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """Every record of a whole, valid log: (generation, key, value)."""
    out = []
    off = 0
    while off < len(data):
        body_len, crc = struct.unpack_from("<II", data, off)
        body = data[off + 8 : off + 8 + body_len]
        assert len(body) == body_len and crc32c(body) == crc, off
        _op, generation, key_len, value_len = struct.unpack_from("<BQHH", body)
        key, value = body[13 : 13 + key_len], body[13 + key_len :]
        assert len(value) == value_len, off
        out.append((generation, key, value))
        off += 8 + body_len
    return out


def overwritten(count: int) -> bytes:
    """count records over 16 keys, each key written again every 16 records:
    a few distinct records repeated, so that a big log is quick to build."""
    cycle = [rec(1, f"k{i % 16}", f"v{i}") for i in range(32)]
    whole, rest = divmod(count, 32)
    return b"".join(cycle) * whole + b"".join(cycle[:rest])


def overwritten_table(count: int) -> dict[bytes, bytes]:
    table: dict[bytes, bytes] = {}
    kvlog.replay(overwritten(count), table)
    return table


def test_the_compaction_policy() -> None:
    assert COMPACT_MIN_RECORDS == 65_536
    assert COMPACT_MIN_RATIO == 2
    assert not should_compact(0, 0)
    assert not should_compact(65_535, 1)  # too few records, however few keys
    assert should_compact(65_536, 1)
    assert should_compact(65_536, 32_768)  # exactly twice the keys
    assert not should_compact(65_536, 32_769)
    assert not should_compact(65_536, 65_536)
    assert should_compact(1_000_000, 500_000)
    assert not should_compact(1_000_000, 500_001)


def test_compact_writes_one_record_per_key(tmp_path: Path) -> None:
    path = tmp_path / "kv.log"
    path.write_bytes(overwritten(100) + records(100, 3))  # 19 keys, 103 records
    want = {**overwritten_table(100), **expected(100, 3)}
    inode = path.stat().st_ino
    log = KvLog(str(tmp_path))
    try:
        table = log.open(OPENER)
        assert log.compacted is None  # far below the policy's threshold
        assert log.records == log.opened_records == 103
        assert table == want

        done = log.compact(table, 7)
        assert done == Compacted(before=103, after=19, ms=done.ms)
        assert log.records == 19
        assert not (tmp_path / COMPACT_FILE).exists()
        assert path.stat().st_ino != inode  # renamed over kv.log
        content = path.read_bytes()
        assert log.size == len(content)
        # One record per key, each stamped with the generation given.
        assert sorted(parse(content)) == sorted((7, k, v) for k, v in want.items())

        # Appends go on in the new file.
        log.append(8, b"k1", b"after")
        log.append(8, b"new", b"key")
        log.sync()
        assert log.records == 21
        assert path.stat().st_size == log.size
        assert parse(path.read_bytes())[-2:] == [
            (8, b"k1", b"after"),
            (8, b"new", b"key"),
        ]
    finally:
        log.close()
    want[b"k1"] = b"after"
    want[b"new"] = b"key"
    log = KvLog(str(tmp_path))
    assert open_and_close(log) == want
    assert log.records == 21
    assert log.compacted is None


def test_compact_an_empty_table(tmp_path: Path) -> None:
    log = KvLog(str(tmp_path))
    try:
        assert log.open(OPENER) == {}
        assert log.compact({}, OPENER).after == 0
        assert (tmp_path / "kv.log").read_bytes() == b""
        log.append(OPENER, b"a", b"b")
    finally:
        log.close()
    assert reopened(tmp_path) == {b"a": b"b"}


def test_a_stale_compaction_file_is_removed_on_open(tmp_path: Path) -> None:
    path, stale = tmp_path / "kv.log", tmp_path / COMPACT_FILE
    content = overwritten(40)
    path.write_bytes(content)
    # What a process that died mid-compaction leaves: a partial file.
    stale.write_bytes(records(0, 5)[:-3])
    log = KvLog(str(tmp_path))
    assert log.preload() == 40
    assert stale.exists()  # the preload never writes
    table = open_and_close(log)
    assert not stale.exists()
    assert path.read_bytes() == content
    assert table == overwritten_table(40)
    assert log.records == 40


def test_an_open_of_a_big_log_with_few_keys_compacts(tmp_path: Path) -> None:
    path = tmp_path / "kv.log"
    below = COMPACT_MIN_RECORDS - 1
    path.write_bytes(overwritten(below))
    log = KvLog(str(tmp_path))
    open_and_close(log)
    assert log.compacted is None and log.compact_error is None
    assert log.records == below
    # A successor: preload, one more record appended, then the open after
    # the lock goes on from the preload and reaches the threshold.
    assert log.preload() == below
    append(path, rec(1, "k3", "last"))
    want = overwritten_table(below)
    want[b"k3"] = b"last"
    inode = path.stat().st_ino
    try:
        table = log.open(OPENER)
        assert log.preload_kept is True
        assert log.opened_records == COMPACT_MIN_RECORDS
        assert log.compact_error is None
        assert log.compacted is not None
        assert log.compacted.before == COMPACT_MIN_RECORDS
        assert log.compacted.after == 16
        assert log.records == 16
        assert table == want
        assert path.stat().st_ino != inode
        assert sorted(parse(path.read_bytes())) == sorted(
            (OPENER, k, v) for k, v in want.items()
        )
        assert not (tmp_path / COMPACT_FILE).exists()
        log.append(OPENER, b"k4", b"appended")
    finally:
        log.close()
    want[b"k4"] = b"appended"
    log = KvLog(str(tmp_path))
    assert open_and_close(log) == want
    assert log.records == 17
    assert log.compacted is None


def fail_for_compact_file(
    real: Callable[..., object], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Make os.<name> fail with ENOSPC on the compaction's file, as a full
    disk would, and work as usual on anything else."""

    def fake(*args: object, **kwargs: object) -> object:
        first = args[0]
        target = (
            os.readlink(f"/proc/self/fd/{first}") if isinstance(first, int) else first
        )
        if str(target).endswith(COMPACT_FILE):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, fake)


@pytest.mark.parametrize("step", ["write", "fsync", "rename"])
def test_a_compaction_failure_before_the_rename_keeps_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    path = tmp_path / "kv.log"
    content = overwritten(50)
    path.write_bytes(content)
    log = KvLog(str(tmp_path))
    try:
        table = log.open(OPENER)
        fail_for_compact_file(getattr(os, step), monkeypatch, step)
        with pytest.raises(CompactionError, match=f"^{step} .*{COMPACT_FILE}: ") as e:
            log.compact(table, OPENER)
        assert isinstance(e.value.__cause__, OSError)
        assert e.value.__cause__.errno == errno.ENOSPC
        monkeypatch.undo()
        assert not (tmp_path / COMPACT_FILE).exists()
        assert path.read_bytes() == content
        assert log.is_open and log.records == 50
        # The service goes on with the old log.
        log.append(OPENER, b"k0", b"later")
        log.sync()
        assert path.read_bytes() == content + rec(OPENER, "k0", "later")
    finally:
        log.close()
    assert reopened(tmp_path) == {**overwritten_table(50), b"k0": b"later"}


def test_an_open_whose_compaction_fails_goes_on_with_the_old_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "kv.log"
    content = overwritten(COMPACT_MIN_RECORDS)
    path.write_bytes(content)
    fail_for_compact_file(os.fsync, monkeypatch, "fsync")
    log = KvLog(str(tmp_path))
    try:
        table = log.open(OPENER)
        assert log.compacted is None
        assert log.compact_error is not None
        assert log.compact_error.startswith(f"fsync {log.compact_path}: ")
        assert log.records == COMPACT_MIN_RECORDS
        assert table == overwritten_table(COMPACT_MIN_RECORDS)
        assert not (tmp_path / COMPACT_FILE).exists()
        assert path.read_bytes() == content
        assert log.is_open
    finally:
        log.close()


def test_a_failed_directory_fsync_after_the_rename_is_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "kv.log"
    path.write_bytes(overwritten(50))
    log = KvLog(str(tmp_path))
    table = log.open(OPENER)

    def sync_dir_fails(_path: str) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(kvlog, "_sync_dir", sync_dir_fails)
    with pytest.raises(FatalLogError, match="after renaming"):
        log.compact(table, OPENER)
    # The rename was done; nothing may be appended to a file whose name
    # might not survive a power cut.
    assert not log.is_open
    with pytest.raises(OSError):
        log.append(OPENER, b"k", b"v")
    assert not (tmp_path / COMPACT_FILE).exists()
    assert sorted(parse(path.read_bytes())) == sorted(
        (OPENER, k, v) for k, v in table.items()
    )
