"""The TensorRT plugin (built only where TensorRT's headers are given) and the Python side:
the exporter's stamps for TensorRT's ONNX parser, which ONNX Runtime ignores."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import onnx
import pytest
import torch

from fftconv_rt.export import export
from fftconv_rt.trt import build_trt_engine

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
    _check_ort(model, path, [(2, 4, 64), (3, 4, 100)])


def test_engine_building_without_tensorrt_says_what_is_missing(tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs the `tensorrt` Python module"):
            build_trt_engine(tmp_path / "m.onnx")
    else:
        pytest.skip("tensorrt is installed here: the refusal is not reachable")
