"""Locating the native libraries and calling the core C ABI through ctypes."""

from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

import numpy as np

FLOAT32, FLOAT16, BFLOAT16 = 1, 10, 16
INPUT_NAMES = ("u", "k", "D", "pregate", "postgate", "k_rev")
MAX_RANK = 8

CORE_LIBRARY = "libfftconv_rt.so"
ORT_LIBRARY = "libfftconv_ort.so"

_ENV_DIR = "FFTCONV_RT_LIB_DIR"


class FFTConvError(ValueError):
    """A call refused by the op contract (bad shape, type or attribute) or failed in the core."""


class LibraryNotFoundError(FileNotFoundError):
    """A native library of fftconv-rt is not where the package looks for it."""


class LibraryLoadError(OSError):
    """A native library of fftconv-rt was found but cannot be loaded on this machine."""


def _search_dirs() -> list[Path]:
    dirs = []
    if os.environ.get(_ENV_DIR):
        dirs.append(Path(os.environ[_ENV_DIR]))
    # The package's lib/ folder: in site-packages for a wheel, beside the
    # sources' redirect for an editable install (every entry of __path__).
    import fftconv_rt

    for entry in fftconv_rt.__path__:
        dirs.append(Path(entry) / "lib")
    repo = Path(__file__).resolve().parent.parent.parent
    dirs.append(repo / "build" / "lib")  # a plain CMake build in a source checkout
    return list(dict.fromkeys(dirs))


# ELF e_machine numbers of the machines a wheel could have been built for.
_ELF_MACHINES = {3: "i386", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64", 21: "ppc64le"}


def _check_loadable(path: Path) -> None:
    """Refuses a file the dynamic loader would reject with a misleading message ("cannot open
    shared object file: No such file or directory" for another architecture): not an ELF
    shared library, or one built for another machine."""
    with open(path, "rb") as f:
        header = f.read(20)
    if header[:4] != b"\x7fELF" or len(header) < 20:
        raise LibraryLoadError(f"fftconv-rt: {path} is not a shared library (no ELF header); rebuild or reinstall "
                               f"the package")
    machine = _ELF_MACHINES.get(int.from_bytes(header[18:20], "little"), f"ELF machine {header[18] + 256 * header[19]}")
    host = platform.machine()
    if machine != host and not (machine == "arm" and host.startswith("arm")):
        raise LibraryLoadError(f"fftconv-rt: {path} was built for {machine}, this machine is {host}; build the "
                               f"libraries here (pip install .) or install the wheel for {host}")


def find_library(name: str) -> Path:
    """Path of a native library of the package; raises LibraryNotFoundError naming where it looked,
    LibraryLoadError when the file found cannot be loaded here."""
    dirs = _search_dirs()
    for d in dirs:
        candidate = d / name
        if candidate.is_file():
            _check_loadable(candidate)
            return candidate
    looked = ", ".join(str(d) for d in dirs)
    raise LibraryNotFoundError(
        f"fftconv-rt: {name} not found (looked in: {looked}). Install the package with "
        f"`pip install .`, or build it with CMake and set {_ENV_DIR} to the folder holding {name}."
    )


def ort_library_path() -> str:
    """Path of the ONNX Runtime custom-op library (for SessionOptions.register_custom_ops_library)."""
    return str(find_library(ORT_LIBRARY))


# The version of fftconv.h that TensorDesc and Params mirror (FFTCONV_ABI_VERSION).
ABI_VERSION = 3


class TensorDesc(ctypes.Structure):
    _fields_ = [
        ("present", ctypes.c_int32),
        ("dtype", ctypes.c_int32),
        ("rank", ctypes.c_int32),
        ("dims", ctypes.c_int64 * MAX_RANK),
    ]


class Params(ctypes.Structure):
    _fields_ = [
        ("u", ctypes.c_void_p),
        ("k", ctypes.c_void_p),
        ("D", ctypes.c_void_p),
        ("pregate", ctypes.c_void_p),
        ("postgate", ctypes.c_void_p),
        ("y", ctypes.c_void_p),
        ("B", ctypes.c_int64),
        ("H", ctypes.c_int64),
        ("L", ctypes.c_int64),
        ("Lk", ctypes.c_int64),
        ("fft_size", ctypes.c_int64),
        ("dtype", ctypes.c_int32),
        ("k_dtype", ctypes.c_int32),
        ("D_dtype", ctypes.c_int32),
        ("layout", ctypes.c_int32),
        ("num_threads", ctypes.c_int32),
        ("stream", ctypes.c_void_p),
        ("parallel_for", ctypes.c_void_p),  # NULL: the core's own threads
        ("parallel_host", ctypes.c_void_p),
        ("freq_keep", ctypes.c_int64),
        ("k_rev", ctypes.c_void_p),
        ("Lk_rev", ctypes.c_int64),
        ("k_rev_dtype", ctypes.c_int32),
        ("truncate_filter", ctypes.c_int32),
    ]


class Attributes(ctypes.Structure):
    _fields_ = [
        ("fft_size", ctypes.c_int64),
        ("layout", ctypes.c_char_p),
        ("freq_keep", ctypes.c_int64),
        ("period_scale", ctypes.c_int64),
        ("max_length", ctypes.c_int64),
    ]


# fftconv_cpu_path_kind of fftconv.h, by value.
CPU_PATHS = {0: "direct_sum", 1: "blocks", 2: "whole_row", 3: "at_period"}


_core = None


def core() -> ctypes.CDLL:
    """The loaded core library, with argument types declared."""
    global _core
    if _core is None:
        lib = ctypes.CDLL(str(find_library(CORE_LIBRARY)))
        lib.fftconv_last_error.restype = ctypes.c_char_p
        lib.fftconv_abi_version.restype = ctypes.c_int32
        if lib.fftconv_abi_version() != ABI_VERSION:  # Params below would not match its struct
            raise FFTConvError(f"FFTConv: {lib._name} has C ABI version {lib.fftconv_abi_version()}; this package "
                               f"needs version {ABI_VERSION}: rebuild the native libraries (pip install .)")
        lib.fftconv_resolve.restype = ctypes.c_int
        lib.fftconv_resolve.argtypes = [ctypes.POINTER(TensorDesc), ctypes.c_int32, ctypes.POINTER(Attributes),
                                        ctypes.POINTER(Params), ctypes.POINTER(ctypes.c_int64)]
        lib.fftconv_cpu_path.restype = ctypes.c_int32
        lib.fftconv_cpu_path.argtypes = [ctypes.POINTER(Params)]
        lib.fftconv_cpu_forward.restype = ctypes.c_int
        lib.fftconv_cpu_forward.argtypes = [ctypes.POINTER(Params), ctypes.c_void_p]
        lib.fftconv_cpu_prepare_filter.restype = ctypes.c_int
        lib.fftconv_cpu_prepare_filter.argtypes = [ctypes.POINTER(Params), ctypes.c_void_p]
        lib.fftconv_cpu_filter_floats.restype = ctypes.c_int64
        lib.fftconv_cpu_filter_floats.argtypes = [ctypes.POINTER(Params)]
        if hasattr(lib, "fftconv_cuda_forward"):  # built with CUDA
            lib.fftconv_cuda_available.restype = ctypes.c_int32
            for name in ("fftconv_cuda_filter_bytes", "fftconv_cuda_workspace_bytes"):
                getattr(lib, name).restype = ctypes.c_int64
                getattr(lib, name).argtypes = [ctypes.POINTER(Params)]
            for name in ("fftconv_cuda_prepare_filter", "fftconv_cuda_forward"):
                getattr(lib, name).restype = ctypes.c_int
                getattr(lib, name).argtypes = [ctypes.POINTER(Params), ctypes.c_void_p, ctypes.c_void_p,
                                               ctypes.c_int64]
        _core = lib
    return _core


def has_cuda_kernels() -> bool:
    """True when the core library was built with the CUDA kernels."""
    return hasattr(core(), "fftconv_cuda_forward")


def cuda_available() -> bool:
    """True when the CUDA kernels are built and a CUDA device is visible."""
    return has_cuda_kernels() and bool(core().fftconv_cuda_available())


def check(status: int) -> None:
    if status != 0:
        raise FFTConvError(core().fftconv_last_error().decode())


def describe(shape, dtype_code: int | None) -> TensorDesc:
    """A TensorDesc for an input of this shape and ONNX type number (None: omitted)."""
    desc = TensorDesc()
    if dtype_code is None:
        return desc
    shape = tuple(int(d) for d in shape)
    if len(shape) > MAX_RANK:
        raise FFTConvError(f"FFTConv: an input has rank {len(shape)}; at most {MAX_RANK} is described")
    desc.present, desc.dtype, desc.rank = 1, dtype_code, len(shape)
    for i, d in enumerate(shape):
        desc.dims[i] = d
    return desc


def resolve(descs, fft_size: int, layout: str, freq_keep: int = 0, period_scale: int = 0,
            max_length: int = 0) -> tuple[Params, tuple[int, int, int]]:
    """Validates the inputs (one TensorDesc per input of INPUT_NAMES, or the first five) and the
    attributes against the op contract (the core's messages) and returns the params."""
    array = (TensorDesc * len(descs))(*descs)
    params = Params()
    out_shape = (ctypes.c_int64 * 3)()
    if not isinstance(layout, str):
        raise FFTConvError(f"FFTConv: attribute 'layout' must be a string \"BHL\" or \"BLH\", got {layout!r}")
    attributes = Attributes(int(fft_size), layout.encode(), int(freq_keep), int(period_scale), int(max_length))
    check(core().fftconv_resolve(array, len(descs), ctypes.byref(attributes), ctypes.byref(params), out_shape))
    return params, tuple(out_shape)


def cpu_path(params: Params) -> str:
    """How the CPU core computes a call with these params: "direct_sum", "blocks", "whole_row" or "at_period"."""
    path = core().fftconv_cpu_path(ctypes.byref(params))
    if path < 0:
        raise FFTConvError(core().fftconv_last_error().decode())
    return CPU_PATHS[path]


# ONNX TensorProto type numbers by dtype name (NumPy's and torch's names agree); 0 for
# anything else, which fftconv_resolve refuses by number.
_ONNX_TYPE_NUMBERS = {"float32": FLOAT32, "float16": FLOAT16, "bfloat16": BFLOAT16, "float64": 11, "int32": 6,
                      "int64": 7, "uint8": 2, "int8": 3, "bool": 9}


def dtype_code(dtype_name: str) -> int:
    """ONNX type number of a dtype name ("float16", "torch.float16", a bfloat16 from ml_dtypes...)."""
    return _ONNX_TYPE_NUMBERS.get(dtype_name.replace("torch.", ""), 0)


def numpy_dtype_code(a: np.ndarray) -> int:
    """ONNX type number of a NumPy array; bfloat16 arrays come from ml_dtypes."""
    return dtype_code(a.dtype.name)


def set_pointers(params: Params, inputs, y) -> None:
    """Sets the input addresses (by INPUT_NAMES; None for omitted inputs) and the output address."""
    for name, address in zip(INPUT_NAMES, inputs):
        setattr(params, name, address)
    params.y = y


def fftconv_numpy(u, k, D=None, pregate=None, postgate=None, fft_size: int = 0, layout: str = "BHL",
                  num_threads: int = 0, freq_keep: int = 0, k_rev=None, period_scale: int = 0,
                  max_length: int = 0) -> np.ndarray:
    """Runs the CPU core on NumPy arrays (a direct test of the C ABI)."""
    params, arrays, y = numpy_params(u, k, D, pregate, postgate, fft_size, layout, freq_keep, k_rev, period_scale,
                                     max_length)
    params.num_threads = num_threads
    check(core().fftconv_cpu_forward(ctypes.byref(params), None))
    return y


def numpy_params(u, k, D=None, pregate=None, postgate=None, fft_size: int = 0, layout: str = "BHL",
                 freq_keep: int = 0, k_rev=None, period_scale: int = 0, max_length: int = 0):
    """The params of a call on NumPy arrays (resolved, pointers set), the contiguous arrays they point
    at (keep them alive), and the output array."""
    arrays = [u, k, D, pregate, postgate, k_rev]
    descs = [describe(a.shape, numpy_dtype_code(a)) if a is not None else describe((), None) for a in arrays]
    params, out_shape = resolve(descs, fft_size, layout, freq_keep, period_scale, max_length)
    arrays = [np.ascontiguousarray(a) if a is not None else None for a in arrays]
    y = np.empty(out_shape, dtype=arrays[0].dtype)
    set_pointers(params, [a.ctypes.data if a is not None else None for a in arrays], y.ctypes.data)
    return params, arrays, y
