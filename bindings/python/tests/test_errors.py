"""One HandoffError subclass per status, carrying the library's message."""

from __future__ import annotations

import pytest

import handoff
from handoff import errors


def test_every_status_has_its_own_class() -> None:
    classes = errors.STATUS_CLASSES
    assert sorted(classes) == list(range(1, 30))
    assert len(set(classes.values())) == len(classes)
    for status, cls in classes.items():
        assert issubclass(cls, handoff.HandoffError)
        assert status == cls.STATUS
        assert handoff.status_name(status) == cls.STATUS_NAME
        assert getattr(handoff, cls.__name__) is cls
    assert handoff.status_name(0) == "HANDOFF_OK"
    assert handoff.status_name(9999) is None


def test_errors_carry_the_library_message(short_tmp) -> None:
    with handoff.Lock.acquire(short_tmp), pytest.raises(handoff.LockHeldError) as info:
        handoff.Lock.acquire(short_tmp)
    e = info.value
    assert isinstance(e, handoff.HandoffError)
    assert e.status == 20
    assert e.status_name == "HANDOFF_ERR_LOCK_HELD"
    assert str(e) == e.message
    assert str(__import__("os").getpid()) in e.message  # names the holder


def test_unknown_status() -> None:
    e = errors.error_for(1234, "from the future")
    assert type(e) is handoff.UnknownStatusError
    assert e.status == 1234
    assert e.status_name == "HANDOFF_ERR_1234"


def test_an_error_without_details_names_its_status() -> None:
    with pytest.raises(handoff.TimedOutError, match="HANDOFF_ERR_TIMEOUT"):
        errors.raise_status(19, None)
