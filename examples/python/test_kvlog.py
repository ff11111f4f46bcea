"""kvlog's preload (examples/README.md, "Lifecycle > Successor"): a successor
replays the log read-only before its handshake, and its open after the lock
goes on from there, unless the file is not the one preloaded or lost bytes
the preload read. On real files in a temporary directory; no library needed.

    target/venv/bin/python -m pytest -q examples/python/test_kvlog.py
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import kvlog
import pytest
from kvlog import KvLog, LogFormatError, crc32c, encode_record


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
        return log.open()
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
    table = log.open()
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
    table = log.open()
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
        log.open()
    assert not log.is_open
    assert path.read_bytes() == content


def test_a_later_open_replays_everything_afresh(tmp_path: Path) -> None:
    """resume_after_abort reopens after a seal: a full replay, never the
    preload again."""
    path, log = preloaded(tmp_path, records(0, 5), 5)
    table = log.open()
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
