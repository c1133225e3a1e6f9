"""TensorRT version parsing, the JetPack <-> TensorRT table, and importing tensorrt with a hint.

Used by export.trt (build planning, the sidecar) and runtime.backends.tensorrt_backend (engine compatibility),
so that version rules live in one place and are testable without TensorRT installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType

from runtime.errors import MissingDependency, UserError
from runtime.lazy import INSTALL_HINTS, lazy_import


@dataclass(frozen=True, order=True)
class TrtVersion:
    """A TensorRT version as (major, minor, patch[, build]); compares numerically."""

    major: int
    minor: int = 0
    patch: int = 0
    build: int = 0

    @property
    def short(self) -> str:
        """major.minor.patch: the part that must match for a plain engine to deserialize."""
        return f"{self.major}.{self.minor}.{self.patch}"

    def __str__(self) -> str:
        return self.short if not self.build else f"{self.short}.{self.build}"


_VERSION_RE = re.compile(r"^\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:\.(\d+))?")


def parse_trt_version(text: str) -> TrtVersion:
    """Parse '10.3.0', '8.5.2.2', '10.13.0.35' or '11.4.1+cuda13' into a TrtVersion."""
    m = _VERSION_RE.match(str(text))
    if not m:
        raise UserError(f"cannot read a TensorRT version from {text!r}; expected something like 10.3.0")
    return TrtVersion(*(int(g) if g is not None else 0 for g in m.groups()))


# JetPack release -> the TensorRT version it ships (from NVIDIA's JetPack release notes).
JETPACK_TRT: dict[str, str] = {
    "5.1": "8.5.2",
    "6.0": "8.6.2",
    "6.1": "10.3.0",
    "6.2": "10.3.0",
    "7.0": "10.13.0",
    "7.1": "10.13.0",
    "7.2": "10.16.0",
}


def jetpacks_for(version: TrtVersion) -> list[str]:
    """JetPack releases whose TensorRT has the same major.minor as `version` (empty if none)."""
    out = []
    for jp, trt in JETPACK_TRT.items():
        v = parse_trt_version(trt)
        if (v.major, v.minor) == (version.major, version.minor):
            out.append(jp)
    return out


def engine_runs_on(built: TrtVersion, runtime: TrtVersion, version_compatible: bool) -> bool:
    """Whether an engine built with TensorRT `built` deserializes under TensorRT `runtime`.

    Plain engines need the same major.minor.patch. Engines built with BuilderFlag.VERSION_COMPATIBLE
    (TensorRT >= 8.6 at build and run time) also run on any later runtime.
    """
    if (built.major, built.minor, built.patch) == (runtime.major, runtime.minor, runtime.patch):
        return True
    if not version_compatible:
        return False
    floor = (8, 6, 0)
    b = (built.major, built.minor, built.patch)
    r = (runtime.major, runtime.minor, runtime.patch)
    return b >= floor and r >= b


def import_tensorrt(purpose: str) -> ModuleType:
    """The real tensorrt module, or MissingDependency with the install hint. tensorrt-stubs alone
    leaves a `tensorrt` folder of .pyi files that imports as an empty namespace package, so the module
    must also have a __version__."""
    trt = lazy_import("tensorrt", purpose)
    if not hasattr(trt, "__version__"):
        raise MissingDependency(f"tensorrt is not installed (needed for {purpose}; only its type stubs are): "
                                f"{INSTALL_HINTS['tensorrt']}.")
    return trt
