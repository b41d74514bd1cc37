"""ONNX Runtime sessions with the fftconv-rt custom-op library registered."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from ._lib import ort_library_path


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - exercised only without onnxruntime
        raise ImportError("fftconv-rt: onnxruntime is not installed; `pip install onnxruntime` "
                          "(or onnxruntime-gpu for the CUDA provider)") from e
    return onnxruntime


def session_options(base=None):
    """SessionOptions (a new one, or `base`) with the FFTConv library registered."""
    ort = _onnxruntime()
    options = base if base is not None else ort.SessionOptions()
    options.register_custom_ops_library(ort_library_path())
    return options


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime has it, then CPU."""
    available = _onnxruntime().get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def make_session(model: Union[str, Path, bytes], providers: Optional[Sequence] = None,
                 options=None, intra_op_threads: Optional[int] = None):
    """An InferenceSession for an ONNX model that contains fftconv_rt::FFTConv nodes.

    providers: as for onnxruntime (default: CUDA when available, then CPU).
    """
    ort = _onnxruntime()
    options = session_options(options)
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    if isinstance(model, Path):
        model = str(model)
    return ort.InferenceSession(model, options, providers=list(providers or default_providers()))
