"""The journal against the golden vectors: written bytes and read fields."""

from __future__ import annotations

import shutil
import uuid

import pytest
from conftest import VECTORS

import libhandoff
from libhandoff import Journal, Phase

ID = uuid.UUID("5a1e00ff-1020-4080-90a0-b0c0d0e0f001")
NAMES = [
    "0_negotiating.bin",
    "1_draining.bin",
    "2_sealing.bin",
    "3_awaiting_ready.bin",
    "4_committed.bin",
    "5_resuming_after_abort.bin",
]


def golden(n: int) -> Journal:
    """Field values from tests/vectors/README.md."""
    return Journal(
        handoff_id=ID,
        phase=Phase(n),
        incumbent_pid=1234 + n,
        successor_pid=5678 if n % 2 == 0 else None,
        started_at_unix_ms=1700000000000,
    )


def test_every_phase_has_a_vector() -> None:
    assert sorted(p.name for p in (VECTORS / "journal").glob("*.bin")) == NAMES


@pytest.mark.parametrize("n", range(6))
def test_write_produces_the_golden_bytes(n: int, short_tmp) -> None:
    path = short_tmp / "sub" / "state.bin"  # the directory is created
    libhandoff.write_journal(path, golden(n))
    assert path.read_bytes() == (VECTORS / "journal" / NAMES[n]).read_bytes()
    assert not (short_tmp / "sub" / "state.bin.tmp").exists()


@pytest.mark.parametrize("n", range(6))
def test_read_gives_every_field(n: int, short_tmp) -> None:
    path = short_tmp / "state.bin"
    shutil.copy(VECTORS / "journal" / NAMES[n], path)
    journal = libhandoff.read_journal(path)
    assert journal == golden(n)
    assert journal is not None
    assert journal.phase is Phase(n)
    assert Journal.read(str(path)) == golden(n)


def test_missing_delete_and_replace(short_tmp) -> None:
    path = short_tmp / "state.bin"
    assert libhandoff.read_journal(path) is None
    libhandoff.delete_journal(path)  # idempotent
    golden(0).write(path)
    golden(3).write(path)
    assert libhandoff.read_journal(path) == golden(3)
    libhandoff.delete_journal(path)
    assert not path.exists()
    assert libhandoff.read_journal(path) is None


def test_corrupt_journal_names_the_file(short_tmp) -> None:
    path = short_tmp / "state.bin"
    path.write_bytes(b"\x10garbage")
    with pytest.raises(libhandoff.JournalCorruptError, match=r"state\.bin"):
        libhandoff.read_journal(path)


def test_a_phase_out_of_range_writes_nothing(short_tmp) -> None:
    path = short_tmp / "state.bin"
    bad = Journal(ID, 6, 1, None, 0)  # type: ignore[arg-type]
    with pytest.raises(libhandoff.InvalidArgumentError):
        libhandoff.write_journal(path, bad)
    assert not path.exists()
