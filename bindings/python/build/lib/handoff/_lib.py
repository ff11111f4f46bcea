"""Loading libhandoff.so and declaring every function of include/handoff.h.

Every C function is declared here, with its ``restype`` and ``argtypes``, in
one table (``FUNCTIONS``); the test suite checks the table against the
header, so a function added to the C ABI without a declaration here fails
the tests. (A ctypes call without a declaration returns a C ``int``, which
truncates pointers: convention 6.)

The library is looked for, in order, at:

1. ``$HANDOFF_LIBRARY`` (a path to the ``.so``), when set;
2. a copy inside this package (``handoff/libhandoff.so`` or
   ``handoff/libhandoff.so.0``);
3. the system's library path (``libhandoff.so.0``, then ``libhandoff.so``,
   as the dynamic loader resolves them, then ``ctypes.util.find_library``).

When none loads, :class:`LibraryNotFoundError` lists every place tried and
why each failed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_int,
    c_int32,
    c_size_t,
    c_uint8,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import Any

__all__ = [
    "FUNCTIONS",
    "LibraryNotFoundError",
    "lib",
    "library_path",
]


class LibraryNotFoundError(ImportError):
    """libhandoff.so could not be loaded; ``tried`` lists ``(place, reason)``."""

    def __init__(self, tried: list[tuple[str, str]]) -> None:
        self.tried = tried
        lines = "\n".join(f"  {place}: {reason}" for place, reason in tried)
        super().__init__(
            "cannot load libhandoff (set HANDOFF_LIBRARY to the path of libhandoff.so);"
            f" tried:\n{lines}"
        )


# ---- opaque handles (incomplete structs: only pointers to them are used) ----


class handoff_error(Structure):
    """Opaque ``struct handoff_error``."""


class handoff_frame_reader(Structure):
    """Opaque ``struct handoff_frame_reader``."""


class handoff_hook_context(Structure):
    """Opaque ``struct handoff_hook_context``."""


class handoff_incumbent(Structure):
    """Opaque ``struct handoff_incumbent``."""


class handoff_inherited(Structure):
    """Opaque ``struct handoff_inherited``."""


class handoff_items(Structure):
    """Opaque ``struct handoff_items``."""


class handoff_lock(Structure):
    """Opaque ``struct handoff_lock``."""


class handoff_message(Structure):
    """Opaque ``struct handoff_message``."""


class handoff_outcome(Structure):
    """Opaque ``struct handoff_outcome``."""


class handoff_spawn_spec(Structure):
    """Opaque ``struct handoff_spawn_spec``."""


class handoff_successor(Structure):
    """Opaque ``struct handoff_successor``."""


class handoff_supervisor(Structure):
    """Opaque ``struct handoff_supervisor``."""


# ---- plain structs and function pointer types ------------------------------

# int32_t (*handoff_hook_fn)(void *userdata, struct handoff_hook_context *ctx)
handoff_hook_fn = CFUNCTYPE(c_int32, c_void_p, POINTER(handoff_hook_context))
# void (*destroy)(void *userdata)
handoff_destroy_fn = CFUNCTYPE(None, c_void_p)
# void (*handoff_log_fn)(void *userdata, uint32_t level, const char *message)
handoff_log_fn = CFUNCTYPE(None, c_void_p, c_uint32, c_char_p)


class handoff_service_callbacks(Structure):
    """``struct handoff_service_callbacks``."""

    _fields_ = (
        ("drain", handoff_hook_fn),
        ("seal", handoff_hook_fn),
        ("resume_after_abort", handoff_hook_fn),
        ("destroy", handoff_destroy_fn),
    )


class handoff_journal(Structure):
    """``struct handoff_journal``."""

    _fields_ = (
        ("handoff_id", c_uint8 * 16),
        ("phase", c_uint32),
        ("incumbent_pid", c_uint32),
        ("has_successor_pid", c_bool),
        ("successor_pid", c_uint32),
        ("started_at_unix_ms", c_uint64),
    )


class handoff_phase_timings(Structure):
    """``struct handoff_phase_timings``."""

    _fields_ = (
        ("hello_us", c_uint64),
        ("spawn_us", c_uint64),
        ("drain_us", c_uint64),
        ("seal_us", c_uint64),
        ("ready_us", c_uint64),
        ("commit_us", c_uint64),
        ("total_us", c_uint64),
    )


# ---- the function table ----------------------------------------------------

status = c_int32  # handoff_status: an int32_t-sized enum
P = POINTER
ERR = P(P(handoff_error))  # struct handoff_error **err, always last
# Byte inputs (const uint8_t *) and byte output buffers (uint8_t *) are
# declared c_char_p so that `bytes` and ctypes char arrays pass as they are.
BYTES = c_char_p

MSG = P(handoff_message)
CMSG = MSG  # const struct handoff_message *: the same pointer type in ctypes
INC = P(handoff_incumbent)
INH = P(handoff_inherited)
LOCK = P(handoff_lock)
SUCC = P(handoff_successor)
SPEC = P(handoff_spawn_spec)
SUP = P(handoff_supervisor)
OUTC = P(handoff_outcome)
RDR = P(handoff_frame_reader)
HOOK = P(handoff_hook_context)
ITEMS = P(handoff_items)

FUNCTIONS: dict[str, tuple[Any, tuple[Any, ...]]] = {
    # errors and version
    "handoff_version": (c_char_p, ()),
    "handoff_error_message": (c_char_p, (P(handoff_error),)),
    "handoff_error_status": (status, (P(handoff_error),)),
    "handoff_error_free": (None, (P(handoff_error),)),
    "handoff_status_name": (c_char_p, (c_int32,)),
    # hooks
    "handoff_hook_time_left_ms": (c_uint64, (HOOK,)),
    "handoff_hook_set_drained": (status, (HOOK, c_uint32, c_bool, ERR)),
    "handoff_hook_moves": (c_bool, (HOOK,)),
    "handoff_hook_move_limit": (c_uint32, (HOOK,)),
    "handoff_hook_move": (
        status,
        (
            HOOK,
            c_uint32,
            c_char_p,
            c_int,
            BYTES,
            c_size_t,
            BYTES,
            c_size_t,
            BYTES,
            c_size_t,
            ERR,
        ),
    ),
    "handoff_hook_push_revision": (status, (HOOK, c_uint64, ERR)),
    "handoff_hook_set_fingerprint": (status, (HOOK, BYTES, c_size_t, ERR)),
    "handoff_hook_seal_progress": (status, (HOOK, c_uint32, c_uint32, c_uint64, ERR)),
    "handoff_hook_fail": (status, (HOOK, c_char_p, ERR)),
    "handoff_hook_complete": (status, (HOOK, c_int32, ERR)),
    # incumbent
    "handoff_incumbent_bind": (status, (c_char_p, LOCK, P(INC), ERR)),
    "handoff_incumbent_set_moves_descriptors": (status, (INC, c_bool, ERR)),
    "handoff_incumbent_set_build_id": (status, (INC, BYTES, c_size_t, ERR)),
    "handoff_incumbent_set_liveness_timeout": (status, (INC, c_uint32, ERR)),
    "handoff_incumbent_generation": (c_uint64, (INC,)),
    "handoff_incumbent_start": (
        status,
        (INC, P(handoff_service_callbacks), c_void_p, ERR),
    ),
    "handoff_incumbent_start_loop": (status, (INC, ERR)),
    "handoff_incumbent_request_fd": (c_int, (INC,)),
    "handoff_incumbent_take_request": (status, (INC, P(HOOK), P(c_uint32), ERR)),
    "handoff_incumbent_wait": (status, (INC, c_int32, P(c_uint32), ERR)),
    "handoff_incumbent_stop": (status, (INC, ERR)),
    "handoff_incumbent_free": (None, (INC,)),
    # journal
    "handoff_journal_write": (status, (c_char_p, P(handoff_journal), ERR)),
    "handoff_journal_read": (status, (c_char_p, P(handoff_journal), P(c_bool), ERR)),
    "handoff_journal_delete": (status, (c_char_p, ERR)),
    # role detection and inherited listeners
    "handoff_inherited_detect": (status, (P(INH), ERR)),
    "handoff_inherited_is_successor": (c_bool, (INH,)),
    "handoff_inherited_listener_count": (c_size_t, (INH,)),
    "handoff_inherited_listener_name": (status, (INH, c_size_t, P(c_char_p), ERR)),
    "handoff_inherited_take_listener": (status, (INH, c_char_p, c_uint32, P(c_int), ERR)),
    "handoff_inherited_free": (None, (INH,)),
    # lock
    "handoff_lock_acquire": (status, (c_char_p, P(LOCK), ERR)),
    "handoff_lock_acquire_with_retry": (status, (c_char_p, c_uint32, P(LOCK), ERR)),
    "handoff_lock_generation": (c_uint64, (LOCK,)),
    "handoff_lock_release": (status, (LOCK, ERR)),
    "handoff_lock_free": (None, (LOCK,)),
    "handoff_lock_holder": (status, (c_char_p, P(c_bool), P(c_uint32), ERR)),
    # logging
    "handoff_set_log_callback": (status, (handoff_log_fn, c_void_p, ERR)),
    # messages
    "handoff_message_new": (status, (c_uint32, P(MSG), ERR)),
    "handoff_message_decode": (status, (BYTES, c_size_t, P(MSG), P(c_size_t), ERR)),
    "handoff_message_encode": (status, (CMSG, BYTES, c_size_t, P(c_size_t), ERR)),
    "handoff_message_kind": (c_uint32, (CMSG,)),
    "handoff_message_kind_name": (c_char_p, (c_uint32,)),
    "handoff_message_proto_version": (c_uint16, (CMSG,)),
    "handoff_message_set_proto_version": (status, (MSG, c_uint16, ERR)),
    "handoff_message_free": (None, (MSG,)),
    "handoff_message_get_uint": (status, (CMSG, c_uint32, P(c_uint64), ERR)),
    "handoff_message_set_uint": (status, (MSG, c_uint32, c_uint64, ERR)),
    "handoff_message_get_bool": (status, (CMSG, c_uint32, P(c_bool), ERR)),
    "handoff_message_set_bool": (status, (MSG, c_uint32, c_bool, ERR)),
    "handoff_message_get_bytes": (
        status,
        (CMSG, c_uint32, P(c_void_p), P(c_size_t), ERR),
    ),
    "handoff_message_set_bytes": (status, (MSG, c_uint32, BYTES, c_size_t, ERR)),
    "handoff_message_get_list_len": (status, (CMSG, c_uint32, P(c_size_t), ERR)),
    "handoff_message_get_list_uint": (
        status,
        (CMSG, c_uint32, c_size_t, P(c_uint64), ERR),
    ),
    "handoff_message_get_list_bytes": (
        status,
        (CMSG, c_uint32, c_size_t, P(c_void_p), P(c_size_t), ERR),
    ),
    "handoff_message_push_uint": (status, (MSG, c_uint32, c_uint64, ERR)),
    "handoff_message_push_bytes": (status, (MSG, c_uint32, BYTES, c_size_t, ERR)),
    "handoff_message_clear_list": (status, (MSG, c_uint32, ERR)),
    # frame reader
    "handoff_frame_reader_new": (status, (P(RDR), ERR)),
    "handoff_frame_reader_feed": (status, (RDR, BYTES, c_size_t, ERR)),
    "handoff_frame_reader_next": (status, (RDR, P(MSG), P(c_bool), ERR)),
    "handoff_frame_reader_buffered": (c_size_t, (RDR,)),
    "handoff_frame_reader_free": (None, (RDR,)),
    # successor
    "handoff_successor_new": (status, (INH, P(SUCC), ERR)),
    "handoff_successor_handshake": (status, (SUCC, BYTES, c_size_t, BYTES, ERR)),
    "handoff_successor_wait_for_begin": (status, (SUCC, c_uint32, ERR)),
    "handoff_successor_control_fd": (c_int, (SUCC,)),
    "handoff_successor_poll_begin": (status, (SUCC, P(c_bool), ERR)),
    "handoff_successor_set_adopts_descriptors": (status, (SUCC, c_bool, ERR)),
    "handoff_successor_adopt": (status, (SUCC, LOCK, P(ITEMS), ERR)),
    "handoff_items_count": (c_size_t, (ITEMS,)),
    "handoff_items_kind": (c_uint32, (ITEMS, c_size_t)),
    "handoff_items_take_fd": (c_int, (ITEMS, c_size_t)),
    "handoff_items_bytes": (c_bool, (ITEMS, c_size_t, c_uint32, P(c_void_p), P(c_size_t))),
    "handoff_items_free": (None, (ITEMS,)),
    "handoff_successor_take_listener": (status, (SUCC, c_char_p, c_uint32, P(c_int), ERR)),
    "handoff_successor_start_heartbeats": (status, (SUCC, ERR)),
    "handoff_successor_announce_ready": (
        status,
        (SUCC, CMSG, c_char_p, LOCK, P(INC), ERR),
    ),
    "handoff_successor_free": (None, (SUCC,)),
    # supervisor
    "handoff_spawn_spec_new": (status, (c_char_p, P(SPEC), ERR)),
    "handoff_spawn_spec_add_arg": (status, (SPEC, c_char_p, ERR)),
    "handoff_spawn_spec_set_env": (status, (SPEC, c_char_p, c_char_p, ERR)),
    "handoff_spawn_spec_set_budgets": (status, (SPEC, c_uint64, c_uint64, ERR)),
    "handoff_spawn_spec_free": (None, (SPEC,)),
    "handoff_supervisor_new": (status, (c_char_p, P(SUP), ERR)),
    "handoff_supervisor_add_listener": (status, (SUP, c_char_p, c_int32, ERR)),
    "handoff_supervisor_set_journal": (status, (SUP, c_char_p, ERR)),
    "handoff_supervisor_set_timeouts": (status, (SUP, c_uint32, c_uint32, c_uint32, ERR)),
    "handoff_supervisor_spawn_cold": (status, (SUP, SPEC, P(c_uint32), ERR)),
    "handoff_supervisor_perform_handoff": (status, (SUP, SPEC, P(OUTC), ERR)),
    "handoff_supervisor_cancel": (None, (SUP,)),
    "handoff_supervisor_resume_from_journal": (status, (SUP, P(c_bool), P(c_bool), ERR)),
    "handoff_supervisor_free": (None, (SUP,)),
    "handoff_outcome_committed": (c_bool, (OUTC,)),
    "handoff_outcome_abort_reason": (c_char_p, (OUTC,)),
    "handoff_outcome_abort_step": (c_uint32, (OUTC,)),
    "handoff_outcome_abort_party": (c_uint32, (OUTC,)),
    "handoff_outcome_abort_cause": (c_uint32, (OUTC,)),
    "handoff_outcome_successor_pid": (c_uint32, (OUTC,)),
    "handoff_outcome_incumbent_pid": (c_uint32, (OUTC,)),
    "handoff_outcome_handoff_id": (status, (OUTC, BYTES, ERR)),
    "handoff_outcome_timings": (status, (OUTC, P(handoff_phase_timings), ERR)),
    "handoff_outcome_free": (None, (OUTC,)),
}

_PACKAGE_DIR = Path(__file__).resolve().parent
_load_lock = threading.Lock()
_loaded: ctypes.CDLL | None = None
_loaded_from: str | None = None


def _candidates() -> list[tuple[str, str]]:
    """``(place, what to dlopen)`` in search order."""
    found: list[tuple[str, str]] = []
    env = os.environ.get("HANDOFF_LIBRARY")
    if env:
        found.append((f"$HANDOFF_LIBRARY={env}", env))
    for name in ("libhandoff.so", "libhandoff.so.0"):
        path = _PACKAGE_DIR / name
        found.append((f"package copy {path}", str(path)))
    for name in ("libhandoff.so.0", "libhandoff.so"):
        found.append((f"system library path ({name})", name))
    system = ctypes.util.find_library("handoff")
    if system:
        found.append((f"ctypes.util.find_library: {system}", system))
    return found


def _declare(cdll: ctypes.CDLL) -> None:
    missing = []
    for name, (restype, argtypes) in FUNCTIONS.items():
        try:
            fn = getattr(cdll, name)
        except AttributeError:
            missing.append(name)
            continue
        fn.restype = restype
        fn.argtypes = argtypes
    if missing:
        raise AttributeError(
            "this libhandoff lacks " + ", ".join(missing) + " (an older library than the binding?)"
        )


def lib() -> ctypes.CDLL:
    """The loaded library, every function declared. Loaded on first use."""
    global _loaded, _loaded_from
    if _loaded is not None:
        return _loaded
    with _load_lock:
        if _loaded is not None:
            return _loaded
        tried: list[tuple[str, str]] = []
        for place, target in _candidates():
            if os.sep in target and not os.path.exists(target):
                tried.append((place, "no such file"))
                continue
            try:
                cdll = ctypes.CDLL(target)
                _declare(cdll)
            except (OSError, AttributeError) as e:
                tried.append((place, str(e)))
                continue
            _loaded, _loaded_from = cdll, target
            return cdll
        raise LibraryNotFoundError(tried)


def library_path() -> str:
    """What the library was loaded from (loading it if needed)."""
    lib()
    assert _loaded_from is not None
    return _loaded_from
