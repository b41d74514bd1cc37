"""Concurrent and repeated use: ORT sessions in threads give the single-run result bit for bit,
and creating and destroying sessions grows neither the process nor (CUDA provider, on the GPU
machine) the device memory in use."""

from __future__ import annotations

import gc
import os
import threading

import numpy as np
import pytest

from fftconv_rt.ort import make_session
from fftconv_rt.ort import run as ort_run

from helpers import NAMES, build_model, make_inputs


def _model_and_feed(rng, constant_k=True):
    arrays = make_inputs(rng, 2, 8, 3000, 3000, "float32", ("D", "pregate", "postgate"))
    model = build_model(arrays, "float32", constant_k=constant_k).SerializeToString()
    feed = {n: a for n, a in zip(NAMES, arrays) if a is not None and not (constant_k and n == "k")}
    return model, feed


CPU = ["CPUExecutionProvider"]
CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]
PROVIDERS = pytest.mark.parametrize("providers", [pytest.param(CPU, id="cpu"),
                                                  pytest.param(CUDA, marks=pytest.mark.ort_cuda, id="cuda")])


@PROVIDERS
def test_sessions_in_threads_match_a_single_run(rng, providers):
    model, feed = _model_and_feed(rng)
    expected = ort_run(make_session(model, providers=providers), feed)[0]
    sessions = [make_session(model, providers=providers, intra_op_threads=2) for _ in range(4)]
    results, errors = [], []

    def work(session):
        try:
            for _ in range(5):
                results.append(ort_run(session, feed)[0])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in sessions for _ in range(2)]  # 2 threads per session
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 40
    assert all(np.array_equal(r, expected) for r in results)


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _device_bytes_in_use(providers) -> int:
    if providers[0] == "CPUExecutionProvider":
        return 0
    import torch

    free, total = torch.cuda.mem_get_info()
    return total - free


def _plain_model_and_feed():
    """A model of one Add node and no FFTConv: what ONNX Runtime itself keeps per session."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 3000])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8, 3000])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "plain", [x], [y])
    model = helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 18)])
    return model.SerializeToString(), {"x": np.ones((2, 8, 3000), np.float32)}


@PROVIDERS
def test_creating_and_destroying_sessions_does_not_leak(rng, providers):
    """1000 sessions (constant filter: each prepares and frees its spectrum cache, 8 channels of
    an 8192-point transform, over 100 KB) after a warm-up; neither the resident set nor the
    device memory in use may grow by more than 16 MB beyond what 1000 sessions of a plain
    one-Add model grow them (ONNX Runtime's own per-session keep; leaking the spectrum cache
    per session would add over 100 MB)."""

    def growth(model, feed):
        def cycle():
            session = make_session(model, providers=providers, intra_op_threads=1)
            ort_run(session, feed)
            del session

        for _ in range(50):
            cycle()
        gc.collect()
        before, device_before = _rss_bytes(), _device_bytes_in_use(providers)
        for _ in range(1000):
            cycle()
        gc.collect()
        return _rss_bytes() - before, _device_bytes_in_use(providers) - device_before

    plain_host, plain_device = growth(*_plain_model_and_feed())
    host, device = growth(*_model_and_feed(rng))
    print(f"1000 sessions ({providers[0]}): resident set {host / 2**20:+.1f} MB (plain model {plain_host / 2**20:+.1f}),"
          f" device {device / 2**20:+.1f} MB (plain model {plain_device / 2**20:+.1f})")
    assert host - plain_host < 16 << 20, f"resident set grew by {host / 2**20:.1f} MB over 1000 sessions"
    assert device - plain_device < 16 << 20, f"device memory in use grew by {device / 2**20:.1f} MB"
