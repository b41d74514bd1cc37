"""The TensorRT plugin (built only where TensorRT's headers are given) and the Python side:
the exporter's stamps for TensorRT's ONNX parser, which ONNX Runtime ignores."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from fftconv_rt.export import export
from fftconv_rt.spec import DOMAIN, OP_NAME
from fftconv_rt.trt import build_trt_engine, stamp_for_tensorrt

from test_export import P1, _check_ort

_BUILD = os.environ.get("FFTCONV_TRT_BUILD_DIR")


@pytest.mark.skipif(not _BUILD, reason="the TensorRT plugin is built only against TensorRT's headers: configure CMake "
                                       "with -DFFTCONV_TENSORRT_INCLUDE_DIR and set FFTCONV_TRT_BUILD_DIR to that build")
def test_plugin_unit_test_passes():
    binary = Path(_BUILD) / "fftconv_trt_test"
    assert binary.is_file(), f"{binary} was not built"
    done = subprocess.run([str(binary)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "PASSED" in done.stdout, done.stdout


def test_stamped_model_still_runs_in_onnxruntime(tmp_path):
    model = P1().eval()
    path = tmp_path / "m.onnx"
    export(model, (torch.randn(2, 4, 64),), path, tensorrt=True)
    node = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "FFTConv")
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attributes["plugin_version"] == b"1" and attributes["plugin_namespace"] == b"fftconv_rt"
    assert (attributes["has_D"], attributes["has_pregate"], attributes["has_postgate"]) == (1, 0, 0)
    assert attributes["has_k_rev"] == 0 and attributes["constant_filter"] == 1  # k is the module's weight
    _check_ort(model, path, [(2, 4, 64), (3, 4, 100)])


def test_engine_building_without_tensorrt_says_what_is_missing(tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs the `tensorrt` Python module"):
            build_trt_engine(tmp_path / "m.onnx")
    else:
        pytest.skip("tensorrt is installed here: the refusal is not reachable")


def _stamps(path):
    model = onnx.load(str(path))
    return [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in model.graph.node
            if n.op_type == OP_NAME]


def test_constant_filter_stamped_only_where_the_filters_are_fixed_per_shape(tmp_path):
    """k from initializers (or cut to L through the input's shape) is fixed for each shape, so the
    plugin may keep its spectrum; k computed from a graph input is not, and k_rev counts too."""
    h = onnx.helper
    F = onnx.TensorProto.FLOAT
    weights = [onnx.numpy_helper.from_array(np.ones((4, 16), np.float32), "k_w"),
               onnx.numpy_helper.from_array(np.array([2], np.int64), "axis")]
    nodes = [
        h.make_node("Shape", ["u"], ["u_shape"]),
        h.make_node("Gather", ["u_shape", "axis"], ["length"]),
        h.make_node("Slice", ["k_w", "zero", "length", "one"], ["k_cut"]),  # k cut to L
        h.make_node(OP_NAME, ["u", "k_w"], ["y1"], domain=DOMAIN),
        h.make_node(OP_NAME, ["y1", "k_cut"], ["y2"], domain=DOMAIN),
        h.make_node("Mul", ["k_w", "scale"], ["k_scaled"]),
        h.make_node(OP_NAME, ["y2", "k_scaled"], ["y3"], domain=DOMAIN),
        h.make_node(OP_NAME, ["y3", "k_w", "", "", "", "k_scaled"], ["y4"], domain=DOMAIN),
    ]
    weights += [onnx.numpy_helper.from_array(np.array([0], np.int64), "zero"),
                onnx.numpy_helper.from_array(np.array([1], np.int64), "one")]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("u", F, ["B", 4, "L"]),
                                      h.make_tensor_value_info("scale", F, [1])],
                         [h.make_tensor_value_info("y4", F, ["B", 4, "L"])], initializer=weights)
    path = tmp_path / "stamps.onnx"
    onnx.save(h.make_model(graph), str(path))
    assert stamp_for_tensorrt(path) == 4
    stamps = _stamps(path)
    assert [s["constant_filter"] for s in stamps] == [1, 1, 0, 0]
    assert [s["has_k_rev"] for s in stamps] == [0, 0, 0, 1]
    assert (stamps[3]["has_D"], stamps[3]["has_pregate"], stamps[3]["has_postgate"]) == (0, 0, 0)
