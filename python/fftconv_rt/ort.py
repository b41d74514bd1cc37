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


# The CUDA provider's memory arena by default grows by doubling its last extension (kNextPowerOfTwo), so a
# run that needs 9 GiB may leave 16 GiB held; extending by what is requested keeps it near the need.
CUDA_MEMORY_OPTIONS = {"arena_extend_strategy": "kSameAsRequested"}


def with_memory_options(providers: Sequence) -> list:
    """The providers with CUDA_MEMORY_OPTIONS added to the CUDA provider's options (a bare name becomes
    (name, options)); options the caller gave for the CUDA provider win over these."""
    result = []
    for provider in providers:
        name, given = (provider, {}) if isinstance(provider, str) else (provider[0], dict(provider[1]))
        if name == "CUDAExecutionProvider":
            result.append((name, {**CUDA_MEMORY_OPTIONS, **given}))
        else:
            result.append(provider)
    return result


def make_session(model: Union[str, Path, bytes], providers: Optional[Sequence] = None,
                 options=None, intra_op_threads: Optional[int] = None):
    """An InferenceSession for an ONNX model that contains fftconv_rt::FFTConv nodes.

    providers: as for onnxruntime (default: CUDA when available, then CPU); the CUDA provider gets
    CUDA_MEMORY_OPTIONS unless the caller's options for it say otherwise.
    """
    ort = _onnxruntime()
    options = session_options(options)
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
    if isinstance(model, Path):
        model = str(model)
    return ort.InferenceSession(model, options, providers=with_memory_options(providers or default_providers()))


def run(session, feeds: dict, output_names: Optional[Sequence[str]] = None) -> list:
    """session.run that also takes and returns bfloat16 arrays (ml_dtypes), which
    onnxruntime's Python binding cannot convert by itself."""
    import ctypes

    import numpy as np
    from onnx import TensorProto

    ort = _onnxruntime()
    names = list(output_names or [o.name for o in session.get_outputs()])
    binding = session.io_binding()
    for name, value in feeds.items():
        value = np.ascontiguousarray(value)
        if value.dtype.name == "bfloat16":
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                value.view(np.uint16), onnx_element_type=TensorProto.BFLOAT16))
        else:
            binding.bind_cpu_input(name, value)
    for name in names:
        binding.bind_output(name, "cpu")
    session.run_with_iobinding(binding)
    results = []
    for value in binding.get_outputs():
        if value.data_type() == "tensor(bfloat16)":
            import ml_dtypes

            shape = value.shape()
            count = int(np.prod(shape)) if shape else 1
            raw = np.ctypeslib.as_array((ctypes.c_uint16 * count).from_address(value.data_ptr())) if count else \
                np.empty(0, np.uint16)
            results.append(raw.copy().view(ml_dtypes.bfloat16).reshape(shape))
        else:
            results.append(value.numpy())
    return results


# numpy types onnxruntime's Python IO binding takes (it has none for bfloat16)
_BINDABLE = ("float32", "float16", "int64", "int32")


def _device_buffer(tensor) -> tuple[int, list, str, str, int]:
    """(pointer, shape, dtype name, device type, device id) of a torch tensor or a cupy array."""
    if hasattr(tensor, "data_ptr"):  # torch
        if not tensor.is_contiguous():
            raise ValueError("fftconv-rt: IO binding needs contiguous tensors; call .contiguous() first")
        device = tensor.device
        return (tensor.data_ptr(), list(tensor.shape), str(tensor.dtype).replace("torch.", ""),
                "cuda" if device.type == "cuda" else "cpu", device.index or 0)
    if hasattr(tensor, "data") and hasattr(tensor.data, "ptr"):  # cupy
        if not tensor.flags.c_contiguous:
            raise ValueError("fftconv-rt: IO binding needs C-contiguous arrays")
        return tensor.data.ptr, list(tensor.shape), tensor.dtype.name, "cuda", tensor.device.id
    raise TypeError(f"fftconv-rt: expected a torch tensor or a cupy array, got {type(tensor).__name__}")


def run_on_device(session, inputs: dict, outputs: dict) -> None:
    """Runs the session on device memory with no host copies: `inputs` and `outputs` map names
    to torch tensors or cupy arrays (outputs preallocated with the right shape and type, on the
    device the session's provider computes on)."""
    import numpy as np

    binding = session.io_binding()
    for binder, tensors in ((binding.bind_input, inputs), (binding.bind_output, outputs)):
        for name, tensor in tensors.items():
            pointer, shape, dtype, device_type, device_id = _device_buffer(tensor)
            if dtype not in _BINDABLE:
                raise TypeError(f"fftconv-rt: '{name}' has type {dtype}; onnxruntime's IO binding takes "
                                f"{', '.join(_BINDABLE)} (for bfloat16 use run(), which copies through the host)")
            binder(name, device_type, device_id, np.dtype(dtype).type, shape, pointer)
    session.run_with_iobinding(binding)
