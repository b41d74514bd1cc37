"""Property tests: random shapes, filter lengths, FFT sizes (automatic, explicit linear and
circular shorter than L + Lk - 1), dtypes, layouts and optional inputs, through the C ABI
(NumPy binding), the torch op and the ORT op on the CPU, against the float64 reference.

Deterministic (derandomized) so CI is reproducible; a failure prints its minimal example,
which then becomes a regular test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fftconv_rt._lib import fftconv_numpy
from fftconv_rt.ort import make_session
from fftconv_rt.ort import run as ort_run
from fftconv_rt.reference import fftconv_reference, relative_error
from fftconv_rt.spec import tolerance
from fftconv_rt.torch_op import fftconv

from helpers import NAMES, build_model, make_inputs

OPTIONAL = ("D", "pregate", "postgate")
SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def cases(draw, max_elements=1 << 17):
    L = draw(st.one_of(st.integers(1, 300), st.sampled_from([2 ** p for p in range(4, 17)]),
                       st.integers(301, 1 << 16)))
    B = draw(st.integers(1, 3))
    H = draw(st.integers(1, max(1, min(5, max_elements // (B * L)))))
    Lk = draw(st.integers(1, L + 40))
    mode = draw(st.sampled_from(["auto", "linear", "circular"]))
    if mode == "linear":  # an explicit size with no wrap-around: n >= L + Lk - 1
        fft_size = draw(st.integers(L + Lk - 1, L + Lk - 1 + 64))
    elif mode == "circular" and max(L, Lk) < L + Lk - 1:
        fft_size = draw(st.integers(max(L, Lk), L + Lk - 2))
    else:
        fft_size = 0
    dtype = draw(st.sampled_from(["float32", "float16", "bfloat16"]))
    layout = draw(st.sampled_from(["BHL", "BLH"]))
    options = tuple(o for o in OPTIONAL if draw(st.booleans()))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    return dict(B=B, H=H, L=L, Lk=Lk, fft_size=fft_size, dtype=dtype, layout=layout, options=options, seed=seed)


def _arrays(case):
    rng = np.random.default_rng(case["seed"])
    return make_inputs(rng, case["B"], case["H"], case["L"], case["Lk"], case["dtype"], case["options"],
                       case["layout"])


def _check(case, y, arrays):
    ref = fftconv_reference(*arrays, fft_size=case["fft_size"], layout=case["layout"])
    err = relative_error(np.asarray(y, np.float32), ref)
    assert err <= tolerance(case["dtype"]), f"{case}: {err:.3e}"


@SETTINGS
@given(cases())
def test_c_abi_matches_the_reference(case):
    arrays = _arrays(case)
    _check(case, fftconv_numpy(*arrays, fft_size=case["fft_size"], layout=case["layout"]), arrays)


_TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@SETTINGS
@given(cases())
def test_torch_op_matches_the_reference(case):
    arrays = _arrays(case)
    tensors = [None if a is None else torch.from_numpy(np.asarray(a, np.float32)).to(_TORCH[case["dtype"]])
               for a in arrays]
    tensors[1], tensors[2] = tensors[1].float(), None if tensors[2] is None else tensors[2].float()
    y = fftconv(*tensors, fft_size=case["fft_size"], layout=case["layout"])
    _check(case, y.float().numpy(), [None if t is None else t.float().numpy() for t in tensors])


@SETTINGS
@given(cases(max_elements=1 << 15))
def test_ort_op_matches_the_reference(case):
    arrays = _arrays(case)
    attributes = {"fft_size": case["fft_size"], "layout": case["layout"]}
    model = build_model(arrays, case["dtype"], attributes=attributes, dynamic=False)
    session = make_session(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {n: a for n, a in zip(NAMES, arrays) if a is not None}
    _check(case, ort_run(session, feed)[0], arrays)



@pytest.mark.cuda
@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases(max_elements=1 << 20))
def test_cuda_torch_op_matches_the_reference(case):
    """The same cases on the GPU (tensor-core, fused and split paths, transposed BLH)."""
    arrays = _arrays(case)
    tensors = [None if a is None else torch.from_numpy(np.asarray(a, np.float32)).to(_TORCH[case["dtype"]])
               for a in arrays]
    tensors[1], tensors[2] = tensors[1].float(), None if tensors[2] is None else tensors[2].float()
    y = fftconv(*(None if t is None else t.cuda() for t in tensors), fft_size=case["fft_size"],
                layout=case["layout"])
    _check(case, y.float().cpu().numpy(), [None if t is None else t.float().numpy() for t in tensors])
