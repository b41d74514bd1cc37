"""The benchmarks' own code on the CPU: the GPU benchmark's cases, rows and peers run through the CPU
op (device="cpu"), the end-to-end benchmark's pieces, the CLI's refusals without a GPU, and plots."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fftconv_rt import bench
from fftconv_rt.cli import main as cli_main

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


@pytest.fixture
def no_gpu(monkeypatch):
    """A machine without a GPU, wherever the test runs."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("flag", ["--gpu", "--model", "--sparse", "--partial"])
def test_gpu_benchmarks_without_a_gpu_say_so_in_one_line(no_gpu, capsys, flag):
    assert cli_main(["bench", flag, "--lengths", "256"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("fftconv-rt bench: error: ") and "Traceback" not in err
    assert f"bench {flag} needs an NVIDIA GPU" in err and "sees none" in err


def test_module_entry_point_refuses_the_same_way(no_gpu, capsys):
    assert bench.main(["--gpu", "--circular"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "needs an NVIDIA GPU" in err


@pytest.mark.parametrize("argv, message", [(["--circular"], "--circular is a mode of --gpu"),
                                           (["--gpu", "--model"], "choose one of"),
                                           (["--gpu", "--peers", "cufft"], "unknown peer cufft")])
def test_contradictory_options_are_refused(capsys, argv, message):
    assert bench.main(argv) == 2
    assert message in capsys.readouterr().err


def test_case_shapes():
    # issue 21's circular cases: H = 768, B fills B*H*L up to 2^26
    assert bench._gpu_shape(1024, 1 << 26, 4, 768) == (85, 768)
    assert bench._gpu_shape(4096, 1 << 26, 4, 768) == (21, 768)
    # H capped by elements / L at the longest lengths
    assert bench._gpu_shape(1 << 21, 1 << 26, 4, 256) == (1, 32)
    # without channels: B = 4 and H fills (the committed causal runs)
    assert bench._gpu_shape(128, 1 << 26, 4, None) == (4, 131072)


def _read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_circular_rows_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.jsonl"
    rows = bench.run_gpu_bench(lengths=(256, 1024), dtypes=("float32", "bfloat16"), elements=1 << 14, repeats=2,
                               mode="circular", channels=8, device="cpu", out_path=str(out), log=lambda _: None)
    assert [(r["L"], r["dtype"]) for r in rows] == [(256, "float32"), (256, "bfloat16"), (1024, "float32"),
                                                    (1024, "bfloat16")]
    assert _read_jsonl(out) == json.loads(json.dumps(rows))
    for row in rows:
        assert row["mode"] == "circular" and row["fft_size"] == row["L"]
        assert row["H"] == 8 and row["B"] * row["H"] * row["L"] <= 1 << 14
        # a wrong period (the causal 2L) would be off by O(1) against the circular float64 reference
        assert row["rel_error"] < row["tolerance"]
        # from the unrounded times; copy_ms, a few microseconds here, is rounded to 0.1 us
        assert row["ours_over_copy"] == pytest.approx(row["fftconv_rt_ms"] / row["copy_ms"], rel=0.05)
        assert row["gpu"].startswith("cpu: ") and row["date"]
        for peer in bench.PEERS:  # absent peers: null and why
            assert row[f"{peer}_ms"] is None and row[f"{peer}_rel_error"] is None
            assert row[f"{peer}_failure"]
    assert "not importable" in rows[-1]["flashfftconv_failure"]
    assert "--thunderkittens" in rows[-1]["thunderkittens_failure"]
    assert "bfloat16 input only" in rows[0]["thunderkittens_failure"]


def test_causal_rows_channels_last_on_the_cpu():
    rows = bench.run_gpu_bench(lengths=(128,), dtypes=("float16",), elements=1 << 13, repeats=2, layout="BLH",
                               device="cpu", peers=(), log=lambda _: None)
    (row,) = rows
    assert row["mode"] == "causal" and row["fft_size"] == 256 and row["layout"] == "BLH"
    assert row["rel_error"] < row["tolerance"]
    assert not any(key.startswith(bench.PEERS) for key in row)


FAKE_FLASHFFTCONV = '''
import torch


class FlashFFTConv(torch.nn.Module):
    """A stand-in with FlashFFTConv's interface: the FFT size in the constructor, (u, k) per call."""

    def __init__(self, seqlen, dtype=torch.float16):
        super().__init__()
        if seqlen > {max_size}:
            raise NotImplementedError(f"seqlen {{seqlen}} not supported")
        self.seqlen = seqlen

    def forward(self, u, k):
        if {fail_calls}:
            raise RuntimeError("kernel launch failed\\nsecond line")
        n = self.seqlen
        y = torch.fft.irfft(torch.fft.rfft(u.float(), n=n) * torch.fft.rfft(k, n=n), n=n)[..., :u.shape[-1]]
        return y.to(u.dtype)
'''


def _fake_flashfftconv(tmp_path, monkeypatch, max_size=1 << 30, fail_calls=False):
    package = tmp_path / "fake_peers" / "flashfftconv"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_FLASHFFTCONV.format(max_size=max_size, fail_calls=fail_calls))
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.delitem(sys.modules, "flashfftconv", raising=False)


def test_peer_measured_beside_ours(tmp_path, monkeypatch):
    _fake_flashfftconv(tmp_path, monkeypatch, max_size=512)
    rows = bench.run_gpu_bench(lengths=(128, 512), dtypes=("float16", "float32"), elements=1 << 13, repeats=2,
                               device="cpu", peers=("flashfftconv",), log=lambda _: None)
    fp16_128, fp32_128, fp16_512, _ = rows
    assert fp16_128["flashfftconv_failure"] is None
    assert fp16_128["flashfftconv_rel_error"] < 1e-3  # its own convolution (no skip term) against float64
    assert fp16_128["flashfftconv_over_ours"] == pytest.approx(fp16_128["flashfftconv_ms"] / fp16_128["fftconv_rt_ms"],
                                                               rel=2e-3)
    # causal at L = 512 needs the FFT size 1024, which this one lacks
    assert fp16_512["flashfftconv_ms"] is None and "has no FFT size 1024" in fp16_512["flashfftconv_failure"]
    assert "float16/bfloat16" in fp32_128["flashfftconv_failure"]


def test_peer_failing_in_its_call_is_a_row_not_a_crash(tmp_path, monkeypatch):
    _fake_flashfftconv(tmp_path, monkeypatch, fail_calls=True)
    logged = []
    (row,) = bench.run_gpu_bench(lengths=(128,), dtypes=("float16",), elements=1 << 12, repeats=2, device="cpu",
                                 peers=("flashfftconv",), log=logged.append)
    assert row["flashfftconv_ms"] is None and row["flashfftconv_failure"] == "RuntimeError: kernel launch failed"
    assert row["fftconv_rt_ms"] > 0
    assert any("flashfftconv not measured: RuntimeError: kernel launch failed" in line for line in logged)


def _thunderkittens_folder(tmp_path, extension_source, with_module=True):
    folder = tmp_path / "ThunderKittens" / "kernels" / "fftconv"
    (folder / "baselines").mkdir(parents=True)
    (folder / "_C.py").write_text(extension_source)
    if with_module:
        (folder / "baselines" / "tk_fftconv.py").write_text(textwrap.dedent('''
            import torch
            from _C import fftconv


            class TKFFTConv(torch.nn.Module):
                def __init__(self, k, seqlen=1024, H=128, dtype=torch.bfloat16):
                    super().__init__()
                    assert dtype == torch.bfloat16
                    self.N = seqlen
                    self.k_f = torch.fft.fft(k.float(), n=seqlen)

                def forward(self, u, k):
                    return fftconv(u, self.k_f, self.N)
        '''))
    return folder


CIRCULAR_EXTENSION = '''
import torch


def fftconv(u, k_f, n):
    return torch.fft.ifft(torch.fft.fft(u.float(), n=n) * k_f, n=n).real.to(u.dtype)
'''


@pytest.fixture
def clean_imports(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "_C", raising=False)


def test_peer_with_a_wrong_result_is_not_timed(tmp_path, monkeypatch):
    _fake_flashfftconv(tmp_path, monkeypatch)
    source = (tmp_path / "fake_peers" / "flashfftconv" / "__init__.py")
    source.write_text(source.read_text().replace("return y.to(u.dtype)", "return (2 * y).to(u.dtype)"))
    (row,) = bench.run_gpu_bench(lengths=(128,), dtypes=("float16",), elements=1 << 12, repeats=2, device="cpu",
                                 peers=("flashfftconv",), log=lambda _: None)
    assert row["flashfftconv_ms"] is None and row["flashfftconv_rel_error"] > 0.5
    assert row["flashfftconv_failure"].startswith("wrong result: error 1.00e+00 against float64")


def test_peer_that_loses_the_cuda_context_ends_the_run_after_writing_its_row(tmp_path, monkeypatch):
    _fake_flashfftconv(tmp_path, monkeypatch, fail_calls=True)
    monkeypatch.setattr(bench, "_cuda_error", lambda dev: "AcceleratorError: an illegal memory access")
    out = tmp_path / "gpu.jsonl"
    with pytest.raises(RuntimeError, match="run the remaining lengths again"):
        bench.run_gpu_bench(lengths=(128, 256), dtypes=("float16", "bfloat16"), elements=1 << 12, repeats=1,
                            device="cpu", peers=("flashfftconv", "thunderkittens"), out_path=str(out),
                            log=lambda _: None)
    (row,) = _read_jsonl(out)  # the case where it happened, then nothing
    assert row["L"] == 128 and row["dtype"] == "float16" and row["fftconv_rt_ms"] > 0
    assert "left the CUDA context unusable (AcceleratorError: an illegal memory access)" in row["flashfftconv_failure"]
    assert row["thunderkittens_failure"].startswith("not run: flashfftconv failed at L=128")


def test_thunderkittens_from_a_checkout_path(tmp_path, clean_imports):
    folder = _thunderkittens_folder(tmp_path, CIRCULAR_EXTENSION)
    rows = bench.run_gpu_bench(lengths=(1024,), dtypes=("bfloat16", "float16"), elements=1 << 14, repeats=2,
                               mode="circular", channels=4, device="cpu", peers=("thunderkittens",),
                               thunderkittens=str(folder), log=lambda _: None)
    bf16, fp16 = rows
    assert sys.path[:2] == [str(folder.resolve()), str(folder.resolve() / "baselines")]
    assert bf16["thunderkittens_failure"] is None and bf16["thunderkittens_rel_error"] < 8e-3
    assert "bfloat16 input only" in fp16["thunderkittens_failure"]


def test_thunderkittens_path_from_the_environment(tmp_path, clean_imports, monkeypatch):
    monkeypatch.setenv(bench.THUNDERKITTENS_ENV, str(_thunderkittens_folder(tmp_path, CIRCULAR_EXTENSION)))
    (row,) = bench.run_gpu_bench(lengths=(4096,), dtypes=("bfloat16",), elements=1 << 14, repeats=1,
                                 mode="circular", channels=4, device="cpu", peers=("thunderkittens",),
                                 log=lambda _: None)
    assert row["thunderkittens_ms"] is not None


@pytest.mark.parametrize("extension, with_module, reason", [
    ("x = 1\n", True, "is not ThunderKittens' FFTConv extension"),
    ("raise ImportError('undefined symbol: _ZN3c10')\n", True, "_C is not importable"),
    (CIRCULAR_EXTENSION, False, "tk_fftconv.py does not exist"),
])
def test_thunderkittens_unusable_checkouts_give_reasons(tmp_path, clean_imports, extension, with_module, reason):
    folder = _thunderkittens_folder(tmp_path, extension, with_module)
    (row,) = bench.run_gpu_bench(lengths=(1024,), dtypes=("bfloat16",), elements=1 << 12, repeats=1,
                                 mode="circular", channels=4, device="cpu", peers=("thunderkittens",),
                                 thunderkittens=str(folder), log=lambda _: None)
    assert row["thunderkittens_ms"] is None and reason in row["thunderkittens_failure"]


def test_thunderkittens_cases_it_does_not_compute(tmp_path, clean_imports):
    folder = _thunderkittens_folder(tmp_path, CIRCULAR_EXTENSION)
    causal, circular_2k = (bench.run_gpu_bench(lengths=(L,), dtypes=("bfloat16",), elements=1 << 13, repeats=1,
                                               mode=mode, channels=2, device="cpu", peers=("thunderkittens",),
                                               thunderkittens=str(folder), log=lambda _: None)[0]
                           for mode, L in (("causal", 1024), ("circular", 2048)))
    assert "circular convolutions only" in causal["thunderkittens_failure"]
    assert "periods 1024 and 4096 only" in circular_2k["thunderkittens_failure"]


def test_variants_failing_are_recorded_and_the_others_timed():
    calls = []

    def broken_compile():
        raise RuntimeError("torch._dynamo hit a graph break it cannot handle\nlong trace")

    def flaky():
        raise MemoryError("out of memory")

    setups = {"torch_eager": lambda: ((lambda: calls.append("eager")), 100),
              "torch_compile": broken_compile,
              "ort_fftconv": lambda: (flaky, 50)}
    failed = []
    times_seen = iter(range(1, 100))
    callables, times, memory, failures = bench._measure_variants(
        setups, lambda fn: (fn(), next(times_seen))[1], rounds=3, after_failure=failed.append)
    assert times == {"torch_eager": 1}  # the fastest of its three rounds
    assert failures == {"torch_compile": "RuntimeError: torch._dynamo hit a graph break it cannot handle",
                        "ort_fftconv": "MemoryError: out of memory"}
    assert memory == {"torch_eager": 100, "ort_fftconv": 50}
    assert failed == ["torch_compile", "ort_fftconv"] and calls == ["eager"] * 3


def test_model_row_speedups_floor_and_line():
    meta = {"gpu": "test GPU", "model": "HyenaStack d=8 layers=1"}
    times = {"torch_eager": 4.0, "torch_compile": 2.0, "ort_fftconv": 1.0, "ort_fftconv_cuda_graph": 0.8}
    failures = {"torch_compile_cudagraph": "RuntimeError: capture failed"}
    floor = {"floor_gemm_ms": 0.3, "floor_fftconv_ms": 0.1, "floor_fftconv_nodes": 2, "floor_gemms": 4,
             "floor_ms": 0.4}
    row = bench._model_row(meta, 2048, times, {"torch_eager": 3 << 30, "ort_fftconv": 1 << 30},
                           {"ort_fftconv": 1e-3}, failures, floor,
                           {"ort_default_export_ms": None, "ort_default_export_failure": None})
    for v in bench.MODEL_VARIANTS:
        assert f"{v}_ms" in row and f"{v}_failure" in row and f"rel_error_{v}" in row
    assert row["torch_compile_cudagraph_ms"] is None and row["torch_compile_cudagraph_failure"]
    assert row["torch_eager_peak_bytes"] == 3 << 30 and row["ort_fftconv_device_bytes"] == 1 << 30
    assert row["fastest_torch_ms"] == 2.0
    assert row["speedup_over_torch"] == 4.0 and row["speedup_over_fastest_torch"] == 2.0
    assert row["speedup_cuda_graph_over_fastest_torch"] == 2.5
    assert row["ort_over_floor"] == 2.0  # the faster ORT variant over the floor
    line = bench._model_line(row)
    assert "fails" in line and "2.50x" in line and "3.00, -, -, 1.00, -" in line
    assert "floor = GEMMs 0.30 ms (4 alone) + FFTConv 0.10 ms (2 nodes alone)" in line
    unfloored = bench._model_row(meta, 2048, times, {}, {}, {}, {"floor_failure": "FFTConvError: no CUDA kernels"},
                                 {})
    assert unfloored["floor_ms"] is None and unfloored["ort_over_floor"] is None
    assert "floor not measured: FFTConvError: no CUDA kernels" in bench._model_line(unfloored)


def test_fftconv_nodes_read_from_an_export(tmp_path):
    from fftconv_rt.export import export
    from fftconv_rt.models import HyenaStack

    torch.manual_seed(0)
    model = HyenaStack(8, 1, 128).eval()
    path = tmp_path / "hyena.onnx"
    report = export(model, (torch.randn(1, 64, 8),), path, max_length=128)
    nodes = bench._fftconv_nodes(str(path), 8, 96)
    assert len(nodes) == report.fftconv_nodes >= 1
    for node in nodes:
        assert node["inputs"]["u"] and node["inputs"]["k"]
        assert node["layout"] in ("BHL", "BLH") and 1 <= node["taps"] <= 96
        assert node["channels"] in (8, 24)  # the long filter's d channels, the short filter's 3d
    assert any(node["channels"] == 8 and node["taps"] == 96 for node in nodes)  # the long one, cut to L


def test_plot_of_cpu_results(tmp_path, capsys):
    png = tmp_path / "cpu.png"
    assert cli_main(["plot", str(RESULTS / "cpu-2026-11-27.jsonl"), str(png)]) == 0
    assert png.stat().st_size > 10_000


def test_plot_of_gpu_rows_in_both_modes(tmp_path):
    rows = (bench.run_gpu_bench(lengths=(256, 1024), dtypes=("float16",), elements=1 << 12, repeats=1,
                                device="cpu", peers=(), log=lambda _: None)
            + bench.run_gpu_bench(lengths=(256, 1024), dtypes=("float16",), elements=1 << 12, repeats=1,
                                  mode="circular", channels=2, device="cpu", peers=(), log=lambda _: None))
    results = tmp_path / "gpu.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert bench.plot_results(str(results), str(tmp_path / "gpu.png")) == "2 panels (mode, I/O type)"
    assert (tmp_path / "gpu.png").stat().st_size > 10_000


def test_plot_of_model_results(tmp_path):
    newest = sorted(RESULTS.glob("model-*.jsonl"))[-1]
    assert bench.plot_results(str(newest), str(tmp_path / "model.png")) == "end-to-end results"


@pytest.mark.parametrize("content, message", [
    ('{"bench": "partial", "L": 1}\n', "holds rows of partial"),
    ('{"copy_ms": 1, "L": 1, "dtype": "float16", "gpu": "x"}\n{"impl": "a", "device": "cpu", "L": 1}\n',
     "holds rows of cpu, gpu"),
    ("not json\n", "line 1: not a JSON object"),
    ("\n", "has no rows"),
])
def test_plot_of_what_it_cannot_draw_says_so_in_one_line(tmp_path, capsys, content, message):
    results = tmp_path / "r.jsonl"
    results.write_text(content)
    assert cli_main(["plot", str(results), str(tmp_path / "r.png")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err
