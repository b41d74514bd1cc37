"""fftconv_rt.validate: callable however often it is imported, inputs that do not match the
ONNX model refused with what it expects, timing as a real median, the caller's model untouched."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import fftconv_rt
from fftconv_rt.export import export
from fftconv_rt.validate import ModelRunError, validate

from helpers import build_model


class Conv(torch.nn.Module):
    """P2-style causal long convolution with a skip term; counts the calls of this instance."""

    def __init__(self, H=4, Lmax=256):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.k = torch.nn.Parameter(torch.randn(H, Lmax, generator=g) * torch.exp(-4 * torch.arange(Lmax) / Lmax))
        self.D = torch.nn.Parameter(torch.randn(H, generator=g))
        self.calls = {}

    def forward(self, u):
        self.calls[id(self)] = self.calls.get(id(self), 0) + 1
        L = u.shape[-1]
        y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(self.k[:, :L], n=2 * L), n=2 * L)[..., :L]
        return y + u * self.D.unsqueeze(-1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("validate") / "conv.onnx"
    export(Conv().eval(), (torch.randn(2, 4, 64),), path, input_names=["u"])
    return path


def test_validate_is_callable_any_number_of_times_in_a_fresh_process(exported):
    """The second call used to raise "'module' object is not callable": importing the submodule
    fftconv_rt.validate replaced the package's function of that name."""
    script = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
        import torch, fftconv_rt
        from test_validate import Conv
        model, x = Conv(), (torch.randn(2, 4, 64),)
        first = fftconv_rt.validate(model, {str(exported)!r}, [x], timing_repeats=0)
        second = fftconv_rt.validate(model, {str(exported)!r}, [x], timing_repeats=0)
        import fftconv_rt.validate
        third = fftconv_rt.validate.validate(model, {str(exported)!r}, [x], timing_repeats=0)
        fourth = fftconv_rt.validate(model, {str(exported)!r}, [x], timing_repeats=0)
        print(all(r.passed for r in (first, second, third, fourth)))
    ''')
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "True"


def test_no_submodule_shadows_a_public_function():
    """Every callable the package exports stays callable after all its submodules are imported."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(fftconv_rt.__path__):
        if info.name in ("trt", "polygraphy_ext"):  # need tensorrt / polygraphy's tool args to import
            continue
        importlib.import_module(f"fftconv_rt.{info.name}")
    for name in fftconv_rt.__all__:
        value = getattr(fftconv_rt, name)
        if not isinstance(value, str):
            assert callable(value), f"fftconv_rt.{name} is {value!r}, not callable"


def test_inputs_of_the_wrong_type_name_what_the_model_expects(exported):
    with pytest.raises(ValueError, match=r"'u' is float64 \(2, 4, 64\); the model's inputs are u: float32 \["):
        validate(Conv().double(), str(exported), [(torch.randn(2, 4, 64, dtype=torch.float64),)])


def test_inputs_of_the_wrong_rank_or_count_are_refused(exported):
    with pytest.raises(ValueError, match=r"'u' is float32 \(4, 64\); the model's inputs are u: float32"):
        validate(Conv(), str(exported), [(torch.randn(4, 64),)])
    with pytest.raises(ValueError, match=r"takes 1 inputs \(u: float32 \[.*\]\), got 2"):
        validate(Conv(), str(exported), [(torch.randn(2, 4, 64), torch.randn(2, 4, 64))])


class _TorchOpConv(torch.nn.Module):
    """The one-node model of helpers.build_model in PyTorch."""

    def __init__(self, k):
        super().__init__()
        self.register_buffer("k", torch.from_numpy(k))

    def forward(self, u):
        import fftconv_rt.torch_op

        return fftconv_rt.torch_op.fftconv(u, self.k)


def _one_node_model(tmp_path, H, dynamic_channels):
    rng = np.random.default_rng(0)
    k = rng.standard_normal((H, 16)).astype(np.float32)
    u = rng.standard_normal((2, H, 32)).astype(np.float32)
    model = build_model([u, k, None, None, None], "float32", constant_k=True)
    if dynamic_channels:
        model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "H"
    path = tmp_path / "one.onnx"
    path.write_bytes(model.SerializeToString())
    return _TorchOpConv(k), path


def test_a_model_calling_the_torch_op_is_validated(tmp_path):
    """The op refuses float64 (FFTConvError): the reference falls back to the float32 model."""
    model, path = _one_node_model(tmp_path, 3, dynamic_channels=False)
    report = validate(model, str(path), [(torch.randn(2, 3, 32),)], timing_repeats=0)
    assert report.passed and report.checks[0].float32_error is None, str(report)


def test_static_channels_that_differ_are_refused_before_running(tmp_path):
    _, path = _one_node_model(tmp_path, 3, dynamic_channels=False)
    with pytest.raises(ValueError, match=r"'u' is float32 \(2, 5, 32\); the model's inputs are u: float32 \[B, 3, L\]"):
        validate(torch.nn.Identity(), str(path), [(torch.randn(2, 5, 32),)])


def test_a_runtime_failure_names_the_inputs_given_and_declared(tmp_path):
    """Channels declared dynamic: only the op itself finds that k has 3 rows for 5 channels."""
    _, path = _one_node_model(tmp_path, 3, dynamic_channels=True)
    with pytest.raises(ModelRunError) as raised:
        validate(torch.nn.Identity(), str(path), [(torch.randn(2, 5, 32),)])
    message = str(raised.value)
    assert "inputs given (u: float32 (2, 5, 32))" in message
    assert "the model's inputs are u: float32 [B, H, L]" in message
    assert "FFTConv" in message  # the runtime's own reason


def test_timing_is_a_median_after_a_warm_up(exported):
    model = Conv()
    feeds = [(torch.randn(2, 4, 64),), (torch.randn(1, 4, 200),)]
    report = validate(model, str(exported), feeds, timing_repeats=3)
    # per input set: one for PyTorch float32's own error; then 1 warm-up + 3 timed runs
    assert model.calls[id(model)] == len(feeds) + 1 + 3
    assert set(report.runner_times_ms) == {"pytorch", "onnxruntime+fftconv[CPU]"}
    assert all(ms > 0 for ms in report.runner_times_ms.values())
    text = str(report)
    assert "median of 3 runs after a warm-up run, input set 1 (u: float32 (1, 4, 200))" in text
    assert "median inference" not in text

    quiet = validate(Conv(), str(exported), feeds[:1], timing_repeats=0)
    assert not quiet.runner_times_ms and "timing" not in str(quiet)


def test_the_callers_train_eval_flags_are_left_as_they_were(exported):
    model = Conv()
    model.train()
    assert validate(model, str(exported), [(torch.randn(2, 4, 64),)], timing_repeats=0).passed
    assert model.training


def test_a_module_loaded_from_a_pt2_is_validated(exported, tmp_path):
    """torch.export's modules refuse eval() (their mode was fixed at export)."""
    example = (torch.randn(2, 4, 64),)
    path = tmp_path / "conv.pt2"
    torch.export.save(torch.export.export(Conv().eval(), example), str(path))
    loaded = torch.export.load(str(path)).module()
    report = validate(loaded, str(exported), [example], timing_repeats=2)
    assert report.passed, str(report)
