"""One-node FFTConv models of op version 2 (k_rev, period_scale, max_length) and version 1, for the
ORT-op and decompose tests; inputs in the I/O type, every 3-d input with dynamic B and L."""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from helpers import ONNX_TYPES, onnx_type

NAMES_V2 = ["u", "k", "D", "pregate", "postgate", "k_rev"]


def build_v2_model(arrays, dtype, attributes=None, constant=(), version=2):
    """One FFTConv node of this domain version; arrays follow NAMES_V2 (None: omitted); the inputs
    named in `constant` are initializers (float32, as the exporter writes them)."""
    graph_inputs, initializers, node_inputs = [], [], []
    u_shape = None
    for name, a in zip(NAMES_V2, arrays):
        if a is None:
            node_inputs.append("")
            continue
        node_inputs.append(name)
        if name in constant:
            initializers.append(numpy_helper.from_array(np.asarray(a, np.float32), name))
            continue
        shape = ["B", a.shape[1], "L"] if a.ndim == 3 else list(a.shape)
        if a.ndim == 3 and attributes and attributes.get("layout") == "BLH":
            shape = ["B", "L", a.shape[2]]
        if name == "u":
            u_shape = shape
        graph_inputs.append(helper.make_tensor_value_info(name, onnx_type(a), shape))
    while node_inputs and node_inputs[-1] == "":
        node_inputs.pop()
    node = helper.make_node("FFTConv", node_inputs, ["y"], domain="fftconv_rt", **(attributes or {}))
    out = helper.make_tensor_value_info("y", ONNX_TYPES[dtype], u_shape)
    graph = helper.make_graph([node], "fftconv", graph_inputs, [out], initializers)
    return helper.make_model(graph, ir_version=9,
                             opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("fftconv_rt", version)])


def feed(session, arrays):
    names = {i.name for i in session.get_inputs()}
    return {n: a for n, a in zip(NAMES_V2, arrays) if a is not None and n in names}


def shorter(arrays, L, layout="BHL"):
    """The inputs cut to the first L time steps (filters unchanged)."""
    axis = 2 if layout == "BHL" else 1
    return [a if a is None or a.ndim != 3 else np.ascontiguousarray(np.take(a, range(L), axis=axis)) for a in arrays]
