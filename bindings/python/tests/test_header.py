"""The binding declares every function of include/handoff.h, with the
header's types, and knows every status and constant the header defines."""

from __future__ import annotations

import ctypes
import re
from ctypes import POINTER

from conftest import HEADER

import libhandoff
from libhandoff import _lib
from libhandoff.errors import STATUS_CLASSES
from libhandoff.messages import Field, MessageKind, Side


def _header_text() -> str:
    text = HEADER.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def header_functions() -> dict[str, tuple[str, list[str]]]:
    """Every ``handoff_*(`` declaration: name to (return type, parameter types)."""
    found = {}
    pattern = r"^([A-Za-z_][^;{}()#]*?)\b(handoff_\w+)\s*\(([^)]*)\)\s*;"
    for m in re.finditer(pattern, _header_text(), flags=re.M):
        ret = " ".join(m.group(1).split())
        params = []
        for param in m.group(3).split(","):
            param = " ".join(param.split())
            if param in ("void", ""):
                continue
            # Drop the parameter's name: what is left is its type.
            params.append(re.sub(r"\s*\b\w+$", "", param).strip())
        found[m.group(2)] = (ret, params)
    return found


def test_the_header_is_parsed() -> None:
    functions = header_functions()
    assert len(functions) >= 80
    assert functions["handoff_message_encode"] == (
        "handoff_status",
        [
            "const struct handoff_message *",
            "uint8_t *",
            "size_t",
            "size_t *",
            "struct handoff_error **",
        ],
    )


def test_every_header_function_is_declared() -> None:
    declared = set(_lib.FUNCTIONS)
    in_header = set(header_functions())
    assert sorted(in_header - declared) == [], "functions the binding does not declare"
    assert sorted(declared - in_header) == [], "declared functions the header lacks"


_SCALARS = {
    "void": None,
    "handoff_status": ctypes.c_int32,
    "int32_t": ctypes.c_int32,
    "int": ctypes.c_int,
    "uint16_t": ctypes.c_uint16,
    "uint32_t": ctypes.c_uint32,
    "uint64_t": ctypes.c_uint64,
    "size_t": ctypes.c_size_t,
    "bool": ctypes.c_bool,
    "void *": ctypes.c_void_p,
    "char *": ctypes.c_char_p,
    # byte buffers are passed as char pointers (bytes, string buffers)
    "uint8_t *": ctypes.c_char_p,
    "uint8_t **": POINTER(ctypes.c_void_p),
    "char **": POINTER(ctypes.c_char_p),
    "handoff_log_fn": _lib.handoff_log_fn,
}


def expected_ctype(c_type: str) -> object:
    """The ctypes type a C type must be declared with."""
    c_type = c_type.replace("const ", "").strip()
    if c_type in _SCALARS:
        return _SCALARS[c_type]
    m = re.fullmatch(r"struct (handoff_\w+) (\*+)", c_type)
    if m:
        result: object = getattr(_lib, m.group(1))
        for _ in m.group(2):
            result = POINTER(result)  # type: ignore[arg-type]
        return result
    m = re.fullmatch(r"(\w+) \*", c_type)
    if m and m.group(1) in _SCALARS:
        return POINTER(_SCALARS[m.group(1)])  # type: ignore[arg-type]
    raise AssertionError(f"no ctypes mapping for C type {c_type!r}")


def test_declared_types_match_the_header() -> None:
    mismatches = []
    for name, (ret, params) in header_functions().items():
        restype, argtypes = _lib.FUNCTIONS[name]
        if restype is not expected_ctype(ret):
            mismatches.append(f"{name}: returns {ret}, declared {restype}")
        expected = [expected_ctype(p) for p in params]
        if list(argtypes) != expected:
            mismatches.append(f"{name}: takes {params}, declared {argtypes}")
    assert mismatches == []


def test_the_loaded_library_has_the_declarations() -> None:
    lib = _lib.lib()
    for name, (restype, argtypes) in _lib.FUNCTIONS.items():
        fn = getattr(lib, name)
        assert fn.restype is restype, name
        assert tuple(fn.argtypes) == tuple(argtypes), name


def _defines(prefix: str) -> dict[str, int]:
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(rf"#define ({prefix}\w+) (\d+)\b", HEADER.read_text())
    }


def test_statuses_match_the_header() -> None:
    text = _header_text()
    enum = re.search(r"enum handoff_status[^{]*\{(.*?)\};", text, flags=re.S)
    assert enum is not None
    statuses = {
        name: int(value) for name, value in re.findall(r"(HANDOFF_\w+) = (\d+)", enum.group(1))
    }
    failures = {name: value for name, value in statuses.items() if value != 0}
    assert {cls.STATUS_NAME: value for value, cls in STATUS_CLASSES.items()} == failures
    for name, value in statuses.items():
        assert libhandoff.status_name(value) == name


def test_constants_match_the_header() -> None:
    kinds = _defines("HANDOFF_MSG_")
    assert {f"HANDOFF_MSG_{k.name}": k.value for k in MessageKind} == kinds
    assert {f"HANDOFF_FIELD_{f.name}": f.value for f in Field} == _defines("HANDOFF_FIELD_")
    assert {f"HANDOFF_SIDE_{s.name}": s.value for s in Side} == _defines("HANDOFF_SIDE_")
    assert {f"HANDOFF_PHASE_{p.name}": p.value for p in libhandoff.Phase} == _defines(
        "HANDOFF_PHASE_"
    )
    assert {f"HANDOFF_LISTENER_{k.name}": k.value for k in libhandoff.ListenerKind} == _defines(
        "HANDOFF_LISTENER_"
    )
    assert {f"HANDOFF_LOG_{lv.name}": lv.value for lv in libhandoff.LogLevel} == _defines(
        "HANDOFF_LOG_"
    )
    assert {f"HANDOFF_SERVE_{o.name}": o.value for o in libhandoff.ServeOutcome} == _defines(
        "HANDOFF_SERVE_"
    )
    assert {f"HANDOFF_STEP_{s.name}": s.value for s in libhandoff.Step} == _defines("HANDOFF_STEP_")
    assert {f"HANDOFF_PARTY_{p.name}": p.value for p in libhandoff.Party} == _defines(
        "HANDOFF_PARTY_"
    )
    assert {f"HANDOFF_CAUSE_{c.name}": c.value for c in libhandoff.Cause} == _defines(
        "HANDOFF_CAUSE_"
    )


def test_struct_layouts_match_the_header() -> None:
    text = _header_text()
    for struct in ("handoff_journal", "handoff_phase_timings", "handoff_service_callbacks"):
        body = re.search(rf"typedef struct {struct} \{{(.*?)\}} {struct};", text, flags=re.S)
        assert body is not None, struct
        fields = re.findall(r"(?:\(\*(\w+)\)\([^)]*\)|(\w+)(?:\[\d+\])?);", body.group(1))
        names = [pointer or plain for pointer, plain in fields]
        declared = [f[0] for f in getattr(_lib, struct)._fields_]
        assert declared == names, struct
