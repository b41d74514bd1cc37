"""The CPU core, called through its C ABI, against the float64 reference of the spec."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from fftconv_rt import _lib
from fftconv_rt._lib import FFTConvError, fftconv_numpy
from fftconv_rt.reference import fftconv_reference, relative_error
from fftconv_rt.spec import tolerance

from helpers import OPTIONS, grid_inputs, make_inputs, reference_grid

def _check_arrays(arrays, dtype, layout="BHL", fft_size=0):
    u, k, D, pre, post = arrays
    y = fftconv_numpy(u, k, D, pre, post, fft_size=fft_size, layout=layout)
    assert y.shape == u.shape and y.dtype == u.dtype
    ref = fftconv_reference(u, k, D, pre, post, fft_size=fft_size, layout=layout)
    err = relative_error(y, ref)
    assert err <= tolerance(dtype), f"relative error {err:.3e} > {tolerance(dtype)}"
    return err


def _check(rng, B, H, L, Lk, dtype, options, layout="BHL", fft_size=0, **kw):
    return _check_arrays(make_inputs(rng, B, H, L, Lk, dtype, options, layout, **kw), dtype, layout, fft_size)


@reference_grid
def test_matches_reference(rng, L, filter_len, dtype, layout):
    _check_arrays(grid_inputs(rng, L, filter_len, dtype, layout), dtype, layout)


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("L", [17, 1000, 8191])
def test_each_optional_input(rng, option, dtype, L):
    _check(rng, 2, 4, L, L, dtype, OPTIONS[option])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_filter_and_skip_in_io_type(rng, dtype):
    _check(rng, 2, 3, 500, 500, dtype, ("D",), k_dtype=dtype, D_dtype=dtype)


@pytest.mark.parametrize("L,Lk,n", [(100, 30, 120), (64, 64, 64), (1000, 1000, 1500), (5000, 5000, 6000),
                                    (3, 3, 3), (17, 5, 17), (4096, 4096, 8191)])
def test_circular_fft_size(rng, L, Lk, n):
    """0 < fft_size < L + Lk - 1: circular convolution of period fft_size, exactly as the spec."""
    _check(rng, 1, 3, L, Lk, "float32", ("D",), fft_size=n)


@pytest.mark.parametrize("L,Lk,n", [(100, 30, 129), (100, 30, 1000), (33, 33, 65)])
def test_explicit_linear_fft_size(rng, L, Lk, n):
    """fft_size >= L + Lk - 1 gives the linear convolution, like fft_size = 0."""
    _check(rng, 2, 2, L, Lk, "float32", ("D",), fft_size=n)


def test_filter_longer_than_sequence(rng):
    _check(rng, 2, 2, 100, 300, "float32", ("D",))


@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_thread_count_does_not_change_result(rng, threads):
    u, k, D, _, _ = make_inputs(rng, 3, 5, 3000, 3000)
    base = fftconv_numpy(u, k, D, num_threads=1)
    np.testing.assert_array_equal(fftconv_numpy(u, k, D, num_threads=threads), base)


def test_prepared_spectrum_equals_per_call_transform(rng):
    u, k, D, _, _ = make_inputs(rng, 2, 5, 20000, 20000)
    descs = [_lib.describe(a.shape, _lib.numpy_dtype_code(a)) for a in (u, k, D)] + [_lib.describe((), None)] * 2
    params, _ = _lib.resolve(descs, 0, "BHL")
    y_direct = np.empty_like(u)
    y_cached = np.empty_like(u)
    params.u, params.k, params.D = u.ctypes.data, k.ctypes.data, D.ctypes.data
    spectrum = np.empty(_lib.core().fftconv_cpu_filter_floats(ctypes.byref(params)), np.float32)
    _lib.check(_lib.core().fftconv_cpu_prepare_filter(ctypes.byref(params), spectrum.ctypes.data))
    params.y = y_direct.ctypes.data
    _lib.check(_lib.core().fftconv_cpu_forward(ctypes.byref(params), None))
    params.y = y_cached.ctypes.data
    params.k = None  # the spectrum alone must be enough
    _lib.check(_lib.core().fftconv_cpu_forward(ctypes.byref(params), spectrum.ctypes.data))
    np.testing.assert_array_equal(y_cached, y_direct)


@pytest.mark.parametrize("shape", [(0, 3, 10), (2, 0, 10), (2, 3, 0)])
def test_empty_dimensions_give_empty_output(rng, shape):
    u = np.zeros(shape, np.float32)
    k = np.ones((shape[1], 4), np.float32)
    y = fftconv_numpy(u, k)
    assert y.shape == shape


@pytest.mark.parametrize("Lk", [1, 2, 3, 17, 32, 33])
@pytest.mark.parametrize("dtype,layout", [("float32", "BHL"), ("float16", "BLH"), ("bfloat16", "BHL")])
def test_short_filters_summed_directly(rng, Lk, dtype, layout):
    """Filters of up to 32 taps take the direct sum (33 the FFT path), over spans of 4096
    outputs: L = 10000 crosses two span boundaries."""
    _check(rng, 2, 3, 10000, Lk, dtype, ("D", "pregate", "postgate"), layout)


def test_nan_stays_within_the_taps_of_a_short_filter(rng):
    """The direct sum is local: a NaN at t = 5 reaches outputs 5 .. 5 + taps - 1 only."""
    u, k, _, _, _ = make_inputs(rng, 1, 2, 64, 3, options=())
    u[0, 0, 5] = np.nan
    y = fftconv_numpy(u, k)
    assert np.isnan(y[0, 0, 5:8]).all() and np.isfinite(y[0, 0, :5]).all() and np.isfinite(y[0, 0, 8:]).all()
    assert np.isfinite(y[0, 1]).all()


def test_nan_propagates_without_crash(rng):
    u, k, _, _, _ = make_inputs(rng, 1, 2, 64, 64, options=())
    u[0, 0, 5] = np.nan
    y = fftconv_numpy(u, k)
    # an FFT convolution spreads a NaN over its row (as the reference does); other rows stay finite
    assert np.isnan(y[0, 0]).any() and np.isfinite(y[0, 1]).all()


@pytest.mark.parametrize("L", [65536 * 4 + 3])
def test_long_odd_length(rng, L):
    _check(rng, 1, 1, L, L, "float32", ("D",))


def test_abi_version():
    assert _lib.core().fftconv_abi_version() == _lib.ABI_VERSION == 2


def test_forward_refuses_bad_params_without_resolve():
    """The CPU entry points check their params themselves too (callers may skip fftconv_resolve)."""
    params = _lib.Params()
    params.B, params.H, params.L, params.Lk = 1, 1, 8, 0
    params.dtype = params.k_dtype = params.D_dtype = _lib.FLOAT32
    status = _lib.core().fftconv_cpu_forward(ctypes.byref(params), None)
    assert status == 1
    assert "Lk >= 1" in _lib.core().fftconv_last_error().decode()
    with pytest.raises(FFTConvError, match="Lk >= 1"):
        _lib.check(status)


def test_non_finite_filter_stays_in_its_channel(rng):
    u, k, _, _, _ = make_inputs(rng, 2, 3, 64, 64, options=())
    k[1, 3] = np.inf
    y = fftconv_numpy(u, k)
    assert not np.isfinite(y[:, 1]).all()
    ref = fftconv_reference(u[:, [0, 2]], k[[0, 2]])
    assert relative_error(y[:, [0, 2]], ref) <= tolerance("float32")


@pytest.mark.parametrize("L,Lk,fft_size", [(100003, 100, 0), (5000, 1, 0), (70000, 16, 0), (4097, 64, 0),
                                           (20000, 300, 30000)])
@pytest.mark.parametrize("dtype,layout", [("float32", "BHL"), ("float16", "BLH"), ("bfloat16", "BHL")])
def test_short_filter_on_a_long_row_in_blocks(rng, L, Lk, fft_size, dtype, layout):
    """Overlap-save blocks (a few times the taps) give the one-transform result: the last block
    partial, an explicit linear fft_size, every option, both layouts."""
    assert _lib.core().fftconv_cpu_transform_size(L, Lk, fft_size) < L  # the block path is taken
    _check(rng, 2, 3, L, Lk, dtype, ("D", "pregate", "postgate"), layout, fft_size)


def test_non_finite_input_stays_in_its_row_in_blocks(rng):
    u, k, _, _, _ = make_inputs(rng, 1, 4, 50000, 50, options=())
    u[0, 0, 30000] = np.nan
    y = fftconv_numpy(u, k)
    assert np.isfinite(y[0, 1:]).all() and np.isnan(y[0, 0, 30000:30050]).all()
    assert relative_error(y[:, 1:], fftconv_reference(u[:, 1:], k[1:])) <= tolerance("float32")


def test_misaligned_pointer_is_refused():
    raw = bytearray(3 * 64 * 4 + 1)
    u = np.frombuffer(raw, dtype=np.float32, count=3 * 64, offset=1).reshape(1, 3, 64)  # 1 byte off
    with pytest.raises(FFTConvError, match="'u' is not aligned to its element size \\(4 bytes\\)"):
        fftconv_numpy(u, np.ones((3, 64), np.float32))
