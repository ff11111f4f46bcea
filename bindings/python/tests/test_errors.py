"""One HandoffError subclass per status, carrying the library's message."""

from __future__ import annotations

import pytest

import libhandoff
from libhandoff import errors


def test_every_status_has_its_own_class() -> None:
    classes = errors.STATUS_CLASSES
    assert sorted(classes) == list(range(1, 30))
    assert len(set(classes.values())) == len(classes)
    for status, cls in classes.items():
        assert issubclass(cls, libhandoff.HandoffError)
        assert status == cls.STATUS
        assert libhandoff.status_name(status) == cls.STATUS_NAME
        assert getattr(libhandoff, cls.__name__) is cls
    assert libhandoff.status_name(0) == "HANDOFF_OK"
    assert libhandoff.status_name(9999) is None


def test_errors_carry_the_library_message(short_tmp) -> None:
    with libhandoff.Lock.acquire(short_tmp), pytest.raises(libhandoff.LockHeldError) as info:
        libhandoff.Lock.acquire(short_tmp)
    e = info.value
    assert isinstance(e, libhandoff.HandoffError)
    assert e.status == 20
    assert e.status_name == "HANDOFF_ERR_LOCK_HELD"
    assert str(e) == e.message
    assert str(__import__("os").getpid()) in e.message  # names the holder


def test_unknown_status() -> None:
    e = errors.error_for(1234, "from the future")
    assert type(e) is libhandoff.UnknownStatusError
    assert e.status == 1234
    assert e.status_name == "HANDOFF_ERR_1234"


def test_an_error_without_details_names_its_status() -> None:
    with pytest.raises(libhandoff.TimedOutError, match="HANDOFF_ERR_TIMEOUT"):
        errors.raise_status(19, None)
