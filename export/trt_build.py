"""The TensorRT calls of an engine build (ONNX parser, builder config, profiles, timing cache, DLA),
driven by an `export.trt_choices.BuildChoice`. Written against TensorRT 8.5, 10.x and 11.x; features are
detected with hasattr on the installed module (`detect_capabilities`) and checked with mypy against
tensorrt-stubs (scripts/lint_trt.sh)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from export.trt_calibrator import CalibrationBatches, make_entropy_calibrator
from export.trt_choices import BuildChoice, Capabilities, Profile
from runtime.errors import UserError
from runtime.io import atomic_write_bytes
from runtime.trt_version import import_tensorrt, parse_trt_version

if TYPE_CHECKING:
    import tensorrt


def require_tensorrt(purpose: str = "building TensorRT engines") -> ModuleType:
    """The tensorrt module, or MissingDependency with the install hint."""
    return import_tensorrt(purpose)


def detect_capabilities(trt: ModuleType) -> Capabilities:
    """The installed TensorRT's features, by hasattr (and the version where an attribute lingers
    deprecated: EXPLICIT_BATCH is a no-op from 10 on)."""
    v = parse_trt_version(trt.__version__)
    flags, netflags = trt.BuilderFlag, trt.NetworkDefinitionCreationFlag
    return Capabilities(
        version=v,
        strongly_typed=hasattr(netflags, "STRONGLY_TYPED"),
        precision_flags=hasattr(flags, "FP16") and hasattr(flags, "INT8"),
        legacy_calibrator=hasattr(trt, "IInt8EntropyCalibrator2") and hasattr(trt.IBuilderConfig, "int8_calibrator"),
        calibrator_deprecated=(v.major, v.minor) >= (10, 1),
        explicit_batch_flag=v.major < 10 and hasattr(netflags, "EXPLICIT_BATCH"),
        named_tensors=hasattr(trt.ICudaEngine, "num_io_tensors"),
        version_compatible=hasattr(flags, "VERSION_COMPATIBLE"),
    )


@dataclass
class BuildRequest:
    onnx: Path
    out: Path
    choice: BuildChoice
    profile: Profile
    workspace_mib: int | None = None
    dla_core: int | None = None
    timing_cache: Path | None = None
    calibration: CalibrationBatches | None = None
    version_compatible: bool = False
    verbose: bool = False


@dataclass
class BuildResult:
    engine_bytes: int
    timing_cache_saved: bool
    notes: list[str]


def build_engine(req: BuildRequest, caps: Capabilities) -> BuildResult:
    """Parse `req.onnx`, configure the builder as `req.choice` says, build and write `req.out` atomically."""
    require_tensorrt()
    import tensorrt as trt  # typed by tensorrt-stubs

    notes: list[str] = []
    logger = trt.Logger(trt.Logger.VERBOSE if req.verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    net_flags = 0
    if caps.explicit_batch_flag:
        net_flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if req.choice.strongly_typed:
        net_flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(net_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(req.onnx)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise UserError(f"TensorRT's ONNX parser rejected {req.onnx.name}: {errors[0] if errors else 'no details'}"
                        f"{f' (+{len(errors) - 1} more)' if len(errors) > 1 else ''}")

    config = builder.create_builder_config()
    if req.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(req.workspace_mib) << 20)
    for name in req.choice.flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if "FP16" in req.choice.flags and hasattr(builder, "platform_has_fast_fp16") and not builder.platform_has_fast_fp16:
        notes.append("this GPU has no fast FP16; the FP16 engine may not be faster than FP32")
    if req.version_compatible:
        if not caps.version_compatible:
            raise UserError(f"TensorRT {caps.version.short} cannot build version-compatible engines (8.6+ can)")
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)

    profile = builder.create_optimization_profile()
    profile.set_shape(req.profile.name, req.profile.min, req.profile.opt, req.profile.max)
    config.add_optimization_profile(profile)

    if req.dla_core is not None:
        _configure_dla(builder, config, req.dla_core)

    calibrator = None
    if req.choice.calibrator:
        if req.calibration is None:
            raise UserError("this INT8 build needs --calib-data or --calib-cache")
        calibrator = make_entropy_calibrator(req.calibration, req.profile.name)
        config.int8_calibrator = calibrator
        if not req.profile.static:
            config.set_calibration_profile(profile)

    cache = _load_timing_cache(config, req.timing_cache, notes)
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.close()
    if serialized is None:
        raise UserError(f"TensorRT could not build an engine from {req.onnx.name} (its log above says why)")
    data = bytes(memoryview(serialized))
    atomic_write_bytes(req.out, data)
    saved = False
    if req.timing_cache is not None and cache is not None:
        atomic_write_bytes(req.timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
        saved = True
    return BuildResult(engine_bytes=len(data), timing_cache_saved=saved, notes=notes)


def _configure_dla(builder: tensorrt.Builder, config: tensorrt.IBuilderConfig, core: int) -> None:
    """Run layers on DLA core `core` (Jetson), the rest on the GPU."""
    import tensorrt as trt

    cores = builder.num_DLA_cores
    if cores == 0:
        raise UserError("--dla was given but this device has no DLA cores (DLA is on Jetson AGX/NX Xavier and Orin)")
    if not 0 <= core < cores:
        raise UserError(f"--dla {core} is out of range: this device has DLA cores 0..{cores - 1}")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def _load_timing_cache(c: tensorrt.IBuilderConfig, path: Path | None, notes: list[str]) -> tensorrt.ITimingCache | None:
    """Attach a timing cache (the file's contents where it exists, else empty); None without a path."""
    if path is None:
        return None
    blob = path.read_bytes() if path.is_file() else b""
    cache = c.create_timing_cache(blob)
    if not c.set_timing_cache(cache, False):
        notes.append(f"timing cache {path} does not match this GPU/TensorRT; starting a new one")
        cache = c.create_timing_cache(b"")
        c.set_timing_cache(cache, True)
    elif blob:
        notes.append(f"reusing timing cache {path}")
    return cache


def current_device() -> dict[str, str]:
    """{"name", "compute_capability"} of CUDA device 0, or UserError saying no GPU was found."""
    from runtime.backends.tensorrt_cuda import open_cuda

    cuda = open_cuda()
    try:
        return cuda.device_info()
    finally:
        cuda.close()

