"""What export() does with the caller's model and inputs: which dimensions stay dynamic, a batch
of 1, shapes the model's code fixes, .pt2 programs, the caller's train/eval modes, and models
torch.export cannot trace."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from fftconv_rt.export import TraceError, export
from fftconv_rt.ort import make_session


class LongConv(torch.nn.Module):
    """P2 causal convolution of (B, H, L) with a stored filter cut to L, plus a skip term."""

    def __init__(self, H=4, Lk=256):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.k = torch.nn.Parameter(torch.randn(H, Lk, generator=g) * torch.exp(-torch.arange(Lk) / 8.0))
        self.D = torch.nn.Parameter(torch.randn(H, generator=g))
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, u):
        L = u.shape[-1]
        k = self.k[:, :L]
        y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L]
        return self.drop(y + u * self.D.unsqueeze(-1))


class SizeFromPython(LongConv):
    """Reads the batch and length as Python numbers (as opt_einsum or a reshape to a computed
    shape does): torch.export fixes them, and the ONNX model must then not claim them dynamic."""

    def forward(self, u):
        b, h, L = (int(s) for s in u.shape)
        return super().forward(u).reshape(b, h * L).reshape(b, h, L)


def _input_dims(path):
    [inp] = onnx.load(str(path)).graph.input
    return [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]


def _run(path, x):
    session = make_session(str(path))
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def _assert_matches(model, path, shapes):
    for shape in shapes:
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = model(x).numpy()
        assert np.abs(_run(path, x) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_batch_and_length_are_dynamic_and_channels_fixed(tmp_path):
    model = LongConv().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 64),), path)
    batch, channels, length = _input_dims(path)
    assert isinstance(batch, str) and channels == 4 and isinstance(length, str)
    assert report.inputs == ["u(u.shape[0], 4, u.shape[2])"]
    _assert_matches(model, path, [(3, 4, 100), (1, 4, 17)])


def test_every_dimension_dynamic_on_request_and_none_on_request(tmp_path):
    """dynamic_dims="all" keeps what the model allows dynamic (here the channels are fixed by
    its filter anyway); "none" fixes everything at the example's sizes."""
    path = tmp_path / "m.onnx"
    export(LongConv().eval(), (torch.randn(2, 4, 64),), path, dynamic_dims="none")
    assert _input_dims(path) == [2, 4, 64]
    with pytest.raises(ValueError, match="dynamic_dims must be one of"):
        export(LongConv().eval(), (torch.randn(2, 4, 64),), path, dynamic_dims="channels")


def test_a_batch_of_one_still_exports_a_dynamic_batch(tmp_path):
    model = LongConv().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(1, 4, 64),), path)
    assert isinstance(_input_dims(path)[0], str)
    assert any("batch of 1 repeated to 2" in note for note in report.notes)
    _assert_matches(model, path, [(1, 4, 64), (3, 4, 80)])  # the output follows the batch


def test_sizes_the_model_fixes_are_fixed_in_the_onnx_model_too(tmp_path):
    """Before: the graph kept the example's sizes in a Reshape while its input was declared
    dynamic, so ONNX Runtime failed (or answered wrongly) at another length."""
    model = SizeFromPython().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 64),), path)
    assert _input_dims(path) == [2, 4, 64]
    assert any("fixed at 64" in note for note in report.notes), report.notes
    _assert_matches(model, path, [(2, 4, 64)])
    session = make_session(str(path))
    with pytest.raises(Exception, match="(?i)invalid dimensions"):
        session.run(None, {session.get_inputs()[0].name: np.zeros((2, 4, 32), np.float32)})


def test_the_callers_train_mode_is_restored(tmp_path):
    model = LongConv().train()
    model.drop.eval()
    export(model, (torch.randn(2, 4, 64),), tmp_path / "m.onnx")
    assert model.training and not model.drop.training


def test_exported_program_and_pt2_file_export(tmp_path):
    """A torch.export program (as torch.export.load returns from a .pt2 file) exports, with its
    own example inputs; its module refuses eval(), which export() must not call."""
    model = LongConv().eval()
    program = torch.export.export(model, (torch.randn(2, 4, 64),))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    loaded = torch.export.load(str(tmp_path / "m.pt2"))
    report = export(loaded, None, tmp_path / "m.onnx")
    assert report.fftconv_nodes == 1
    _assert_matches(model, tmp_path / "m.onnx", [(2, 4, 64)])
    report = export(loaded.module(), (torch.randn(2, 4, 64),), tmp_path / "module.onnx")
    assert report.fftconv_nodes == 1


class DataDependent(LongConv):
    def forward(self, u):
        if u.sum() > 0:  # a Python branch on tensor values
            return super().forward(u)
        return u


def test_a_model_torch_export_cannot_trace_fails_in_one_line_naming_where(tmp_path):
    with pytest.raises(TraceError) as info:
        export(DataDependent().eval(), (torch.randn(2, 4, 64),), tmp_path / "m.onnx")
    message = str(info.value)
    assert "\n" not in message
    assert "test_export_inputs.py:" in message and "if u.sum() > 0" in message
    assert "data-dependent control flow" in message
    assert "Traceback" in info.value.detail  # the full trace, for a verbose mode
