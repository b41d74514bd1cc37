"""The reverse pass: FFTConv nodes become standard ONNX ops that any ONNX runtime runs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fftconv_rt.export import decompose, decompose_file, export
from fftconv_rt.ort import make_session
from fftconv_rt.reference import fftconv_reference, relative_error
from fftconv_rt.spec import DOMAIN, tolerance

from helpers import NAMES, build_model, make_inputs
from test_export import P1, P2, P8, P12


def _plain_session(model: onnx.ModelProto):
    """A session of the stock onnxruntime: the fftconv-rt library is not registered."""
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _feed(session, arrays):
    names = {i.name for i in session.get_inputs()}
    return {n: a for n, a in zip(NAMES, arrays) if a is not None and n in names}


@pytest.mark.parametrize("model_cls", [P1, P2])
def test_exported_model_runs_without_the_library(tmp_path, model_cls):
    model = model_cls().eval()
    export(model, (torch.randn(2, 4, 64),), tmp_path / "m.onnx")
    assert decompose_file(tmp_path / "m.onnx", tmp_path / "plain.onnx") == 1
    plain = onnx.load(str(tmp_path / "plain.onnx"))
    onnx.checker.check_model(plain)
    assert not [n for n in plain.graph.node if n.domain == DOMAIN]
    assert all(o.domain != DOMAIN for o in plain.opset_import)
    session = _plain_session(plain)
    for B, L in ((2, 64), (3, 333)):
        x = torch.randn(B, 4, L)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert relative_error(got, expected) <= tolerance("float32")


@pytest.mark.parametrize("model_cls,dynamic", [(P8, False), (P12, True)])
def test_section_b_forms_round_trip(tmp_path, model_cls, dynamic):
    """The circular two-sided form (P8, static) and the delayed filter of P12 (dynamic) also run
    as standard ONNX."""
    model = model_cls().eval()
    export(model, (torch.randn(2, 4, 64),), tmp_path / "m.onnx", dynamic_shapes=None if dynamic else (None,))
    assert decompose_file(tmp_path / "m.onnx", tmp_path / "plain.onnx") == 1
    session = _plain_session(onnx.load(str(tmp_path / "plain.onnx")))
    for B, L in ((2, 64), (3, 200)) if dynamic else ((2, 64),):
        x = torch.randn(B, 4, L)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert relative_error(got, expected) <= tolerance("float32")


@pytest.mark.parametrize("options", [(), ("D",), ("D", "pregate", "postgate")])
@pytest.mark.parametrize("layout", ["BHL", "BLH"])
@pytest.mark.parametrize("fft_size", [0, 150])
def test_matches_the_op(rng, options, layout, fft_size):
    arrays = make_inputs(rng, 2, 3, 100, 100, "float32", options, layout)
    _check_against_the_op(arrays, {"layout": layout, "fft_size": fft_size})


def _check_against_the_op(arrays, attributes):
    """One FFTConv node with these attributes, decomposed and run in the stock onnxruntime,
    against the float64 reference and against the op itself."""
    model = build_model(arrays, "float32", attributes=attributes)
    decomposed, count = decompose(model)
    assert count == 1
    got = _plain_session(decomposed).run(None, _feed(_plain_session(decomposed), arrays))[0]
    op = make_session(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = op.run(None, _feed(op, arrays))[0]
    assert relative_error(got, fftconv_reference(*arrays, **attributes)) <= tolerance("float32")
    assert relative_error(got, expected) <= 2 * tolerance("float32")


@pytest.mark.parametrize("L,Lk,fft_size,freq_keep", [(128, 128, 0, 20), (100, 300, 512, 40), (100, 100, 128, 7)])
def test_frequency_sparse_node_matches_the_op(rng, L, Lk, fft_size, freq_keep):
    """freq_keep: the decomposition transforms at the period (2L, or fft_size, circular or not)
    and masks the filter's bins, as the op does; a dense decomposition would differ by ~1."""
    arrays = make_inputs(rng, 2, 3, L, Lk, "float32", ("D", "postgate"))
    _check_against_the_op(arrays, {"fft_size": fft_size, "freq_keep": freq_keep})


def test_float16_model_keeps_its_type(rng):
    arrays = make_inputs(rng, 2, 3, 500, 500, "float16", ("D",))
    decomposed, _ = decompose(build_model(arrays, "float16"))
    session = _plain_session(decomposed)
    got = session.run(None, _feed(session, arrays))[0]
    assert got.dtype == np.float16
    assert relative_error(got, fftconv_reference(*arrays)) <= tolerance("float16")


def test_model_without_fftconv_is_unchanged(rng):
    arrays = make_inputs(rng, 1, 2, 10, 10, "float32", ())
    model = build_model(arrays, "float32")
    model.graph.node[0].op_type = "Identity"
    del model.graph.node[0].input[1:]
    model.graph.node[0].domain = ""
    decomposed, count = decompose(model)
    assert count == 0 and decomposed.SerializeToString() == model.SerializeToString()


def test_cli_decompose(tmp_path):
    import subprocess
    import sys

    export(P1().eval(), (torch.randn(2, 4, 64),), tmp_path / "m.onnx")
    out = subprocess.run([sys.executable, "-m", "fftconv_rt.cli", "decompose", str(tmp_path / "m.onnx"),
                          str(tmp_path / "plain.onnx")], capture_output=True, text=True, check=True).stdout
    assert "1 FFTConv node" in out and (tmp_path / "plain.onnx").is_file()
