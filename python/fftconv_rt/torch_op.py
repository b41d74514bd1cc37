"""The op for PyTorch: torch.ops.fftconv_rt.fftconv and the FFTConv module.

The kernel calls the core C ABI through ctypes (no libtorch build dependency).
The fake implementation lets torch.export / torch.onnx.export trace it, and
onnx_translation.py turns it into one fftconv_rt::FFTConv node.
"""

from __future__ import annotations

import ctypes
from typing import Optional

import torch
from torch import Tensor

from . import _lib

def _resolve(u, k, D, pregate, postgate, fft_size, layout, freq_keep=0):
    tensors = (u, k, D, pregate, postgate)
    descs = [_lib.describe(t.shape, _lib.dtype_code(str(t.dtype))) if t is not None else _lib.describe((), None)
             for t in tensors]
    return _lib.resolve(descs, fft_size, layout, freq_keep)


def _check_tensor_args(u, k, D, pregate, postgate):
    for name, t in zip(_lib.INPUT_NAMES, (u, k, D, pregate, postgate)):
        if t is not None and not isinstance(t, Tensor):
            raise _lib.FFTConvError(f"FFTConv: input '{name}' must be a torch.Tensor, got {type(t).__name__}")


def _check_same_device(u, tensors):
    for name, t in zip(_lib.INPUT_NAMES, tensors):
        if t is not None and t.device != u.device:
            raise _lib.FFTConvError(f"FFTConv: input '{name}' is on {t.device}; expected {u.device} like 'u'")


def _setup(u, k, D, pregate, postgate, fft_size, layout, freq_keep):
    """What every kernel does first: checks the arguments, makes them contiguous, validates them
    against the op contract, allocates y, and points the params at all of them."""
    _check_tensor_args(u, k, D, pregate, postgate)
    tensors = [t.contiguous() if t is not None else None for t in (u, k, D, pregate, postgate)]
    _check_same_device(u, tensors)
    params, out_shape = _resolve(*tensors, fft_size, layout, freq_keep)
    y = torch.empty(out_shape, dtype=u.dtype, device=u.device)
    _lib.set_pointers(params, [t.data_ptr() if t is not None else None for t in tensors], y.data_ptr())
    return params, tensors, y


@torch.library.custom_op("fftconv_rt::fftconv", mutates_args=(), device_types="cpu")
def fftconv(u: Tensor, k: Tensor, D: Optional[Tensor] = None, pregate: Optional[Tensor] = None,
            postgate: Optional[Tensor] = None, fft_size: int = 0, layout: str = "BHL", freq_keep: int = 0) -> Tensor:
    """y = postgate * (irfft(rfft(pregate*u, n) * rfft(k, n), n)[..., :L] + D * pregate*u); see op_spec.toml.
    freq_keep > 0: rfft(k, n) keeps its freq_keep lowest bins (n = fft_size, or 2L, a power of two).

    Non-contiguous inputs are copied to contiguous memory first."""
    params, _, y = _setup(u, k, D, pregate, postgate, fft_size, layout, freq_keep)
    if y.numel() == 0:
        return y
    params.num_threads = torch.get_num_threads()
    _lib.check(_lib.core().fftconv_cpu_forward(ctypes.byref(params), None))
    return y


def prepare_filter_cuda(params, k: Tensor, device) -> Tensor:
    """The filter spectrum of k for these params, on the current stream (a float32 device buffer)."""
    lib = _lib.core()
    spectrum = torch.empty(max(1, lib.fftconv_cuda_filter_bytes(ctypes.byref(params)) // 4), dtype=torch.float32,
                           device=device)
    workspace = _workspace(params, device)
    params.k = k.data_ptr()
    _lib.check(lib.fftconv_cuda_prepare_filter(ctypes.byref(params), spectrum.data_ptr(), workspace.data_ptr(),
                                               workspace.numel()))
    return spectrum


def _workspace(params, device) -> Tensor:
    return torch.empty(max(1, _lib.core().fftconv_cuda_workspace_bytes(ctypes.byref(params))), dtype=torch.uint8,
                       device=device)


@fftconv.register_kernel("cuda")
def _fftconv_cuda(u, k, D=None, pregate=None, postgate=None, fft_size=0, layout="BHL", freq_keep=0):
    if not _lib.has_cuda_kernels():
        raise _lib.FFTConvError("FFTConv: this build of fftconv-rt has no CUDA kernels (built without nvcc); "
                                "rebuild with -DFFTCONV_BUILD_CUDA=ON or move the tensors to the CPU")
    params, tensors, y = _setup(u, k, D, pregate, postgate, fft_size, layout, freq_keep)
    if y.numel() == 0:
        return y
    with torch.cuda.device(u.device):
        params.stream = torch.cuda.current_stream(u.device).cuda_stream
        spectrum = prepare_filter_cuda(params, tensors[1], u.device)
        workspace = _workspace(params, u.device)
        _lib.check(_lib.core().fftconv_cuda_forward(ctypes.byref(params), spectrum.data_ptr(), workspace.data_ptr(),
                                                    workspace.numel()))
    return y


@fftconv.register_fake
def _fftconv_fake(u, k, D=None, pregate=None, postgate=None, fft_size=0, layout="BHL", freq_keep=0):
    if u.dim() != 3:
        raise _lib.FFTConvError(f"FFTConv: input 'u' must be rank 3, got rank {u.dim()}")
    if k.dim() != 2:
        raise _lib.FFTConvError(f"FFTConv: input 'k' must be rank 2 (H, Lk), got rank {k.dim()}")
    if layout not in ("BHL", "BLH"):
        raise _lib.FFTConvError(f"FFTConv: attribute 'layout' must be \"BHL\" or \"BLH\", got {layout!r}")
    return torch.empty_like(u, memory_format=torch.contiguous_format)


class FFTConv(torch.nn.Module):
    """A long convolution layer: a learned filter k (H, Lk), an optional skip D (H,).

    forward(u, pregate=None, postgate=None) runs fftconv_rt::fftconv; it exports
    to ONNX as one FFTConv node.
    """

    def __init__(self, channels: int, filter_len: int, skip: bool = True, fft_size: int = 0,
                 layout: str = "BHL", decay: float = 4.0):
        super().__init__()
        t = torch.arange(filter_len, dtype=torch.float32)
        envelope = torch.exp(-decay * t / max(filter_len, 1))
        self.k = torch.nn.Parameter(torch.randn(channels, filter_len) * envelope / filter_len ** 0.5)
        self.D = torch.nn.Parameter(torch.randn(channels)) if skip else None
        self.fft_size = fft_size
        self.layout = layout

    def forward(self, u: Tensor, pregate: Optional[Tensor] = None, postgate: Optional[Tensor] = None) -> Tensor:
        return fftconv(u, self.k, self.D, pregate, postgate, self.fft_size, self.layout)
