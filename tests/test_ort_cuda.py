"""The FFTConv node on ONNX Runtime's CUDA provider (GPU machine with onnxruntime-gpu only)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings

from fftconv_rt.export import export
from fftconv_rt.ort import make_session, run, run_on_device
from fftconv_rt.reference import relative_error
from fftconv_rt.spec import tolerance

from helpers import NAMES, build_model
from test_export import P1, MLPFilter
from test_properties import _arrays, _check, cases

pytestmark = pytest.mark.ort_cuda

CUDA_FIRST = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _profiled_session(path, tmp_path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    return make_session(path, providers=CUDA_FIRST, options=options)


def _copies_next_to_fftconv(optimized_path) -> list[str]:
    """Memcpy nodes that produce an input of an FFTConv node or consume its output."""
    import onnx

    graph = onnx.load(str(optimized_path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    found = []
    for node in graph.node:
        if node.op_type != "FFTConv":
            continue
        found += [producer[i].name for i in node.input if i in producer and producer[i].op_type.startswith("Memcpy")]
        found += [n.name for n in graph.node if n.op_type.startswith("Memcpy") and set(n.input) & set(node.output)]
    return found


@pytest.mark.parametrize("model_cls", [P1, MLPFilter])
def test_fftconv_runs_on_the_cuda_provider(tmp_path, model_cls):
    """Every FFTConv runs on CUDA (checked in ORT's profile), with no copy to the host around
    it; two lengths in one session (two prepared spectra of the constant filter)."""
    model = model_cls().eval()
    path = tmp_path / "m.onnx"
    export(model, (torch.randn(2, 4, 64),), path)
    session = _profiled_session(path, tmp_path)
    name = session.get_inputs()[0].name
    for shape in ((2, 4, 64), (3, 4, 200), (2, 4, 64)):
        x = torch.randn(*shape)
        got = run(session, {name: x.numpy()})[0]
        with torch.no_grad():
            expected = model(x).numpy()
        assert relative_error(got, expected) <= tolerance("float32")
    with open(session.end_profiling()) as f:
        events = json.load(f)
    nodes = [e["args"] for e in events if e.get("cat") == "Node" and "op_name" in e.get("args", {})]
    fftconv = [a for a in nodes if a["op_name"] == "FFTConv"]
    assert fftconv and all(a["provider"] == "CUDAExecutionProvider" for a in fftconv)
    assert _copies_next_to_fftconv(tmp_path / "optimized.onnx") == []


def test_device_tensors_in_and_out_without_host_copies(tmp_path):
    model = P1().eval()
    path = tmp_path / "m.onnx"
    export(model, (torch.randn(2, 4, 64),), path)
    session = make_session(path, providers=CUDA_FIRST)
    x = torch.randn(3, 4, 300, device="cuda")
    y = torch.empty_like(x)
    run_on_device(session, {session.get_inputs()[0].name: x}, {session.get_outputs()[0].name: y})
    with torch.no_grad():
        expected = model.cuda()(x)
    assert relative_error(y.cpu().numpy(), expected.cpu().numpy()) <= tolerance("float32")


def test_fftconv_is_captured_in_an_ort_cuda_graph(tmp_path):
    """With ORT's CUDA graphs (enable_cuda_graph, fixed shapes and bound buffers) the op's launches
    are captured on ORT's stream and replayed: no host synchronisation or allocation breaks the
    capture, and every replay gives the plain session's output for the current input."""
    from fftconv_rt.models import HyenaStack

    model = HyenaStack(32, 2, 512).eval()
    path = tmp_path / "m.onnx"
    export(model, (torch.randn(2, 64, 32),), path, max_length=512)
    plain = make_session(path, providers=CUDA_FIRST)
    graph = make_session(path, providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "1"}),
                                          "CPUExecutionProvider"])
    names = plain.get_inputs()[0].name, plain.get_outputs()[0].name
    x = torch.empty(1, 300, 32, device="cuda")
    y, y_graph = torch.empty_like(x), torch.empty_like(x)
    for _ in range(4):  # warm-up runs, the capture, then replays with new values in the same buffer
        x.copy_(torch.randn_like(x))
        run_on_device(plain, {names[0]: x}, {names[1]: y})
        run_on_device(graph, {names[0]: x}, {names[1]: y_graph})
        torch.cuda.synchronize()
        assert relative_error(y_graph.cpu().numpy(), y.cpu().numpy()) <= tolerance("float32")


def test_float16_model_on_cuda(tmp_path):
    """fp16 I/O (the model computes in fp32 and casts back): the tensor-core path on ORT's stream."""
    model = P1().eval()
    path = tmp_path / "m.onnx"
    export(model, (torch.randn(2, 4, 64).half(),), path)
    session = make_session(path, providers=CUDA_FIRST)
    x = torch.randn(2, 4, 1000, device="cuda").half()
    y = torch.empty_like(x)
    run_on_device(session, {session.get_inputs()[0].name: x}, {session.get_outputs()[0].name: y})
    with torch.no_grad():
        expected = model.cuda()(x).float()
    assert relative_error(y.float().cpu().numpy(), expected.cpu().numpy()) <= tolerance("float16")


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases(max_elements=1 << 16))
def test_ort_cuda_op_matches_the_reference(case):
    """The property cases of test_properties through the ORT op on the CUDA provider."""
    arrays = _arrays(case)
    attributes = {"fft_size": case["fft_size"], "layout": case["layout"]}
    model = build_model(arrays, case["dtype"], attributes=attributes, dynamic=False)
    session = make_session(model.SerializeToString(), providers=CUDA_FIRST)
    feed = {n: np.asarray(a) for n, a in zip(NAMES, arrays) if a is not None}
    _check(case, run(session, feed)[0], arrays)
