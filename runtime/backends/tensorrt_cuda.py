"""The few CUDA runtime calls TensorRT I/O needs (device query, device buffers, pinned host buffers,
a stream, async copies), through cuda-python (preferred) or pycuda, whichever is installed. No torch.

    cuda = open_cuda()
    dev = cuda.malloc(nbytes); host = cuda.pinned((1, 3, 64, 128), np.float32)
    cuda.h2d_async(dev, host, cuda.stream); ...; cuda.synchronize()
"""

from __future__ import annotations

import ctypes
from typing import Any, Protocol

import numpy as np

from runtime.errors import MissingDependency, UserError
from runtime.lazy import has_module, lazy_import

NO_GPU = ("no CUDA device was found ({why}); TensorRT needs an NVIDIA GPU with its driver "
          "(check nvidia-smi, or tegrastats on Jetson)")


class Cuda(Protocol):
    """What the TensorRT backend and calibrator use; pointers are plain ints."""

    stream_handle: int

    def device_info(self) -> dict[str, str]: ...
    def malloc(self, nbytes: int) -> int: ...
    def free(self, ptr: int) -> None: ...
    def pinned(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray: ...
    def free_pinned(self, arr: np.ndarray) -> None: ...
    def h2d(self, dst: int, src: np.ndarray) -> None: ...
    def h2d_async(self, dst: int, src: np.ndarray) -> None: ...
    def d2h_async(self, dst: np.ndarray, src: int) -> None: ...
    def synchronize(self) -> None: ...
    def close(self) -> None: ...


def open_cuda(device: int = 0) -> Cuda:
    """cuda-python's runtime bindings if installed (13.x: cuda.bindings.runtime; 12.x: cuda.cudart),
    else pycuda; MissingDependency naming both when neither is there."""
    if has_module("cuda"):
        if has_module("cuda.bindings") and has_module("cuda.bindings.runtime"):
            return _CudaPython(lazy_import("cuda.bindings.runtime", "TensorRT I/O"), device)
        if has_module("cuda.cudart"):
            return _CudaPython(lazy_import("cuda.cudart", "TensorRT I/O"), device)
    if has_module("pycuda"):
        return _PyCuda(device)
    raise MissingDependency("neither cuda-python nor pycuda is installed (needed to move TensorRT inputs and outputs "
                            "to the GPU): pip install cuda-python (or pycuda).")


class _CudaPython:
    """cuda-python: every call returns (cudaError_t, *results)."""

    def __init__(self, cudart: Any, device: int) -> None:
        self.rt = cudart
        err, count = cudart.cudaGetDeviceCount()
        if err != cudart.cudaError_t.cudaSuccess or count <= device:
            why = _cudart_name(cudart, err) if err != cudart.cudaError_t.cudaSuccess else f"{count} devices, asked for #{device}"
            raise UserError(NO_GPU.format(why=f"cuda-python: {why}"))
        self.device = device
        self._call("cudaSetDevice", device)
        self.stream = self._call("cudaStreamCreate")
        self.stream_handle = int(self.stream)
        self._pinned: dict[int, int] = {}  # id(array) -> host pointer

    def _call(self, fn: str, *args: Any) -> Any:
        err, *res = getattr(self.rt, fn)(*args)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise UserError(f"CUDA call {fn} failed: {_cudart_name(self.rt, err)}")
        return res[0] if len(res) == 1 else tuple(res)

    def device_info(self) -> dict[str, str]:
        prop = self._call("cudaGetDeviceProperties", self.device)
        name = prop.name.decode("utf-8", "replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
        return {"name": name.strip(), "compute_capability": f"{prop.major}.{prop.minor}"}

    def malloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", max(int(nbytes), 1)))

    def free(self, ptr: int) -> None:
        self._call("cudaFree", ptr)

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
        ptr = int(self._call("cudaMallocHost", nbytes))
        raw = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8)), shape=(nbytes,))
        arr = raw[: int(np.prod(shape)) * dtype.itemsize].view(dtype).reshape(shape)
        self._pinned[id(arr)] = ptr
        return arr

    def free_pinned(self, arr: np.ndarray) -> None:
        ptr = self._pinned.pop(id(arr), None)
        if ptr is not None:
            self._call("cudaFreeHost", ptr)

    def h2d(self, dst: int, src: np.ndarray) -> None:
        self._call("cudaMemcpy", dst, src.ctypes.data, src.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice)

    def h2d_async(self, dst: int, src: np.ndarray) -> None:
        self._call("cudaMemcpyAsync", dst, src.ctypes.data, src.nbytes,
                   self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream)

    def d2h_async(self, dst: np.ndarray, src: int) -> None:
        self._call("cudaMemcpyAsync", dst.ctypes.data, src, dst.nbytes,
                   self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream)

    def synchronize(self) -> None:
        self._call("cudaStreamSynchronize", self.stream)

    def close(self) -> None:
        for ptr in list(self._pinned.values()):
            self._call("cudaFreeHost", ptr)
        self._pinned.clear()
        if self.stream is not None:
            self._call("cudaStreamDestroy", self.stream)
            self.stream = None


def _cudart_name(cudart: Any, err: Any) -> str:
    res = cudart.cudaGetErrorName(err)
    name = res[1] if isinstance(res, tuple) else res
    return name.decode() if isinstance(name, bytes) else str(err)


class _PyCuda:
    """pycuda: the device's primary context (shared with TensorRT's runtime API), pushed while open."""

    def __init__(self, device: int) -> None:
        drv = lazy_import("pycuda.driver", "TensorRT I/O")
        self.drv = drv
        try:
            drv.init()
            count = drv.Device.count()
        except drv.Error as e:
            raise UserError(NO_GPU.format(why=f"pycuda: {e}")) from e
        if count <= device:
            raise UserError(NO_GPU.format(why=f"pycuda: {count} devices, asked for #{device}"))
        self.dev = drv.Device(device)
        self.ctx = self.dev.retain_primary_context()
        self.ctx.push()
        self.stream = drv.Stream()
        self.stream_handle = int(self.stream.handle)
        self._allocs: dict[int, Any] = {}

    def device_info(self) -> dict[str, str]:
        major, minor = self.dev.compute_capability()
        return {"name": str(self.dev.name()).strip(), "compute_capability": f"{major}.{minor}"}

    def malloc(self, nbytes: int) -> int:
        alloc = self.drv.mem_alloc(max(int(nbytes), 1))
        self._allocs[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        alloc = self._allocs.pop(ptr, None)
        if alloc is not None:
            alloc.free()

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        return self.drv.pagelocked_empty(shape, np.dtype(dtype))  # type: ignore[no-any-return]

    def free_pinned(self, arr: np.ndarray) -> None:
        """pycuda frees page-locked arrays when they are garbage collected."""

    def h2d(self, dst: int, src: np.ndarray) -> None:
        self.drv.memcpy_htod(dst, src)

    def h2d_async(self, dst: int, src: np.ndarray) -> None:
        self.drv.memcpy_htod_async(dst, src, self.stream)

    def d2h_async(self, dst: np.ndarray, src: int) -> None:
        self.drv.memcpy_dtoh_async(dst, src, self.stream)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        for ptr in list(self._allocs):
            self.free(ptr)
        if self.ctx is not None:
            self.ctx.pop()
            self.ctx = None
