"""`polygraphy run model.onnx --onnxrt --fftconv-rt`: the Polygraphy extension registers the op
library with the sessions Polygraphy creates (needs the package installed: the entry point)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import metadata

import pytest
import torch

from fftconv_rt.export import export

from test_export import P1


def _polygraphy(*args):
    exe = shutil.which("polygraphy") or os.path.join(os.path.dirname(sys.executable), "polygraphy")
    return subprocess.run([exe, "run", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    if not any(e.name == "fftconv-rt" for e in metadata.entry_points(group="polygraphy.run.plugins")):
        pytest.fail("the polygraphy.run.plugins entry point of fftconv-rt is not installed (pip install -e .)")
    path = tmp_path_factory.mktemp("m") / "m.onnx"
    export(P1().eval(), (torch.randn(2, 4, 64),), path, input_names=["u"])
    return path


def test_polygraphy_runs_the_model_with_the_extension(exported):
    done = _polygraphy(str(exported), "--onnxrt", "--fftconv-rt", "--input-shapes", "u:[2,4,64]")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "PASSED" in done.stdout + done.stderr


def test_without_the_extension_onnxruntime_refuses_the_op(exported):
    done = _polygraphy(str(exported), "--onnxrt", "--input-shapes", "u:[2,4,64]")
    assert done.returncode != 0
    assert "FFTConv" in done.stdout + done.stderr
