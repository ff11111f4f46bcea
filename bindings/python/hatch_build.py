"""The wheel's build hook: with ``HANDOFF_WHEEL_BINARIES`` set (``make wheel``
sets it to target/release), the wheel carries that directory's
``libhandoff.so`` inside the package and ``handoff-supervisor`` as a script
(the venv's ``bin/``), and is tagged for this platform. Without it the wheel
is pure Python and loads the library from ``$HANDOFF_LIBRARY`` or the
system's library path (``make venv``)."""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.config import BuilderConfig
from hatchling.builders.hooks.plugin.interface import BuildHookInterface

BINARIES_VARIABLE = "HANDOFF_WHEEL_BINARIES"


class BundleBinariesHook(BuildHookInterface[BuilderConfig]):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        source = os.environ.get(BINARIES_VARIABLE)
        if not source:
            return
        library = Path(source) / "libhandoff.so"
        supervisor = Path(source) / "handoff-supervisor"
        missing = [str(p) for p in (library, supervisor) if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"${BINARIES_VARIABLE}={source} lacks {', '.join(missing)} (run `make build`)"
            )
        # Python-independent (ctypes, no extension module), platform-bound.
        platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
        build_data["pure_python"] = False
        build_data["tag"] = f"py3-none-{platform}"
        build_data["force_include"][str(library)] = "libhandoff/libhandoff.so"
        build_data["shared_scripts"][str(supervisor)] = "handoff-supervisor"
