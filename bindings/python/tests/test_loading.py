"""Finding the library: $HANDOFF_LIBRARY, then a copy inside the package,
then the system's library path; a clear error naming every place tried."""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import libhandoff

PROBE = (
    "import libhandoff\n"
    "try:\n"
    "    print(libhandoff.library_path())\n"
    "except libhandoff.LibraryNotFoundError as e:\n"
    "    print('NOT FOUND'); print(e)\n"
)


def _run(env_changes: dict[str, str | None], pythonpath: Path | None = None) -> str:
    env = dict(os.environ)
    env.pop("LD_LIBRARY_PATH", None)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def package_without_library(short_tmp: Path) -> Path:
    """The package copied to a directory of its own, without the copy of
    the library an installed wheel carries."""
    source = Path(libhandoff.__file__).resolve().parent
    ignore = shutil.ignore_patterns("__pycache__", "libhandoff.so*")
    shutil.copytree(source, short_tmp / "libhandoff", ignore=ignore)
    return short_tmp


@pytest.fixture
def package_copy(package_without_library: Path) -> Path:
    """As package_without_library, with a copy of the library inside it."""
    inside = package_without_library / "libhandoff" / "libhandoff.so"
    shutil.copy(libhandoff.library_path(), inside)
    return package_without_library


def test_handoff_library_variable_wins(package_copy: Path) -> None:
    real = libhandoff.library_path()
    out = _run({"HANDOFF_LIBRARY": real}, package_copy)
    assert out.strip() == real


def test_the_package_copy_comes_next(package_copy: Path) -> None:
    out = _run({"HANDOFF_LIBRARY": None}, package_copy)
    assert out.strip() == str(package_copy / "libhandoff" / "libhandoff.so")


NOT_ON_THE_SYSTEM = pytest.mark.skipif(
    ctypes.util.find_library("handoff") is not None,
    reason="libhandoff is installed on this system's library path",
)


def _not_found(out: str) -> str:
    lines = out.splitlines()
    assert lines[0] == "NOT FOUND"
    text = "\n".join(lines[1:])
    assert "set HANDOFF_LIBRARY" in text
    assert "package copy" in text
    assert "system library path (libhandoff.so.0)" in text
    return text


@NOT_ON_THE_SYSTEM
def test_not_found_names_every_place_tried(package_without_library: Path) -> None:
    bogus = str(package_without_library / "nowhere" / "libhandoff.so")
    text = _not_found(_run({"HANDOFF_LIBRARY": bogus}, package_without_library))
    assert f"$HANDOFF_LIBRARY={bogus}: no such file" in text


@NOT_ON_THE_SYSTEM
def test_not_found_says_the_variable_is_not_set(package_without_library: Path) -> None:
    text = _not_found(_run({"HANDOFF_LIBRARY": None}, package_without_library))
    assert "$HANDOFF_LIBRARY: not set" in text
