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
from v2_models import build_v2_model, feed, shorter
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


# ---- op version 2 and the stock onnxruntime at every opset ----------------------------------


def _check_v2_decomposed(arrays, attributes, lengths, layout="BHL", constant=("k", "k_rev")):
    """One FFTConv v2 node, decomposed, run in the stock onnxruntime at each length, against the
    float64 reference."""
    decomposed, count = decompose(build_v2_model(arrays, "float32", attributes, constant=constant))
    assert count == 1
    onnx.checker.check_model(decomposed)
    session = _plain_session(decomposed)
    for L in lengths:
        inputs = shorter(arrays, L, layout)
        got = session.run(None, feed(session, inputs))[0]
        ref = fftconv_reference(*inputs[:5], k_rev=inputs[5], **attributes)
        assert relative_error(got, ref) <= tolerance("float32"), (L, attributes)


@pytest.mark.parametrize("Lk,Lk_rev", [(64, 100), (300, 7), (5, 5)])
@pytest.mark.parametrize("layout", ["BHL", "BLH"])
def test_linear_two_sided(rng, Lk, Lk_rev, layout):
    u, k, D, pre, post = make_inputs(rng, 2, 3, 200, Lk, "float32", ("D", "pregate", "postgate"), layout)
    k_rev = make_inputs(rng, 1, 3, 1, Lk_rev)[1]
    _check_v2_decomposed([u, k, D, pre, post, k_rev], {"layout": layout}, (200, 77), layout)


@pytest.mark.parametrize("two_sided", [False, True])
@pytest.mark.parametrize("scale", [1, 2, 3])
def test_period_scale_with_dynamic_period(rng, two_sided, scale):
    """n = scale * L at each length; 512-tap filters are cut at n when L is short."""
    u, k, D, _, _ = make_inputs(rng, 2, 3, 300, 512, "float32", ("D",))
    k_rev = make_inputs(rng, 1, 3, 1, 512)[1] if two_sided else None
    _check_v2_decomposed([u, k, D, None, None, k_rev], {"period_scale": scale}, (300, 128, 37))


@pytest.mark.parametrize("fft_size", [256, 300])
def test_two_sided_circular_fft_size(rng, fft_size):
    u, k, _, _, post = make_inputs(rng, 2, 3, 250, 100, "float32", ("postgate",))
    k_rev = make_inputs(rng, 1, 3, 1, 200)[1]
    _check_v2_decomposed([u, k, None, None, post, k_rev], {"fft_size": fft_size}, (250, 200))


def test_frequency_sparse_two_sided(rng):
    u, k, _, _, _ = make_inputs(rng, 2, 3, 256, 200, "float32", ())
    k_rev = make_inputs(rng, 1, 3, 1, 100)[1]
    _check_v2_decomposed([u, k, None, None, None, k_rev], {"freq_keep": 30}, (256, 128))
    _check_v2_decomposed([u, k, None, None, None, k_rev], {"freq_keep": 30, "period_scale": 2}, (256, 128))


def test_max_length_fails_in_a_node_named_for_it(rng):
    u, k, D, _, _ = make_inputs(rng, 1, 2, 120, 16, "float32", ("D",))
    model = build_v2_model([u, k, D, None, None, None], "float32", {"max_length": 100}, constant=("k",))
    decomposed, _ = decompose(model)
    session = _plain_session(decomposed)
    _check_v2_decomposed([u, k, D, None, None, None], {"max_length": 100}, (100, 64))
    with pytest.raises(Exception, match="L_exceeds_max_length_100"):
        session.run(None, feed(session, [u, None, D]))


def test_version_1_node_decomposes(rng):
    arrays = make_inputs(rng, 2, 3, 100, 40, "float32", ("D",))
    decomposed, count = decompose(build_v2_model(list(arrays) + [None], "float32", {"fft_size": 128}, version=1))
    session = _plain_session(decomposed)
    got = session.run(None, feed(session, arrays))[0]
    assert count == 1 and relative_error(got, fftconv_reference(*arrays, fft_size=128)) <= tolerance("float32")


@pytest.mark.parametrize("block", ["hyena", "long_conv"])
def test_opset_20_model_runs_in_a_stock_session_at_two_lengths(tmp_path, block):
    """The exporter writes opset 20 when no DFT remains; the decomposed DFTs must still run in the
    onnxruntime we install (its DFT-20 with a dft_length input failed at a second length: "Shape
    mismatch attempting to re-use buffer")."""
    from fftconv_rt.models import HyenaBlock, LongConvStack

    torch.manual_seed(0)
    model = (HyenaBlock(16, 512) if block == "hyena" else LongConvStack(16, 512, layers=2)).eval()
    x = torch.randn(2, 256, 16) if block == "hyena" else torch.randn(2, 16, 256)
    export(model, (x,), tmp_path / "m.onnx")
    opsets = onnx.load(str(tmp_path / "m.onnx")).opset_import
    assert any(o.domain in ("", "ai.onnx") and o.version >= 20 for o in opsets)
    assert decompose_file(tmp_path / "m.onnx", tmp_path / "plain.onnx") >= 1
    session = _plain_session(onnx.load(str(tmp_path / "plain.onnx")))
    for L in (256, 100):
        xl = x[:, :L] if block == "hyena" else x[..., :L]
        with torch.no_grad():
            expected = model(xl).numpy()
        got = session.run(None, {session.get_inputs()[0].name: xl.numpy()})[0]
        assert relative_error(got, expected) <= 1e-4
