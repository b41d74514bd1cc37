"""Shared by the tests: random inputs of the op in any dtype, the reference grid, one-node FFTConv models."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from onnx import TensorProto, helper, numpy_helper

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


# ---- one-node FFTConv ONNX models -------------------------------------------------

ONNX_TYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16}
NAMES = ["u", "k", "D", "pregate", "postgate"]


def onnx_type(a) -> int:
    return TensorProto.BFLOAT16 if a.dtype == ml_dtypes.bfloat16 else helper.np_dtype_to_tensor_dtype(a.dtype)


def build_model(arrays, dtype, constant_k=False, attributes=None, dynamic=True):
    """One FFTConv node; omitted inputs are empty names, k optionally an initializer."""
    graph_inputs, initializers, node_inputs = [], [], []
    for name, a in zip(NAMES, arrays):
        if a is None:
            node_inputs.append("")
            continue
        node_inputs.append(name)
        if name == "k" and constant_k:
            initializers.append(numpy_helper.from_array(np.asarray(a, np.float32), "k"))
            continue
        elem = onnx_type(a)
        shape = ["B", a.shape[1], "L"] if dynamic and a.ndim == 3 else list(a.shape)
        graph_inputs.append(helper.make_tensor_value_info(name, elem, shape))
    while node_inputs and node_inputs[-1] == "":
        node_inputs.pop()
    node = helper.make_node("FFTConv", node_inputs, ["y"], domain="fftconv_rt", **(attributes or {}))
    out = helper.make_tensor_value_info("y", ONNX_TYPES[dtype], None)
    graph = helper.make_graph([node], "fftconv", graph_inputs, [out], initializers)
    # IR version 9 (opset 18's): the newest onnx writes a version that older onnxruntime refuses
    return helper.make_model(graph, ir_version=9,
                             opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("fftconv_rt", 1)])


