"""`fftconv-rt info`: versions, libraries found, providers, GPU."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception as e:  # report, do not fail: info must work on a broken install
        return f"not available ({type(e).__name__})"


def collect() -> dict:
    from . import __version__, _lib

    info = {"fftconv-rt": __version__}
    for module in ("torch", "onnx", "onnxruntime", "onnxscript", "polygraphy", "numpy"):
        info[module] = _version(module)
    for name in (_lib.CORE_LIBRARY, _lib.ORT_LIBRARY):
        try:
            info[name] = str(_lib.find_library(name))
        except _lib.LibraryNotFoundError as e:
            info[name] = f"not found: {e}"
    try:
        info["core ABI version"] = str(_lib.core().fftconv_abi_version())
    except Exception as e:
        info["core ABI version"] = f"unavailable: {e}"
    try:
        import onnxruntime

        info["onnxruntime providers"] = ", ".join(onnxruntime.get_available_providers())
    except ImportError:
        info["onnxruntime providers"] = "onnxruntime not installed"
    try:
        if not _lib.has_cuda_kernels():
            info["CUDA kernels"] = "not in this build (built without nvcc)"
        else:
            info["CUDA kernels"] = "built; " + ("a CUDA device is visible" if _lib.cuda_available()
                                               else "no CUDA device visible")
    except _lib.LibraryNotFoundError as e:
        info["CUDA kernels"] = f"unavailable: {e}"
    gpu = "none found"
    if shutil.which("nvidia-smi"):
        try:
            gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip() or gpu
        except (OSError, subprocess.TimeoutExpired):
            pass
    info["GPU"] = gpu
    info["CPU threads"] = str(os.cpu_count())
    return info


def render() -> str:
    info = collect()
    width = max(len(k) for k in info)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in info.items())
