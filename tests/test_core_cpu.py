"""The CPU core, called through its C ABI, against the float64 reference of the spec."""

from __future__ import annotations

import ctypes
import re

import numpy as np
import pytest

from fftconv_rt import _lib
from fftconv_rt._lib import FFTConvError, fftconv_numpy
from fftconv_rt.reference import decaying_filter, fftconv_reference, relative_error
from fftconv_rt.spec import tolerance

from helpers import NUMPY_DTYPES, OPTIONS, grid_inputs, make_inputs, reference_grid

def _path(*arrays, **attributes) -> str:
    """The CPU path (fftconv_cpu_path) a call on these arrays takes."""
    params, _, _ = _lib.numpy_params(*arrays, **attributes)
    return _lib.cpu_path(params)


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
    """0 < fft_size < L + Lk - 1: circular convolution of period fft_size, exactly as the spec; a
    power-of-two period is transformed at (no fold), another folded from the linear result."""
    arrays = make_inputs(rng, 1, 3, L, Lk, "float32", ("D",))
    want = "at_period" if n >= 4 and n & (n - 1) == 0 else "whole_row"
    assert _path(*arrays, fft_size=n) == want
    _check_arrays(arrays, "float32", fft_size=n)


@pytest.mark.parametrize("L,Lk,n", [(1000, 1000, 1024), (3000, 1500, 4096), (20000, 20000, 32768), (16, 9, 16)])
@pytest.mark.parametrize("dtype,layout", [("float32", "BHL"), ("float16", "BLH"), ("bfloat16", "BHL")])
def test_power_of_two_period_is_transformed_at_the_period(rng, L, Lk, n, dtype, layout):
    """A circular call of period 2^j transforms n points, not next_pow2(L + n - 1): half the work."""
    arrays = make_inputs(rng, 2, 3, L, Lk, dtype, ("D", "pregate", "postgate"), layout)
    assert _path(*arrays, fft_size=n, layout=layout) == "at_period"
    assert _lib.core().fftconv_cpu_transform_size(L, Lk, n) == n
    _check_arrays(arrays, dtype, layout, n)


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
    arrays = make_inputs(rng, 2, 3, 10000, Lk, dtype, ("D", "pregate", "postgate"), layout)
    assert _path(*arrays, layout=layout) == ("direct_sum" if Lk <= 32 else "blocks")
    _check_arrays(arrays, dtype, layout)


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
    assert _lib.core().fftconv_abi_version() == _lib.ABI_VERSION == 3


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


@pytest.mark.parametrize("L,Lk,fft_size", [(100003, 100, 0), (5000, 33, 0), (70000, 48, 0), (4097, 64, 0),
                                           (20000, 300, 30000)])
@pytest.mark.parametrize("dtype,layout", [("float32", "BHL"), ("float16", "BLH"), ("bfloat16", "BHL")])
def test_short_filter_on_a_long_row_in_blocks(rng, L, Lk, fft_size, dtype, layout):
    """Overlap-save blocks (a few times the taps) give the one-transform result: the last block
    partial, an explicit linear fft_size, every option, both layouts."""
    arrays = make_inputs(rng, 2, 3, L, Lk, dtype, ("D", "pregate", "postgate"), layout)
    assert _path(*arrays, fft_size=fft_size, layout=layout) == "blocks"
    _check_arrays(arrays, dtype, layout, fft_size)


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


# ---- op version 2: two-sided filters, period_scale, max_length ------------------------------


def _check_v2(arrays, k_rev, dtype, layout="BHL", **attributes):
    y = fftconv_numpy(*arrays, layout=layout, k_rev=k_rev, **attributes)
    assert y.shape == arrays[0].shape and y.dtype == arrays[0].dtype
    ref = fftconv_reference(*arrays, layout=layout, k_rev=k_rev, **attributes)
    err = relative_error(y, ref)
    assert err <= tolerance(dtype), f"relative error {err:.3e} > {tolerance(dtype)}"


def _reversed_filter(rng, H, Lk_rev, dtype="float32"):
    return decaying_filter(rng, H, Lk_rev).astype(NUMPY_DTYPES[dtype])


@pytest.mark.parametrize("L,Lk,Lk_rev", [(1, 3, 4), (2, 1, 1), (17, 5, 9), (17, 40, 3), (1000, 1000, 1000),
                                         (1000, 64, 200), (5000, 3, 5000), (20000, 20000, 7)])
@pytest.mark.parametrize("dtype,layout", [("float32", "BHL"), ("float16", "BLH"), ("bfloat16", "BHL"),
                                          ("float32", "BLH")])
def test_linear_two_sided(rng, L, Lk, Lk_rev, dtype, layout):
    """k_rev with fft_size = 0: the exact linear two-sided convolution (taps past L of either
    filter reach no output), transformed at the power of two of the causal call with max(Lk, Lk_rev)."""
    arrays = make_inputs(rng, 2, 3, L, Lk, dtype, ("D", "pregate", "postgate"), layout)
    k_rev = _reversed_filter(rng, 3, Lk_rev)
    if L >= 4:  # shorter rows have a period below the smallest transform, folded at it
        assert _path(*arrays, layout=layout, k_rev=k_rev) == "at_period"
    _check_v2(arrays, k_rev, dtype, layout)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_two_sided_filters_in_io_type(rng, dtype):
    arrays = make_inputs(rng, 2, 3, 500, 200, dtype, ("D",), k_dtype=dtype, D_dtype=dtype)
    _check_v2(arrays, _reversed_filter(rng, 3, 300, dtype), dtype)


@pytest.mark.parametrize("L,Lk,Lk_rev,n", [(100, 30, 60, 128), (100, 30, 60, 100), (100, 100, 100, 100),
                                           (3000, 3000, 2000, 4096), (3000, 10, 3000, 5000)])
def test_two_sided_circular_fft_size(rng, L, Lk, Lk_rev, n):
    arrays = make_inputs(rng, 2, 3, L, Lk, "float32", ("D", "postgate"))
    _check_v2(arrays, _reversed_filter(rng, 3, Lk_rev), "float32", fft_size=n)


@pytest.mark.parametrize("L", [64, 128, 300, 1024])
@pytest.mark.parametrize("scale", [1, 2, 3])
@pytest.mark.parametrize("two_sided", [False, True])
@pytest.mark.parametrize("dtype,layout", [("float32", "BHL"), ("float16", "BLH"), ("bfloat16", "BHL")])
def test_period_scale_drops_taps_past_the_period(rng, L, scale, two_sided, dtype, layout):
    """n = scale * L with fixed 512-tap filters: at short L the taps past n are dropped (rfft(k, n))."""
    arrays = make_inputs(rng, 2, 3, L, 512, dtype, ("D", "pregate"), layout)
    k_rev = _reversed_filter(rng, 3, 512) if two_sided else None
    _check_v2(arrays, k_rev, dtype, layout, period_scale=scale)


def test_period_scale_follows_the_length(rng):
    """One set of filters at two lengths: the period is 2L at each."""
    _, k, _, _, _ = make_inputs(rng, 1, 2, 8, 512)
    k_rev = _reversed_filter(rng, 2, 512)
    for L in (96, 700):
        u = rng.standard_normal((1, 2, L)).astype(np.float32)
        _check_v2((u, k, None, None, None), k_rev, "float32", period_scale=2)


@pytest.mark.parametrize("fft_size,period_scale", [(0, 0), (1024, 0), (0, 2)])
def test_frequency_sparse_two_sided(rng, fft_size, period_scale):
    arrays = make_inputs(rng, 2, 3, 512, 300, "float32", ("D",))
    k_rev = _reversed_filter(rng, 3, 200)
    assert _path(*arrays, k_rev=k_rev, fft_size=fft_size, period_scale=period_scale, freq_keep=40) == "at_period"
    _check_v2(arrays, k_rev, "float32", fft_size=fft_size, period_scale=period_scale, freq_keep=40)


def test_max_length(rng):
    u, k, D, _, _ = make_inputs(rng, 1, 2, 9000, 64)
    with pytest.raises(FFTConvError, match=r"^FFTConv: sequence length L = 9000 exceeds the attribute 'max_length' = "
                                           r"8192 the model was exported for; re-export with a larger max_length$"):
        fftconv_numpy(u, k, D, max_length=8192)
    _check_v2((u[..., :8192], k, D, None, None), None, "float32", max_length=8192)
    _check_v2((u, k, D, None, None), None, "float32", max_length=9000)


def test_prepared_two_sided_spectrum_equals_per_call_transform(rng):
    """A prepared spectrum carries k_rev too: the run reads neither k nor k_rev."""
    u, k, D, _, _ = make_inputs(rng, 2, 5, 3000, 700)
    k_rev = _reversed_filter(rng, 5, 900)
    params, _, y_direct = _lib.numpy_params(u, k, D, k_rev=k_rev, period_scale=1)
    _lib.check(_lib.core().fftconv_cpu_forward(ctypes.byref(params), None))
    spectrum = np.empty(_lib.core().fftconv_cpu_filter_floats(ctypes.byref(params)), np.float32)
    _lib.check(_lib.core().fftconv_cpu_prepare_filter(ctypes.byref(params), spectrum.ctypes.data))
    y_cached = np.empty_like(y_direct)
    params.y, params.k, params.k_rev = y_cached.ctypes.data, None, None
    _lib.check(_lib.core().fftconv_cpu_forward(ctypes.byref(params), spectrum.ctypes.data))
    np.testing.assert_array_equal(y_cached, y_direct)
    params.y, params.k = y_cached.ctypes.data, k.ctypes.data  # k without k_rev and no spectrum: refused
    with pytest.raises(FFTConvError, match="k_rev must not be null"):
        _lib.check(_lib.core().fftconv_cpu_forward(ctypes.byref(params), None))


def test_version_1_nodes_resolve_with_five_inputs(rng):
    u, k, D, _, _ = make_inputs(rng, 2, 3, 100, 20)
    descs = [_lib.describe(a.shape, _lib.numpy_dtype_code(a)) for a in (u, k, D)] + [_lib.describe((), None)] * 2
    params, shape = _lib.resolve(descs, 0, "BHL")
    assert shape == (2, 3, 100) and params.Lk == 20 and params.Lk_rev == 0 and params.truncate_filter == 0


def _resolve_error(shapes, dtypes=None, **attributes):
    dtypes = dtypes or {}
    descs = [_lib.describe(shapes[n], dtypes.get(n, _lib.FLOAT32)) if n in shapes else _lib.describe((), None)
             for n in _lib.INPUT_NAMES]
    with pytest.raises(FFTConvError) as error:
        _lib.resolve(descs, attributes.pop("fft_size", 0), attributes.pop("layout", "BHL"), **attributes)
    return str(error.value)


@pytest.mark.parametrize("shapes,dtypes,attributes,message", [
    ({"k_rev": (3, 2, 1)}, {}, {}, r"input 'k_rev' must have shape \(H, Lk_rev\) with H = 3 from 'u' \(B, H, L\), "
                                   r"got \(3, 2, 1\)"),
    ({"k_rev": (4, 8)}, {}, {}, r"input 'k_rev' must have shape \(H, Lk_rev\) with H = 3"),
    ({"k_rev": (3, 0)}, {}, {}, r"input 'k_rev' must have at least one tap \(Lk_rev >= 1\)"),
    ({"k_rev": (3, 8)}, {"k_rev": 11}, {}, r"input 'k_rev' has element type float64; expected float32 or the type"),
    ({"k_rev": (3, 200)}, {}, {"fft_size": 128},
     r"reversed filter length Lk_rev = 200 exceeds attribute 'fft_size' = 128; expected Lk_rev <= fft_size"),
    ({}, {}, {"period_scale": -1}, r"attribute 'period_scale' must be >= 0"),
    ({}, {}, {"period_scale": 2, "fft_size": 256}, r"attributes 'period_scale' = 2 and 'fft_size' = 256 both set"),
    ({}, {}, {"period_scale": 1 << 24},
     r"attribute 'period_scale' = 16777216 at L = 100 gives a period n = period_scale \* L larger than 2\^30"),
    ({}, {}, {"max_length": -5}, r"attribute 'max_length' must be >= 0"),
    ({}, {}, {"max_length": 99}, r"sequence length L = 100 exceeds the attribute 'max_length' = 99"),
    ({}, {}, {"period_scale": 3, "freq_keep": 10}, r"attribute 'freq_keep' needs a power-of-two period n .*got n = 300"),
])
def test_version_2_errors(shapes, dtypes, attributes, message):
    shapes = {"u": (2, 3, 100), "k": (3, 50), **shapes}
    assert re.search("^FFTConv: " + message, _resolve_error(shapes, dtypes, **attributes))


def test_resolve_refuses_a_wrong_input_count():
    descs = (_lib.TensorDesc * 7)()
    params, shape = _lib.Params(), (ctypes.c_int64 * 3)()
    core = _lib.core()
    core.fftconv_resolve.argtypes = None  # a count the Python side never passes
    try:
        status = core.fftconv_resolve(descs, ctypes.c_int32(7), None, ctypes.byref(params), shape)
    finally:
        _lib._core = None  # the next core() declares the argument types again
    assert status == 1
    assert "the node has 7 inputs; expected 1 to 6" in core.fftconv_last_error().decode()


# ---- what only the GPU tests checked before: non-finite values, alignment -------------------


@pytest.mark.parametrize("fft_size,freq_keep,L", [(1024, 0, 1000), (1000, 0, 1000), (0, 64, 512), (512, 30, 512)])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_input_stays_in_its_row_circular_and_sparse(rng, fft_size, freq_keep, L, value):
    """Rows are transformed two at a time: a NaN or an infinity must not reach the row packed with it."""
    u, k, D, _, _ = make_inputs(rng, 2, 3, L, L, options=("D",))
    u[1, 1, L // 3] = value
    y = fftconv_numpy(u, k, D, fft_size=fft_size, freq_keep=freq_keep)
    assert not np.isfinite(y[1, 1]).all()
    good = [(b, h) for b in range(2) for h in range(3) if (b, h) != (1, 1)]
    for b, h in good:
        ref = fftconv_reference(u[b:b + 1, h:h + 1], k[h:h + 1], D[h:h + 1], fft_size=fft_size, freq_keep=freq_keep)
        assert relative_error(y[b:b + 1, h:h + 1], ref) <= tolerance("float32")


@pytest.mark.parametrize("fft_size,freq_keep", [(1024, 0), (0, 64)])
def test_non_finite_filter_stays_in_its_channel_circular_and_sparse(rng, fft_size, freq_keep):
    u, k, _, _, _ = make_inputs(rng, 2, 3, 512, 512, options=())
    k[1, 3] = np.inf
    y = fftconv_numpy(u, k, fft_size=fft_size, freq_keep=freq_keep)
    assert not np.isfinite(y[:, 1]).all()
    ref = fftconv_reference(u[:, [0, 2]], k[[0, 2]], fft_size=fft_size, freq_keep=freq_keep)
    assert relative_error(y[:, [0, 2]], ref) <= tolerance("float32")


def _offset_view(a, elements=1):
    """A copy of a whose data starts `elements` elements into a fresh buffer: aligned to its element
    size, not to 16 bytes."""
    flat = np.empty(a.size + elements, a.dtype)
    view = flat[elements:].reshape(a.shape)
    view[...] = a
    assert view.ctypes.data % 16 != 0 and view.ctypes.data % a.itemsize == 0
    return view


@pytest.mark.parametrize("dtype,layout", [("float32", "BHL"), ("float16", "BLH"), ("bfloat16", "BHL")])
@pytest.mark.parametrize("L,Lk,fft_size", [(1000, 1000, 0), (5000, 20, 0), (20000, 200, 0), (1000, 1000, 1024)])
def test_views_not_aligned_to_16_bytes(rng, dtype, layout, L, Lk, fft_size):
    arrays = make_inputs(rng, 2, 3, L, Lk, dtype, ("D", "pregate", "postgate"), layout, k_dtype=dtype)
    views = tuple(None if a is None else _offset_view(a) for a in arrays)
    k_rev = _offset_view(_reversed_filter(rng, 3, 50, dtype))
    _check_v2(views, None, dtype, layout, fft_size=fft_size)
    _check_v2(views, k_rev, dtype, layout, fft_size=fft_size)
