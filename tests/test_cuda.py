"""The CUDA kernels through the torch op, against the float64 reference (GPU machine only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fftconv_rt import _lib
from fftconv_rt._lib import FFTConvError
from fftconv_rt.reference import fftconv_reference, relative_error
from fftconv_rt.spec import tolerance
from fftconv_rt.torch_op import fftconv

from helpers import OPTIONS, grid_inputs, make_inputs, reference_grid

pytestmark = pytest.mark.cuda

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@pytest.fixture(scope="module", autouse=True)
def kernels_built():
    if not _lib.has_cuda_kernels():
        pytest.fail("a CUDA GPU is present but libfftconv_rt has no CUDA kernels: build with -DFFTCONV_BUILD_CUDA=ON")


def _cuda(a, dtype):
    if a is None:
        return None
    return torch.from_numpy(np.asarray(a, dtype=np.float32)).to(device="cuda", dtype=dtype)


def _run(arrays, dtype, layout="BHL", fft_size=0, k_dtype=torch.float32):
    u, k, D, pre, post = (_cuda(a, TORCH_DTYPES[dtype]) for a in arrays)
    k = k.to(k_dtype)
    D = D.float() if D is not None else None
    y = fftconv(u, k, D, pre, post, fft_size, layout)
    torch.cuda.synchronize()
    assert y.device.type == "cuda" and y.dtype == u.dtype and y.shape == u.shape
    ref = fftconv_reference(*(None if t is None else t.float().cpu().numpy() for t in (u, k, D, pre, post)),
                            fft_size=fft_size, layout=layout)
    return relative_error(y.float().cpu().numpy(), ref)


@reference_grid
def test_matches_reference(rng, L, filter_len, dtype, layout):
    err = _run(grid_inputs(rng, L, filter_len, dtype, layout), dtype, layout)
    assert err <= tolerance(dtype), f"{err:.3e}"


@pytest.mark.parametrize("L", [5000, 8191, 8192, 16385, 100003, 1 << 20, (1 << 21)])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_long_and_odd_lengths(rng, L, dtype):
    """Both sides of the fused/split boundary, odd lengths, up to 2M."""
    H = 3 if L <= 100003 else 1
    arrays = make_inputs(rng, 1, H, L, L, dtype, ("D", "postgate"))
    err = _run(arrays, dtype)
    assert err <= tolerance(dtype), f"{err:.3e}"


def _misaligned(t):
    """The same values at an address one element past a 16-byte boundary."""
    flat = torch.empty(t.numel() + 1, device=t.device, dtype=t.dtype)
    view = flat[1:].view(t.shape)
    view.copy_(t)
    assert view.data_ptr() % 16 != 0
    return view


@pytest.mark.parametrize("L", [128, 512, 1020, 4096, 4100, 40000, 40004])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_vector_and_element_io_agree(rng, L, dtype):
    """Rows of L a multiple of 8 (float32 on the tensor-core path: 4) in 16-byte aligned memory
    take 16-byte loads and stores (tensor-core, fused and split paths), and so do filters of Lk a
    multiple of 8 (Lk = L + 4: the taps used, L, end inside a chunk when L is not a multiple of
    8); other lengths and unaligned views take element accesses: every combination against the
    reference, all options given."""
    arrays = make_inputs(rng, 2, 3, L, L + 4, dtype, OPTIONS["all"])
    u, k, D, pre, post = (_cuda(a, TORCH_DTYPES[dtype]) for a in arrays)
    k, D = k.float(), D.float()
    ref = fftconv_reference(*(t.float().cpu().numpy() for t in (u, k, D, pre, post)))
    for args in ((u, pre, post), tuple(_misaligned(t) for t in (u, pre, post))):
        y = fftconv(args[0], k, D, args[1], args[2])
        err = relative_error(y.float().cpu().numpy(), ref)
        assert err <= tolerance(dtype), f"{err:.3e} (data at {args[0].data_ptr() % 16} past 16 bytes)"


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("L", [300, 20000])
def test_each_optional_input(rng, option, L):
    err = _run(make_inputs(rng, 2, 4, L, L, "float32", OPTIONS[option]), "float32")
    assert err <= tolerance("float32")


@pytest.mark.parametrize("L,Lk,n", [(8, 8, 8), (8, 8, 16), (100, 30, 120), (64, 64, 64), (5000, 5000, 6000), (20000, 20000, 30000)])
def test_circular_fft_size(rng, L, Lk, n):
    err = _run(make_inputs(rng, 1, 3, L, Lk, "float32", ("D",)), "float32", fft_size=n)
    assert err <= tolerance("float32")


@pytest.mark.parametrize("L", [1000, 3000])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_filter_in_io_dtype(rng, L, dtype):
    """A filter given in the I/O type (not split in two parts on the tensor-core path)."""
    err = _run(make_inputs(rng, 2, 3, L, L, dtype, ("D", "pregate")), dtype, k_dtype=TORCH_DTYPES[dtype])
    assert err <= tolerance(dtype)


@pytest.mark.parametrize("B,L", [(8, 128), (5, 100), (4, 256), (6, 500), (3, 64)])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_several_rows_per_unit(rng, B, L, dtype):
    """Short rows share a warp (up to 8 tiles of 128 outputs), including a last group
    with fewer rows than the others."""
    err = _run(make_inputs(rng, B, 3, L, L, dtype, ("D", "pregate", "postgate")), dtype)
    assert err <= tolerance(dtype), f"{err:.3e}"


@pytest.mark.parametrize("L,Lk", [(100003, 100), (5000, 256), (5000, 257), (5000, 1024), (5000, 1025), (5000, 2048),
                                  (5000, 2049), (70000, 16), (300, 1)])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_short_filter_long_sequence(rng, L, Lk, dtype):
    """Short filters take the tensor-core path (up to 2048 taps, 1024 for bfloat16, 256 for
    float32) over many chunks of a row; longer ones take the FFT path."""
    err = _run(make_inputs(rng, 2, 3, L, Lk, dtype, ("D", "pregate", "postgate")), dtype)
    assert err <= tolerance(dtype), f"{err:.3e}"


@pytest.mark.parametrize("L,Lk,layout", [(100003, 300, "BHL"), (200001, 3000, "BHL"), (300000, 5000, "BHL"),
                                         (1 << 20, 4096, "BHL"), (65537, 2500, "BLH"), (4096, 300, "BHL")])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_overlap_save_pieces(rng, L, Lk, layout, dtype):
    """Filters past the tensor-core limit but short against the row run as overlap-save pieces
    (fused pieces up to 16K points, split pieces above; a last piece shorter than the others)."""
    err = _run(make_inputs(rng, 1, 2, L, Lk, dtype, ("D", "pregate", "postgate"), layout), dtype, layout)
    assert err <= tolerance(dtype), f"{err:.3e}"


def test_sixteen_million_steps_with_a_short_filter():
    """L = 16M (past the single-transform limit of 8M points) runs as pieces: checked against the
    float64 reference on two windows of the output."""
    L, Lk = 1 << 24, 4096
    rng = np.random.default_rng(3)
    u = torch.randn(1, 2, L, device="cuda", dtype=torch.float16)
    k = torch.from_numpy((rng.standard_normal((2, Lk)) / np.sqrt(Lk)).astype(np.float32)).cuda()
    y = fftconv(u, k).float()
    for t0 in (0, L - 5000):
        window = u[:, :, max(0, t0 - Lk + 1): t0 + 5000].float().cpu().numpy()
        ref = fftconv_reference(window, k.cpu().numpy())[..., -5000:]
        assert relative_error(y[:, :, t0: t0 + 5000].cpu().numpy(), ref) <= tolerance("float16")


@pytest.mark.parametrize("L,dtype,fft_size,freq_keep", [
    (1000, "float32", 0, 0), (4096, "float32", 0, 0), (1000, "float16", 0, 0), (3000, "bfloat16", 0, 0),
    (20000, "float32", 0, 0), (40000, "float16", 0, 0), (70001, "bfloat16", 0, 0), (20000, "float32", 30000, 0),
    (8192, "float16", 0, 1000), (1 << 15, "float32", 0, 5000)])
def test_non_finite_stays_in_its_row(rng, L, dtype, fft_size, freq_keep):
    """A NaN in one row of u and an infinity in one filter stay in their rows, on the
    tensor-core path, the fused path and the split path (transforms over 16K points, which
    rerun the pairs they flag one row at a time), linear, circular and frequency-sparse."""
    u, k, _, _, _ = make_inputs(rng, 1, 4, L, L, dtype, ())
    u[0, 0, 7] = np.nan
    k[3, 2] = np.inf
    y = fftconv(_cuda(u, TORCH_DTYPES[dtype]), _cuda(k, torch.float32), fft_size=fft_size,
                freq_keep=freq_keep).float().cpu().numpy()
    finite_rows = [1, 2]
    assert np.isfinite(y[0, finite_rows]).all()
    # a frequency-sparse row spreads the value over its whole period
    assert np.isnan(y[0, 0, 0 if freq_keep else 7:]).all() and not np.isfinite(y[0, 3, 0 if freq_keep else 2:]).any()
    ref = fftconv_reference(u[:, finite_rows].astype(np.float32), k[finite_rows], fft_size=fft_size,
                            freq_keep=freq_keep)
    assert relative_error(y[:, finite_rows], ref) <= tolerance(dtype)


def test_runs_on_the_current_stream(rng):
    u, k, D, _, _ = make_inputs(rng, 2, 8, 20000, 20000, "float32", ("D",))
    ut, kt, Dt = (_cuda(a, torch.float32) for a in (u, k, D))
    expected = fftconv(ut, kt, Dt)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        outs = [fftconv(ut, kt, Dt) for _ in range(3)]
    stream.synchronize()
    for y in outs:
        torch.testing.assert_close(y, expected, rtol=0, atol=0)


def test_more_than_2_to_31_elements():
    """64-bit offsets: B*H*L = 2^31 + 2^12 elements, checked on rows at both ends."""
    L, H = 4096, 3
    B = (1 << 31) // (H * L) + 1
    g = torch.Generator(device="cuda").manual_seed(0)
    u = torch.randn(B, H, L, device="cuda", dtype=torch.float16, generator=g)
    k = torch.randn(H, L, device="cuda", generator=g) * torch.exp(-8 * torch.arange(L, device="cuda") / L)
    D = torch.randn(H, device="cuda", generator=g)
    y = fftconv(u, k, D)
    assert u.numel() > (1 << 31)
    for b in (0, B - 1):
        ref = fftconv_reference(u[b:b + 1].float().cpu().numpy(), k.cpu().numpy(), D.cpu().numpy())
        assert relative_error(y[b:b + 1].float().cpu().numpy(), ref) <= tolerance("float16")


def test_host_pointer_is_refused(rng):
    import ctypes

    u = torch.randn(1, 2, 64)
    k = torch.randn(2, 64)
    params, _ = _lib.resolve([_lib.describe(u.shape, 1), _lib.describe(k.shape, 1)] + [_lib.describe((), None)] * 3,
                             0, "BHL")
    params.u, params.k, params.y = u.data_ptr(), k.data_ptr(), u.data_ptr()
    spectrum = torch.empty(1024, device="cuda")
    status = _lib.core().fftconv_cuda_forward(ctypes.byref(params), spectrum.data_ptr(), None, 0)
    with pytest.raises(FFTConvError, match="'u' is not a CUDA device pointer"):
        _lib.check(status)


def test_mixed_devices_are_refused():
    with pytest.raises(FFTConvError, match="input 'k' is on cpu"):
        fftconv(torch.randn(1, 2, 8, device="cuda"), torch.randn(2, 8))


def test_several_streams_at_once_match_one(rng):
    """Four streams running different rows' calls at once give the single-stream results."""
    calls = [make_inputs(rng, 2, 8, L, L, dtype, ("D", "pregate")) for L, dtype in
             ((1000, "float16"), (3000, "bfloat16"), (20000, "float32"), (500, "float32"))]
    dtypes = ["float16", "bfloat16", "float32", "float32"]
    tensors = [[None if a is None else _cuda(a, TORCH_DTYPES[dt]) for a in arrays] for arrays, dt in zip(calls, dtypes)]
    for t in tensors:
        t[1], t[2] = t[1].float(), t[2].float()
    expected = [fftconv(*t) for t in tensors]
    torch.cuda.synchronize()
    streams = [torch.cuda.Stream() for _ in tensors]
    outputs = []
    for _ in range(3):
        for stream, t in zip(streams, tensors):
            with torch.cuda.stream(stream):
                outputs.append(fftconv(*t))
    torch.cuda.synchronize()
    for i, y in enumerate(outputs):
        torch.testing.assert_close(y, expected[i % len(tensors)], rtol=0, atol=0)
