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
from torch._subclasses.fake_tensor import FakeTensor

from . import _lib

def _resolve(tensors, fft_size, layout, freq_keep, period_scale, max_length):
    descs = [_lib.describe(t.shape, _lib.dtype_code(str(t.dtype))) if t is not None else _lib.describe((), None)
             for t in tensors]
    return _lib.resolve(descs, fft_size, layout, freq_keep, period_scale, max_length)


def _check_tensor_args(tensors):
    for name, t in zip(_lib.INPUT_NAMES, tensors):
        if t is not None and not isinstance(t, Tensor):
            raise _lib.FFTConvError(f"FFTConv: input '{name}' must be a torch.Tensor, got {type(t).__name__}")


def _check_same_device(tensors):
    """Every input on u's device (a meta k beside a CPU u reaches the fake kernel, which must refuse it
    rather than return an uninitialised output)."""
    u = tensors[0]
    for name, t in zip(_lib.INPUT_NAMES, tensors):
        if t is not None and t.device != u.device:
            raise _lib.FFTConvError(f"FFTConv: input '{name}' is on {t.device}; expected {u.device} like 'u'")


def _setup(tensors, fft_size, layout, freq_keep, period_scale, max_length):
    """What every kernel does first: checks the arguments, makes them contiguous, validates them
    against the op contract, allocates y, and points the params at all of them. tensors: the
    inputs in the order of _lib.INPUT_NAMES."""
    _check_tensor_args(tensors)
    _check_same_device(tensors)
    tensors = [t.contiguous() if t is not None else None for t in tensors]
    params, out_shape = _resolve(tensors, fft_size, layout, freq_keep, period_scale, max_length)
    u = tensors[0]
    y = torch.empty(out_shape, dtype=u.dtype, device=u.device)
    _lib.set_pointers(params, [t.data_ptr() if t is not None else None for t in tensors], y.data_ptr())
    return params, tensors, y


@torch.library.custom_op("fftconv_rt::fftconv", mutates_args=(), device_types="cpu")
def fftconv(u: Tensor, k: Tensor, D: Optional[Tensor] = None, pregate: Optional[Tensor] = None,
            postgate: Optional[Tensor] = None, fft_size: int = 0, layout: str = "BHL", freq_keep: int = 0,
            k_rev: Optional[Tensor] = None, period_scale: int = 0, max_length: int = 0) -> Tensor:
    """y = postgate * (irfft(rfft(v, n) * K, n)[..., :L] + D * v), v = pregate * u, with
    K = rfft(k[:n], n) + conj(rfft(k_rev[:n], n)); see op_spec.toml. n: fft_size, or period_scale * L,
    or (both 0) the exact linear two-sided convolution. freq_keep > 0: K keeps its freq_keep lowest
    bins. max_length > 0: longer inputs are refused. Inference only (no autograd formula).

    Non-contiguous inputs are copied to contiguous memory first."""
    params, _, y = _setup((u, k, D, pregate, postgate, k_rev), fft_size, layout, freq_keep, period_scale,
                          max_length)
    if y.numel() == 0:
        return y
    params.num_threads = torch.get_num_threads()
    _lib.check(_lib.core().fftconv_cpu_forward(ctypes.byref(params), None))
    return y


def _refuse_autograd(ctx, inputs, output):
    # Tracing (torch.export of a model whose filter is a Parameter) runs here on fake tensors: it
    # computes nothing, and no backward follows, so only real computations are refused.
    if isinstance(output, FakeTensor) or output.device.type == "meta":
        return
    raise _lib.FFTConvError("FFTConv: the op is inference-only (it has no autograd formula), and an input requires "
                            "grad; call it under torch.no_grad() or torch.inference_mode(), or detach the inputs")


def _no_backward(ctx, grad):  # never reached: _refuse_autograd refuses the forward first
    raise _lib.FFTConvError("FFTConv: the op is inference-only (it has no autograd formula)")


# Under grad mode with an input that requires grad: a clear error instead of a result that fails
# only at backward().
fftconv.register_autograd(_no_backward, setup_context=_refuse_autograd)


def prepare_filter_cuda(params, k: Tensor, device, k_rev: Optional[Tensor] = None) -> Tensor:
    """The filter spectrum of k (and k_rev) for these params, on the current stream (a float32 device buffer)."""
    lib = _lib.core()
    spectrum = torch.empty(max(1, lib.fftconv_cuda_filter_bytes(ctypes.byref(params)) // 4), dtype=torch.float32,
                           device=device)
    workspace = _workspace(params, device)
    params.k = k.data_ptr()
    params.k_rev = k_rev.data_ptr() if k_rev is not None else None
    _lib.check(lib.fftconv_cuda_prepare_filter(ctypes.byref(params), spectrum.data_ptr(), workspace.data_ptr(),
                                               workspace.numel()))
    return spectrum


def _workspace(params, device) -> Tensor:
    return torch.empty(max(1, _lib.core().fftconv_cuda_workspace_bytes(ctypes.byref(params))), dtype=torch.uint8,
                       device=device)


@fftconv.register_kernel("cuda")
def _fftconv_cuda(u, k, D=None, pregate=None, postgate=None, fft_size=0, layout="BHL", freq_keep=0, k_rev=None,
                  period_scale=0, max_length=0):
    if not _lib.has_cuda_kernels():
        raise _lib.FFTConvError("FFTConv: this build of fftconv-rt has no CUDA kernels (built without nvcc); "
                                "rebuild with -DFFTCONV_BUILD_CUDA=ON or move the tensors to the CPU")
    params, tensors, y = _setup((u, k, D, pregate, postgate, k_rev), fft_size, layout, freq_keep, period_scale,
                                max_length)
    if y.numel() == 0:
        return y
    with torch.cuda.device(u.device):
        params.stream = torch.cuda.current_stream(u.device).cuda_stream
        spectrum = prepare_filter_cuda(params, tensors[1], u.device, tensors[5])
        workspace = _workspace(params, u.device)
        _lib.check(_lib.core().fftconv_cuda_forward(ctypes.byref(params), spectrum.data_ptr(), workspace.data_ptr(),
                                                    workspace.numel()))
    return y


@fftconv.register_fake
def _fftconv_fake(u, k, D=None, pregate=None, postgate=None, fft_size=0, layout="BHL", freq_keep=0, k_rev=None,
                  period_scale=0, max_length=0):
    tensors = (u, k, D, pregate, postgate, k_rev)
    _check_tensor_args(tensors)
    _check_same_device(tensors)
    if u.dim() != 3:
        raise _lib.FFTConvError(f"FFTConv: input 'u' must be rank 3, got rank {u.dim()}")
    for name, t in (("k", k), ("k_rev", k_rev)):
        if t is not None and t.dim() != 2:
            raise _lib.FFTConvError(f"FFTConv: input '{name}' must be rank 2 (H, taps), got rank {t.dim()}")
    if layout not in ("BHL", "BLH"):
        raise _lib.FFTConvError(f"FFTConv: attribute 'layout' must be \"BHL\" or \"BLH\", got {layout!r}")
    for name, value in (("fft_size", fft_size), ("freq_keep", freq_keep), ("period_scale", period_scale),
                        ("max_length", max_length)):
        if value < 0:
            raise _lib.FFTConvError(f"FFTConv: attribute '{name}' must be >= 0, got {value}")
    if period_scale > 0 and fft_size > 0:
        raise _lib.FFTConvError("FFTConv: attributes 'period_scale' and 'fft_size' both set the period; give one")
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
