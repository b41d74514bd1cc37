"""The fftconv-rt command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from fftconv_rt.cli import main


def cli(*args, cwd=None, check=True):
    result = subprocess.run([sys.executable, "-m", "fftconv_rt.cli", *args], capture_output=True, text=True,
                            cwd=cwd, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"fftconv-rt {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def factory_module(tmp_path):
    (tmp_path / "my_models.py").write_text(textwrap.dedent('''
        import torch

        class Conv(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.k = torch.nn.Parameter(torch.randn(4, 128) * 0.1)
                self.D = torch.nn.Parameter(torch.randn(4))

            def forward(self, u):
                L = u.shape[-1]
                y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(self.k[:, :L], n=2 * L),
                                    n=2 * L)[..., :L]
                return y + u * self.D.unsqueeze(-1)

        def conv():
            torch.manual_seed(0)
            return Conv().eval(), (torch.randn(2, 4, 100),)

        def plain():
            return torch.nn.Linear(8, 8), (torch.randn(2, 8),)
    '''))
    return tmp_path


def test_info():
    out = cli("info").stdout
    assert "libfftconv_ort.so" in out and "onnxruntime providers" in out
    from fftconv_rt._lib import ABI_VERSION

    assert re.search(rf"core ABI version\s+{ABI_VERSION}\b", out)


def test_export_and_validate(factory_module):
    out = cli("export", "my_models:conv", "m.onnx", "--report", cwd=factory_module).stdout
    assert "P2" in out and "1 FFTConv nodes" in out
    out = cli("validate", "my_models:conv", "m.onnx", cwd=factory_module).stdout
    assert "validation: PASSED" in out


def test_export_report_json(factory_module):
    out = cli("export", "my_models:conv", "m.onnx", "--report-json", cwd=factory_module).stdout
    report = json.loads(out)
    assert report["fftconv_nodes"] == 1 and report["rewrites"][0]["pattern"] == "P2"


def test_export_without_long_convolution_fails_clearly(factory_module):
    result = cli("export", "my_models:plain", "p.onnx", cwd=factory_module, check=False)
    assert result.returncode == 2
    assert "no long convolution found" in result.stderr


def test_bad_model_spec(factory_module):
    result = cli("export", "my_models", "p.onnx", cwd=factory_module, check=False)
    assert result.returncode != 0 and "package.module:factory" in result.stderr


def test_demo_quick(tmp_path):
    out = cli("demo", "--quick", "--out", str(tmp_path)).stdout
    assert "result: PASSED" in out and "FFTConv nodes" in out and "speed-up" in out
    assert (tmp_path / "hyena_demo.onnx").is_file()


def test_genome_example_small(tmp_path):
    """The genome example's path at a CPU-sized length: filters cut to 256 taps, validated
    against the unmodified model where the cut changes nothing (L <= 256), then one long row."""
    out = cli("demo", "--genome", "--genome-length", "20000", "--taps", "256", "--quick", "--out",
              str(tmp_path)).stdout
    assert "result: PASSED" in out and "cut filter: error" in out and "per sequence" in out
    assert (tmp_path / "hyena_dna_partial.onnx").is_file()


def test_plot_of_recorded_gpu_results(tmp_path):
    from pathlib import Path

    results = sorted((Path(__file__).resolve().parent.parent / "bench" / "results").glob("gpu-*.jsonl"))
    assert results, "no recorded GPU results under bench/results"
    out = tmp_path / "plot.png"
    cli("plot", str(results[-1]), str(out))
    assert out.stat().st_size > 10_000


@pytest.mark.parametrize("command", [["decompose", "{bad}", "{out}"], ["triton-repo", "{bad}", "{out}"],
                                     ["decompose", "{missing}", "{out}"]])
def test_unreadable_model_file_gives_a_message_not_a_traceback(tmp_path, capsys, command):
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(b"\x08\x07\x12\x05not onnx")
    args = [a.format(bad=bad, out=tmp_path / "out", missing=tmp_path / "missing.onnx") for a in command]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fftconv-rt {command[0]}: error:")
    assert "not a readable ONNX model" in err or "No such file" in err
