"""Frequency-sparse FFTConv (attribute freq_keep): the filter spectrum at the period n keeps its
lowest freq_keep rfft bins. Through the C ABI, the torch op and the ORT op on the CPU, and the
CUDA kernels on the GPU machine, against the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fftconv_rt._lib import FFTConvError, fftconv_numpy
from fftconv_rt.ort import make_session
from fftconv_rt.ort import run as ort_run
from fftconv_rt.reference import fftconv_reference, relative_error
from fftconv_rt.spec import tolerance
from fftconv_rt.torch_op import fftconv

from helpers import NAMES, build_model, make_inputs

# (B, H, L, Lk, fft_size, freq_keep): period 2L (fft_size 0), explicit linear and circular
# periods, a filter longer than L, a transform past the CPU's single-pass size, every bin kept.
CASES = [(2, 3, 256, 256, 0, 32), (1, 2, 1000, 300, 2048, 100), (1, 2, 3000, 5000, 8192, 700),
         (2, 2, 64, 100, 128, 5), (1, 2, 700, 700, 1024, 1), (1, 1, 1 << 15, 1 << 15, 0, 4096),
         (1, 2, 128, 128, 0, 129)]
TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _reference(arrays, fft_size, freq_keep, layout="BHL"):
    return fftconv_reference(*(None if a is None else np.asarray(a, np.float32) for a in arrays),
                             fft_size=fft_size, layout=layout, freq_keep=freq_keep)


@pytest.mark.parametrize("B,H,L,Lk,fft_size,freq_keep", CASES)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_c_abi_matches_the_sparse_reference(rng, B, H, L, Lk, fft_size, freq_keep, dtype):
    arrays = make_inputs(rng, B, H, L, Lk, dtype, ("D", "postgate"))
    y = fftconv_numpy(*arrays, fft_size=fft_size, freq_keep=freq_keep)
    assert relative_error(y, _reference(arrays, fft_size, freq_keep)) <= tolerance(dtype)


def test_sparse_differs_from_dense_and_all_bins_is_dense(rng):
    u, k, _, _, _ = make_inputs(rng, 1, 2, 512, 512, "float32", ())
    dense = fftconv_numpy(u, k)
    assert relative_error(fftconv_numpy(u, k, freq_keep=64), dense) > 1e-2
    assert relative_error(fftconv_numpy(u, k, freq_keep=513), dense) <= tolerance("float32")


def test_torch_op_and_layouts(rng):
    arrays = make_inputs(rng, 2, 3, 300, 300, "float32", ("D", "pregate"), "BLH")
    tensors = [None if a is None else torch.from_numpy(a) for a in arrays]
    y = fftconv(*tensors, fft_size=1024, layout="BLH", freq_keep=50)
    assert relative_error(y.numpy(), _reference(arrays, 1024, 50, "BLH")) <= tolerance("float32")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_ort_op_with_a_constant_filter_at_two_lengths(rng, dtype):
    """The attribute through ONNX Runtime; a constant filter's spectra are cached per period."""
    arrays = make_inputs(rng, 2, 4, 512, 512, dtype, ("D",))
    model = build_model(arrays, dtype, constant_k=True, attributes={"freq_keep": 40})
    session = make_session(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for L in (512, 256, 512):
        u = arrays[0][:, :, :L]
        y = ort_run(session, {"u": u, "D": arrays[2]})[0]
        # every tap counts (Lk <= n = 2L): the mask spreads the filter over the whole period
        assert relative_error(y, _reference([u, arrays[1], arrays[2], None, None], 0, 40)) <= tolerance(dtype)


@pytest.mark.parametrize("kwargs,message", [
    (dict(L=300, freq_keep=10), "power-of-two period n"),
    (dict(L=256, fft_size=1000, freq_keep=10), "power-of-two period n"),
    (dict(L=256, Lk=600, freq_keep=10), "longer than the period n = 2L"),
    (dict(L=256, freq_keep=-1), "attribute 'freq_keep' must be >= 0"),
])
def test_bad_freq_keep_is_refused(rng, kwargs, message):
    L, Lk = kwargs.pop("L"), kwargs.pop("Lk", 64)
    u, k, _, _, _ = make_inputs(rng, 1, 2, L, Lk, "float32", ())
    with pytest.raises(FFTConvError, match=message):
        fftconv_numpy(u, k, **kwargs)


def test_ort_refuses_a_negative_attribute(rng):
    arrays = make_inputs(rng, 1, 2, 64, 64, "float32", ())
    model = build_model(arrays, "float32", attributes={"freq_keep": -3})
    with pytest.raises(Exception, match="freq_keep"):
        session = make_session(model.SerializeToString(), providers=["CPUExecutionProvider"])
        ort_run(session, {n: a for n, a in zip(NAMES, arrays) if a is not None})


# The band on the GPU: every bin, only the DC bin, odd row counts; the fused transforms of 8K and
# 16K points, which skip the points outside it, and split transforms of both row lengths.
CUDA_BAND_CASES = [(1, 2, 1 << 17, 1 << 17, 0, 1 << 14), (1, 2, 1 << 20, 4096, 0, 1 << 17),
                   (1, 2, 8192, 8192, 0, 8193), (2, 2, 8192, 3000, 0, 1), (1, 3, 8192, 8192, 0, 2000),
                   (1, 2, 1 << 15, 1 << 15, 0, 32769), (1, 3, 1 << 15, 1000, 0, 1), (1, 1, 1 << 19, 1 << 19, 0, 3)]


@pytest.mark.cuda
@pytest.mark.parametrize("B,H,L,Lk,fft_size,freq_keep", CASES + CUDA_BAND_CASES)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_cuda_matches_the_sparse_reference(rng, B, H, L, Lk, fft_size, freq_keep, dtype):
    """Fused (up to 16K points) and split transforms; short filters, which would take the
    tensor-core or overlap-save paths when dense, run as one transform at the period."""
    arrays = make_inputs(rng, B, H, L, Lk, dtype, ("D", "postgate"))
    tensors = [None if a is None else torch.from_numpy(np.asarray(a, np.float32)).cuda() for a in arrays]
    for i in (0, 4):
        tensors[i] = tensors[i].to(TORCH[dtype])
    y = fftconv(*tensors, fft_size=fft_size, freq_keep=freq_keep).float().cpu().numpy()
    ref = _reference([None if t is None else t.float().cpu().numpy() for t in tensors], fft_size, freq_keep)
    assert relative_error(y, ref) <= tolerance(dtype)
