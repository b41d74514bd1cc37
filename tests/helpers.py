"""Input generation shared by the tests: random inputs of the op in any dtype."""

from __future__ import annotations

import ml_dtypes
import pytest
import numpy as np

from fftconv_rt.reference import decaying_filter

NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
OPTIONS = {
    "none": (),
    "D": ("D",),
    "pregate": ("pregate",),
    "postgate": ("postgate",),
    "all": ("D", "pregate", "postgate"),
}


def make_inputs(rng, B, H, L, Lk, dtype="float32", options=("D",), layout="BHL", k_dtype=None, D_dtype=None):
    """u, k, D, pregate, postgate as NumPy arrays (None for options not asked for)."""
    np_dtype = NUMPY_DTYPES[dtype]
    shape = (B, H, L) if layout == "BHL" else (B, L, H)
    u = rng.standard_normal(shape).astype(np_dtype)
    k = decaying_filter(rng, H, Lk).astype(NUMPY_DTYPES[k_dtype or "float32"])
    D = rng.standard_normal(H).astype(NUMPY_DTYPES[D_dtype or "float32"]) if "D" in options else None
    pre = (rng.uniform(0.5, 1.5, shape)).astype(np_dtype) if "pregate" in options else None
    post = (rng.uniform(0.5, 1.5, shape)).astype(np_dtype) if "postgate" in options else None
    return u, k, D, pre, post


REFERENCE_LENGTHS = [1, 2, 3, 17, 128, 1000, 4096, 65536]


def reference_grid(test):
    """Parametrises a test over the grid every entry point is checked on: L in
    REFERENCE_LENGTHS, a filter shorter than L and one as long, every dtype, both layouts."""
    for name, values in (("layout", ["BHL", "BLH"]), ("dtype", list(NUMPY_DTYPES)),
                         ("filter_len", ["short", "equal"]), ("L", REFERENCE_LENGTHS)):
        test = pytest.mark.parametrize(name, values)(test)
    return test


def grid_inputs(rng, L, filter_len, dtype, layout):
    """Inputs of one grid case, with every optional input; B*H is odd, so one row goes unpaired."""
    Lk = L if filter_len == "equal" else max(1, L // 3)
    return make_inputs(rng, 1 if L > 4096 else 3, 3, L, Lk, dtype, ("D", "pregate", "postgate"), layout)
