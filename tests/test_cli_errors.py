"""The CLI's error boundary: a user's mistake is one line "fftconv-rt <cmd>: error: ..." and exit 2
(never a doubled prefix), --verbose gives the traceback; export's options reach the exporter;
a .pt2 exports and validates."""

from __future__ import annotations

import textwrap

import pytest
import torch

from fftconv_rt.cli import main


@pytest.fixture
def models(tmp_path, monkeypatch):
    (tmp_path / "cli_models.py").write_text(textwrap.dedent('''
        import torch

        class Conv(torch.nn.Module):
            def __init__(self, H=4):
                super().__init__()
                self.k = torch.nn.Parameter(torch.randn(H, 128) * 0.1)
                self.D = torch.nn.Parameter(torch.randn(H))

            def forward(self, u):
                L = u.shape[-1]
                y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(self.k[:, :L], n=2 * L),
                                    n=2 * L)[..., :L]
                return y + u * self.D.unsqueeze(-1)

        class DataDependent(Conv):
            def forward(self, u):
                if u.sum() > 0:
                    return super().forward(u)
                return u

        def conv():
            torch.manual_seed(0)
            return Conv().eval(), (torch.randn(2, 4, 64),)

        def conv8():
            torch.manual_seed(0)
            return Conv(8).eval(), (torch.randn(2, 8, 64),)

        def data_dependent():
            return DataDependent().eval(), (torch.randn(2, 4, 64),)
    '''))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _error_line(capsys, command):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"fftconv-rt {command}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert "error: fftconv-rt" not in lines[0]  # no doubled prefix
    return lines[0]


def test_untraceable_model_says_where_and_why(models, capsys):
    assert main(["export", "cli_models:data_dependent", "d.onnx"]) == 2
    line = _error_line(capsys, "export")
    assert "cannot trace" in line and "cli_models.py:18" in line


def test_verbose_reraises(models):
    with pytest.raises(Exception, match="cannot trace"):
        main(["export", "cli_models:data_dependent", "d.onnx", "--verbose"])


def test_refused_option_of_the_exporter_has_no_doubled_prefix(models, capsys):
    assert main(["export", "cli_models:conv", "m.onnx", "--partial", "0"]) == 2
    assert "partial must be >= 1" in _error_line(capsys, "export")


def test_static_shapes_let_freq_keep_take_a_fraction(models, capsys):
    assert main(["export", "cli_models:conv", "m.onnx", "--freq-keep", "0.25"]) == 2
    assert "static" in _error_line(capsys, "export")
    assert main(["export", "cli_models:conv", "s.onnx", "--freq-keep", "0.25", "--dynamic-dims", "none",
                 "--input-names", "x", "--output-names", "y"]) == 0
    import onnx

    graph = onnx.load("s.onnx").graph
    assert [i.name for i in graph.input] == ["x"] and [o.name for o in graph.output] == ["y"]
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [2, 4, 64]


def test_validate_against_the_wrong_onnx_names_the_expected_inputs(models, capsys):
    assert main(["export", "cli_models:conv", "m.onnx"]) == 0
    capsys.readouterr()
    assert main(["validate", "cli_models:conv8", "m.onnx"]) == 2
    line = _error_line(capsys, "validate")
    assert "'u' is float32 (2, 8, 64)" in line and "the model's inputs are u: float32 [" in line


@pytest.mark.parametrize("spec, message", [("cli_models", "package.module:factory"),
                                           ("no_such_module:f", "cannot import 'no_such_module'"),
                                           ("cli_models:nope", "no callable 'nope'"),
                                           ("missing.pt2", "does not exist")])
def test_bad_model_specs(models, capsys, spec, message):
    assert main(["export", spec, "m.onnx"]) == 2
    assert message in _error_line(capsys, "export")


def test_pt2_exports_and_validates(models, capsys):
    import cli_models

    model, example = cli_models.conv()
    torch.export.save(torch.export.export(model, example), "c.pt2")
    assert main(["export", "c.pt2", "c.onnx"]) == 0
    assert main(["validate", "c.pt2", "c.onnx", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "validation: PASSED" in out and "median of 2 runs" in out
