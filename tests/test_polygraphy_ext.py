"""`polygraphy run model.onnx --onnxrt --fftconv-rt`: the Polygraphy extension registers the op
library with the sessions Polygraphy creates (needs the package installed: the entry point).
ONNX Runtime's outputs are compared with PyTorch's, saved beforehand (--load-outputs), so that
PASSED means the numbers agree, not only that the model ran."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import OrderedDict
from importlib import metadata

import numpy as np
import onnx
import pytest
import torch

from fftconv_rt.export import export
from fftconv_rt.spec import tolerance

from test_export import P1


def _polygraphy(*args):
    exe = shutil.which("polygraphy") or os.path.join(os.path.dirname(sys.executable), "polygraphy")
    return subprocess.run([exe, "run", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    if not any(e.name == "fftconv-rt" for e in metadata.entry_points(group="polygraphy.run.plugins")):
        pytest.fail("the polygraphy.run.plugins entry point of fftconv-rt is not installed (pip install -e .)")
    folder = tmp_path_factory.mktemp("m")
    torch.manual_seed(0)
    model = P1().eval()
    path = folder / "m.onnx"
    export(model, (torch.randn(2, 4, 64),), path, input_names=["u"])
    return model, path


def _saved_pytorch_run(model, onnx_path, folder, shapes):
    """Inputs (Polygraphy's JSON) and the float64 PyTorch outputs of each (a RunResults file);
    returns their paths and the absolute tolerance of the op's float32 metric."""
    from polygraphy.comparator import RunResults
    from polygraphy.json import save_json

    [output] = [o.name for o in onnx.load(str(onnx_path)).graph.output]
    feeds, outputs = [], []
    for shape in shapes:
        u = torch.randn(*shape)
        feeds.append(OrderedDict(u=u.numpy()))
        with torch.no_grad():
            outputs.append(OrderedDict([(output, model.double()(u.double()).float().numpy())]))
    model.float()
    inputs_path, outputs_path = folder / "inputs.json", folder / "pytorch.json"
    save_json(feeds, str(inputs_path))
    results = RunResults()
    results.add(outputs, runner_name="pytorch-float64")
    results.save(str(outputs_path))
    scale = max(float(np.max(np.abs(o[output]))) for o in outputs)
    return inputs_path, outputs_path, tolerance("float32") * scale


def test_polygraphy_runs_the_model_with_the_extension_and_matches_pytorch(exported, tmp_path):
    model, path = exported
    inputs, outputs, atol = _saved_pytorch_run(model, path, tmp_path, [(2, 4, 64), (3, 4, 200)])
    done = _polygraphy(str(path), "--onnxrt", "--fftconv-rt", "--load-inputs", str(inputs), "--load-outputs",
                       str(outputs), "--atol", f"{atol:.3e}", "--rtol", "0", "--check-error-stat", "max")
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "pytorch-float64" in log and "PASSED" in log and "FAILED" not in log


def test_a_wrong_output_fails_the_comparison(exported, tmp_path):
    """The same comparison against a PyTorch model whose skip term differs: Polygraphy must fail."""
    model, path = exported
    wrong = P1().eval()
    wrong.load_state_dict(model.state_dict())
    with torch.no_grad():
        wrong.D.add_(0.01)
    inputs, outputs, atol = _saved_pytorch_run(wrong, path, tmp_path, [(2, 4, 64)])
    done = _polygraphy(str(path), "--onnxrt", "--fftconv-rt", "--load-inputs", str(inputs), "--load-outputs",
                       str(outputs), "--atol", f"{atol:.3e}", "--rtol", "0", "--check-error-stat", "max")
    assert done.returncode != 0 and "Mismatched outputs" in done.stdout + done.stderr


def test_without_the_extension_onnxruntime_refuses_the_op(exported):
    _, path = exported
    done = _polygraphy(str(path), "--onnxrt", "--input-shapes", "u:[2,4,64]")
    assert done.returncode != 0
    assert "FFTConv" in done.stdout + done.stderr


@pytest.mark.parametrize("library, reason", [("/nope/libfftconv_ort.so", "does not exist"),
                                             (__file__, "ONNX Runtime cannot load")])
def test_a_library_that_does_not_load_is_one_line(exported, library, reason):
    _, path = exported
    done = _polygraphy(str(path), "--onnxrt", "--fftconv-rt-library", library, "--input-shapes", "u:[2,4,64]")
    log = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in log, log[-3000:]
    [line] = [line for line in log.splitlines() if "--fftconv-rt-library" in line]
    assert library in line and reason in line
