"""The exporter: patterns P1/P2 become one FFTConv node each, everything else is left alone."""

from __future__ import annotations

import math

import onnx
import pytest
import torch

from fftconv_rt._lib import FFTConvError
from fftconv_rt.export import NoLongConvolutionError, export
from fftconv_rt.spec import tolerance


def _filter(H, L, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(H, L, generator=g) * torch.exp(-4 * torch.arange(L) / L) / math.sqrt(L)


class P1(torch.nn.Module):
    """safari/hyena-dna style: k_f scaled by 1/n, irfft norm='forward', fp32 compute, cast back."""

    def __init__(self, H=4, Lmax=512, d_shape="vector"):
        super().__init__()
        self.k = torch.nn.Parameter(_filter(H, Lmax))
        D = torch.randn(H)
        self.D = torch.nn.Parameter(D if d_shape == "vector" else D.view(1, H, 1))
        self.d_shape = d_shape

    def forward(self, u):
        seqlen = u.shape[-1]
        fft_size = 2 * seqlen
        k = self.k[:, :seqlen]
        k_f = torch.fft.rfft(k, n=fft_size) / fft_size
        u_f = torch.fft.rfft(u.to(dtype=k.dtype), n=fft_size)
        y = torch.fft.irfft(u_f * k_f, n=fft_size, norm="forward")[..., :seqlen]
        D = self.D.unsqueeze(-1) if self.d_shape == "vector" else self.D
        return (y + u * D).to(dtype=u.dtype)


class P1b(torch.nn.Module):
    """H3 style: the 1/n scale on the input spectrum instead of the filter, gelu epilogue."""

    def __init__(self, H=4, Lmax=512):
        super().__init__()
        self.k = torch.nn.Parameter(_filter(H, Lmax, 1))
        self.D = torch.nn.Parameter(torch.randn(H))

    def forward(self, u):
        L = u.shape[-1]
        n = 2 * L
        u_f = torch.fft.rfft(u, n=n) / n
        k_f = torch.fft.rfft(self.k[:, :L], n=n)
        y = torch.fft.irfft(u_f * k_f, n=n, norm="forward")[..., :L]
        return torch.nn.functional.gelu(y + u * self.D.unsqueeze(-1))


class P2(torch.nn.Module):
    """S4D style: default norms, no manual scale, the filter computed by the model (Vandermonde)."""

    def __init__(self, H=4, N=8):
        super().__init__()
        self.log_dt = torch.nn.Parameter(torch.rand(H) * -3)
        self.A_re = torch.nn.Parameter(-0.5 * torch.ones(H, N))
        self.A_im = torch.nn.Parameter(math.pi * torch.arange(N).float().repeat(H, 1))
        self.C = torch.nn.Parameter(torch.randn(H, N, 2) * 0.5)
        self.D = torch.nn.Parameter(torch.randn(H))

    def kernel(self, L):
        dt = torch.exp(self.log_dt)
        dtA_re = -torch.exp(self.A_re) * dt[:, None]
        dtA_im = self.A_im * dt[:, None]
        t = torch.arange(L, dtype=torch.float32)
        decay = torch.exp(dtA_re[..., None] * t)  # (H, N, L)
        C_re, C_im = self.C[..., 0], self.C[..., 1]
        osc_re, osc_im = torch.cos(dtA_im[..., None] * t), torch.sin(dtA_im[..., None] * t)
        return 2 * ((C_re[..., None] * osc_re - C_im[..., None] * osc_im) * decay).sum(1)  # (H, L)

    def forward(self, u):
        L = u.size(-1)
        k = self.kernel(L)
        k_f = torch.fft.rfft(k, n=2 * L)
        u_f = torch.fft.rfft(u, n=2 * L)
        y = torch.fft.irfft(u_f * k_f, n=2 * L)[..., :L]
        return y + u * self.D.unsqueeze(-1)


class P6(torch.nn.Module):
    """flash-fft-conv reference style: complex fft on both sides, ifft, causal slice, then .real."""

    def __init__(self, H=4, Lmax=512):
        super().__init__()
        self.k = torch.nn.Parameter(_filter(H, Lmax, 2))
        self.D = torch.nn.Parameter(torch.randn(H))

    def forward(self, u):
        seqlen = u.shape[-1]
        n = 2 * seqlen
        k_f = torch.fft.fft(self.k[:, :seqlen].float(), n=n) / n
        u_f = torch.fft.fft(u.float(), n=n)
        y = torch.fft.ifft(u_f * k_f, n=n, norm="forward")[..., :seqlen].real
        return y + u * self.D.unsqueeze(-1)


class P6RealFirst(P6):
    """`.real` before the slice, default norms, no skip term."""

    def forward(self, u):
        L = u.shape[-1]
        return torch.fft.ifft(torch.fft.fft(u, n=2 * L) * torch.fft.fft(self.k[:, :L], n=2 * L), n=2 * L).real[..., :L]


class NotAConvolution(torch.nn.Module):
    """A spectral feature (power spectrum), not a convolution: must be left alone."""

    def forward(self, u):
        return torch.fft.irfft(torch.fft.rfft(u).abs() ** 2, n=u.shape[-1])


class WrongScale(torch.nn.Module):
    """rfft/irfft(norm='forward') without the 1/n: scaled by n, not a convolution with k."""

    def __init__(self, H=4, Lmax=256):
        super().__init__()
        self.k = torch.nn.Parameter(_filter(H, Lmax))

    def forward(self, u):
        L = u.shape[-1]
        y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(self.k[:, :L], n=2 * L), n=2 * L,
                            norm="forward")
        return y[..., :L]


class Plain(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(16, 16)

    def forward(self, u):
        return self.lin(u)


def _check_ort(model, path, shapes, dtype=torch.float32):
    """The exported model in ONNX Runtime (with the op) against PyTorch eager, through
    Polygraphy's Comparator and the spec's metric, on every shape (one exported model)."""
    from fftconv_rt.validate import validate

    report = validate(model, str(path), [(torch.randn(*shape).to(dtype),) for shape in shapes])
    assert report.passed and report.polygraphy_passed, str(report)
    assert all(c.relative_error <= tolerance(str(dtype).replace("torch.", "")) for c in report.checks)


def _nodes(path):
    return onnx.load(str(path)).graph.node


@pytest.mark.parametrize("model,pattern,skip", [(P1(), "P1", True), (P1(d_shape="preshaped"), "P1", True),
                                                (P1b(), "P1", True), (P2(), "P2", True), (P6(), "P6", True),
                                                (P6RealFirst(), "P6", False)])
def test_pattern_becomes_one_node_and_matches_pytorch(tmp_path, model, pattern, skip):
    path = tmp_path / "m.onnx"
    report = export(model.eval(), (torch.randn(2, 4, 64),), path)
    assert [r.pattern for r in report.rewrites] == [pattern]
    assert report.rewrites[0].skip_term is skip
    assert report.left == []
    nodes = _nodes(path)
    assert sum(n.op_type == "FFTConv" for n in nodes) == 1
    assert not [n for n in nodes if n.op_type == "DFT"]
    # one exported model, two batch sizes and two sequence lengths
    _check_ort(model, path, [(2, 4, 64), (3, 4, 200)])


def test_float16_model_keeps_its_dtype(tmp_path):
    model = P1().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 64).half(),), path)
    assert len(report.rewrites) == 1
    graph = onnx.load(str(path)).graph
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    _check_ort(model, path, [(2, 4, 64), (2, 4, 300)], dtype=torch.float16)


def test_report_names_module_and_shapes(tmp_path):
    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mixer = P1()

        def forward(self, u):
            return self.mixer(u) * 2

    report = export(Wrapper().eval(), (torch.randn(2, 4, 64),), tmp_path / "m.onnx")
    r = report.rewrites[0]
    assert r.module == "mixer" and r.u_shape[1] == "4" and r.fft_size == 0
    text = str(report)
    assert "P1" in text and "mixer" in text and "1 FFTConv nodes" in text
    assert report.to_dict()["rewrites"][0]["pattern"] == "P1"


def test_fft_that_is_not_a_convolution_is_left_with_a_reason(tmp_path):
    class Mixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = P1()
            self.feature = NotAConvolution()

        def forward(self, u):
            return self.conv(u) + self.feature(u)

    model = Mixed().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 64),), path)
    assert len(report.rewrites) == 1
    assert len(report.left) == 2 and all(f.module == "feature" for f in report.left)
    assert all(f.reason.startswith("not a convolution:") for f in report.left)
    _check_ort(model, path, [(2, 4, 64), (2, 4, 90)])


def test_wrong_scale_is_not_rewritten(tmp_path):
    with pytest.raises(NoLongConvolutionError) as info:
        export(WrongScale().eval(), (torch.randn(2, 4, 64),), tmp_path / "m.onnx")
    assert "not 1/n" in str(info.value)
    report = export(WrongScale().eval(), (torch.randn(2, 4, 64),), tmp_path / "m.onnx", require_rewrite=False)
    assert report.rewrites == [] and any("not 1/n" in f.reason for f in report.left)


@pytest.mark.parametrize("model", [Plain(), NotAConvolution()])
def test_model_without_long_convolution_is_refused(tmp_path, model):
    with pytest.raises(NoLongConvolutionError, match="no long convolution found"):
        export(model.eval(), (torch.randn(2, 4, 16),), tmp_path / "m.onnx")


def test_static_shapes_export(tmp_path):
    model = P1().eval()
    path = tmp_path / "m.onnx"
    export(model, (torch.randn(2, 4, 64),), path, dynamic_shapes=(None,))
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 4, 64]
    _check_ort(model, path, [(2, 4, 64)])


def test_validate_through_polygraphy(tmp_path):
    from fftconv_rt.validate import validate

    model = P2().eval()
    path = tmp_path / "m.onnx"
    export(model, (torch.randn(2, 4, 64),), path)
    report = validate(model, str(path), [(torch.randn(2, 4, 64),), (torch.randn(1, 4, 333),)])
    assert report.passed and report.polygraphy_passed
    assert report.checks[0].relative_error <= tolerance("float32")


def test_validate_takes_a_float64_reference_of_a_float32_model(tmp_path):
    """The reference is the model's float64 copy (the spec's tolerances are against float64);
    the report gives PyTorch float32's own error, and the tolerance is at least twice that."""
    from fftconv_rt.validate import validate

    model = P2().eval()
    path = tmp_path / "m.onnx"
    export(model, (torch.randn(2, 4, 64),), path)
    report = validate(model, str(path), [(torch.randn(2, 4, 64),)])
    check = report.checks[0]
    assert report.passed and check.float32_error is not None and 0 < check.float32_error < tolerance("float32")
    assert check.tolerance == max(tolerance("float32"), 2 * check.float32_error)
    assert "PyTorch float32 itself" in str(report)
    assert next(model.parameters()).dtype == torch.float32  # the model itself is left as it was


class _MakesFloat32(P2):
    """Creates a float32 tensor of its own, which a float64 copy cannot mix with its weights."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mix", torch.eye(4, dtype=torch.float32), persistent=False)

    def forward(self, u):
        return torch.matmul(self.mix.to(torch.float32), super().forward(u))


def test_validate_falls_back_to_a_float32_reference(tmp_path):
    from fftconv_rt.validate import validate

    model = _MakesFloat32().eval()
    path = tmp_path / "m.onnx"
    export(model, (torch.randn(2, 4, 64),), path)
    report = validate(model, str(path), [(torch.randn(2, 4, 64),), (torch.randn(1, 4, 100),)])
    assert report.passed and report.checks[0].float32_error is None
    assert report.checks[0].relative_error <= tolerance("float32")


def test_validate_detects_a_wrong_model(tmp_path):
    from fftconv_rt.validate import validate

    model = P2().eval()
    path = tmp_path / "m.onnx"
    export(model, (torch.randn(2, 4, 64),), path)
    with torch.no_grad():
        model.D.add_(1.0)  # the PyTorch model no longer matches the exported one
    report = validate(model, str(path), [(torch.randn(2, 4, 64),)])
    assert not report.passed and not report.polygraphy_passed
    assert "FAIL" in str(report)


def test_package_level_export_is_callable_after_importing_the_subpackage(tmp_path):
    import fftconv_rt
    import fftconv_rt.export  # noqa: F401  (rebinds the attribute to the subpackage)

    report = fftconv_rt.export(P1().eval(), (torch.randn(2, 4, 32),), tmp_path / "m.onnx")
    assert len(report.rewrites) == 1


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        export(lambda u: u, (torch.randn(2, 4, 16),), tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="example_inputs must be a tuple"):
        export(P1().eval(), {"u": torch.randn(2, 4, 16)}, tmp_path / "m.onnx")
    # a single tensor is taken as the one positional input
    assert len(export(P1().eval(), torch.randn(2, 4, 16), tmp_path / "m.onnx").rewrites) == 1


class _Rank2(torch.nn.Module):
    """rfft convolution of (B, L) rows: no channel dimension."""

    def __init__(self):
        super().__init__()
        self.k = torch.nn.Parameter(torch.randn(64))

    def forward(self, u):
        L = u.shape[-1]
        return torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(self.k[:L], n=2 * L), n=2 * L)[..., :L]


class _HalfSizeFFT(torch.nn.Module):
    """n = L/2: shorter than the linear convolution needs, and not provably circular."""

    def __init__(self):
        super().__init__()
        self.k = torch.nn.Parameter(torch.randn(4, 64))

    def forward(self, u):
        n = u.shape[-1] // 2
        return torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(self.k, n=n), n=n)[..., :u.shape[-1]]


@pytest.mark.parametrize("model,example,error,message", [
    (_Rank2(), torch.randn(2, 64), NoLongConvolutionError, "this pattern needs (B, H, L) and (H, Lk)"),
    (_HalfSizeFFT(), torch.randn(2, 4, 64), NoLongConvolutionError, "cannot prove n = "),
    (P1(), torch.randint(0, 4, (2, 4, 64)), NoLongConvolutionError, "input dtype torch.int64 is not float32"),
    (P1().double(), torch.randn(2, 4, 64).double(), NoLongConvolutionError, "torch.float64 is not float32"),
    (P1(), torch.randn(2, 4, 0), ValueError, "every dimension must be at least 1"),
])
def test_bad_models_and_examples_are_refused_with_the_reason(tmp_path, model, example, error, message):
    """The exporter's rows of the bad-input table: wrong rank, an FFT too short for the
    convolution, unsupported dtypes, a zero-size example; the message names the reason."""
    with pytest.raises(error) as info:
        export(model.eval(), (example,), tmp_path / "m.onnx")
    assert message in str(info.value)


def test_non_finite_example_inputs_still_export(tmp_path):
    model = P1().eval()
    report = export(model, (torch.full((2, 4, 64), float("nan")),), tmp_path / "m.onnx")
    assert len(report.rewrites) == 1
    _check_ort(model, tmp_path / "m.onnx", [(2, 4, 64)])


def test_report_names_dynamic_sizes_after_the_inputs(tmp_path):
    report = export(P1().eval(), (torch.randn(2, 4, 64),), tmp_path / "m.onnx")
    r = report.rewrites[0]
    assert r.u_shape == ["u.shape[0]", "4", "u.shape[2]"] and r.n == "2*u.shape[2]"
    assert "u(u.shape[0], 4, u.shape[2])" in str(report)


class P13(torch.nn.Module):
    """StripedHyena-style long FIR: depthwise conv1d, padding K-1, causal slice, bias; followed by
    a short 3-tap depthwise conv (Hyena's FIR)."""

    def __init__(self, H=4, taps=100):
        super().__init__()
        self.h = torch.nn.Parameter(_filter(H, taps, 3))
        self.bias = torch.nn.Parameter(torch.randn(H))
        self.short = torch.nn.Conv1d(H, H, 3, padding=2, groups=H)

    def forward(self, x):
        L = x.shape[-1]
        taps = self.h.shape[-1]
        y = torch.nn.functional.conv1d(x, self.h[:, None, :], self.bias, groups=self.h.shape[0],
                                       padding=taps - 1)[..., :L]
        return self.short(y)[..., :L]


def test_causal_depthwise_conv1d_long_and_short_become_fftconv(tmp_path):
    model = P13().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 128),), path)
    assert [r.pattern for r in report.rewrites] == ["P13", "P13"]  # 100 taps and the 3-tap FIR
    ops = [n.op_type for n in _nodes(path)]
    assert ops.count("FFTConv") == 2 and "Conv" not in ops
    _check_ort(model, path, [(2, 4, 128), (3, 4, 50), (1, 4, 300)])


def test_conv_threshold_is_the_users(tmp_path):
    with pytest.raises(NoLongConvolutionError):
        export(P13().eval(), (torch.randn(2, 4, 128),), tmp_path / "m.onnx", min_conv_taps=101)
    model = P13().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 128),), path, min_conv_taps=64)
    assert [r.pattern for r in report.rewrites] == ["P13"]
    ops = [n.op_type for n in _nodes(path)]
    assert ops.count("FFTConv") == 1 and ops.count("Conv") == 1  # the 3-tap FIR stays a Conv
    _check_ort(model, path, [(2, 4, 128), (1, 4, 77)])


class P3(torch.nn.Module):
    """s4 FFTConv style: fft size l_kernel + L with a filter shorter than the input."""

    def __init__(self, H=4, l_kernel=40):
        super().__init__()
        self.k = torch.nn.Parameter(_filter(H, l_kernel, 4))
        self.D = torch.nn.Parameter(torch.randn(H))

    def forward(self, u):
        L = u.size(-1)
        l_kernel = self.k.shape[-1]
        k_f = torch.fft.rfft(self.k, n=l_kernel + L)
        u_f = torch.fft.rfft(u, n=l_kernel + L)
        y = torch.fft.irfft(u_f * k_f, n=l_kernel + L)[..., :L]
        return y + u * self.D.unsqueeze(-1)


def test_symbolic_fft_size_with_a_shorter_filter(tmp_path):
    model = P3().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 64),), path)
    r = report.rewrites[0]
    assert r.fft_size == 0 and r.k_shape == ["4", "40"]  # provably linear for every length: automatic size
    _check_ort(model, path, [(2, 4, 64), (1, 4, 500), (3, 4, 41)])


class P5(torch.nn.Module):
    """StripedHyena parallel_iir style: full fft of the gated input sliced to the half spectrum,
    times an rfft filter, irfft; skip term and post-gate around it."""

    def __init__(self, H=4, Lmax=512):
        super().__init__()
        self.h = torch.nn.Parameter(_filter(H, Lmax, 5))
        self.D = torch.nn.Parameter(torch.randn(H))

    def forward(self, u):
        L = u.shape[-1]
        x1v, x2 = u * torch.sigmoid(u), torch.tanh(u)
        Hf = torch.fft.rfft(self.h[:, :L].float(), n=2 * L) / (2 * L)
        X = torch.fft.fft(x1v.float(), n=2 * L)[..., :Hf.shape[-1]]
        y = torch.fft.irfft(X * Hf, n=2 * L, norm="forward")[..., :L]
        return (y + x1v * self.D.unsqueeze(-1)) * x2


def test_half_spectrum_of_a_full_fft(tmp_path):
    model = P5().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 64),), path)
    assert [r.pattern for r in report.rewrites] == ["P5"] and report.rewrites[0].skip_term
    assert report.left == []
    _check_ort(model, path, [(2, 4, 64), (1, 4, 300)])


class P4(torch.nn.Module):
    """safari/s4 multi-head style: einsum('bhl,chl->bchl') of the spectra, einsum skip term,
    heads flattened into channels afterwards."""

    def __init__(self, C=2, H=4, Lmax=256):
        super().__init__()
        self.k = torch.nn.Parameter(torch.stack([_filter(H, Lmax, 6 + c) for c in range(C)]))
        self.D = torch.nn.Parameter(torch.randn(C, H))

    def forward(self, u):
        L = u.shape[-1]
        n = 2 * L
        k_f = torch.fft.rfft(self.k[..., :L], n=n)
        u_f = torch.fft.rfft(u, n=n)
        y = torch.fft.irfft(torch.einsum("bhl,chl->bchl", u_f, k_f), n=n)[..., :L]
        y = y + torch.einsum("bhl,ch->bchl", u, self.D)
        return y.reshape(y.shape[0], -1, L)


def test_multi_head_einsum(tmp_path):
    model = P4().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 64),), path)
    assert [r.pattern for r in report.rewrites] == ["P4"] and report.rewrites[0].skip_term
    assert report.left == []
    _check_ort(model, path, [(2, 4, 64), (3, 4, 200)])


def test_gates_next_to_the_convolution_are_folded_into_the_node(tmp_path):
    model = P5().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 64),), path)
    assert report.rewrites[0].gates == "pregate+postgate"
    node = next(n for n in _nodes(path) if n.op_type == "FFTConv")
    assert len(node.input) == 5 and all(node.input)  # u, k, D, pregate, postgate all present
    assert not [n for n in _nodes(path) if n.op_type == "Mul" and node.output[0] in n.input]
    _check_ort(model, path, [(2, 4, 64), (1, 4, 300)])


class P7(torch.nn.Module):
    """s4 bidirectional style: a two-sided filter built by flip + pad into length 2L, n = 2L: a
    circular convolution whose lag semantics must be kept exactly."""

    def __init__(self, H=4, Lmax=256):
        super().__init__()
        self.k0 = torch.nn.Parameter(_filter(H, Lmax, 7))
        self.k1 = torch.nn.Parameter(_filter(H, Lmax, 8))
        self.D = torch.nn.Parameter(torch.randn(H))

    def forward(self, u):
        L = u.shape[-1]
        k = torch.nn.functional.pad(self.k0[:, :L], (0, L)) + \
            torch.nn.functional.pad(self.k1[:, :L].flip(-1), (L, 0))
        y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L]
        return y + u * self.D.unsqueeze(-1)


def test_two_sided_filter_keeps_its_circular_semantics_with_static_shapes(tmp_path):
    model = P7().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 64),), path, dynamic_shapes=(None,))
    assert report.rewrites[0].fft_size == 128  # circular of period n = 2L, exactly as the model
    _check_ort(model, path, [(2, 4, 64)])


def test_two_sided_filter_at_dynamic_length_becomes_a_period_tied_to_the_length(tmp_path):
    """n = 2L with a filter of 2L taps: one node of period_scale 2, right at every length."""
    model = P7().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 64),), path)
    assert report.rewrites[0].period_scale == 2
    _check_ort(model, path, [(2, 4, 64), (3, 4, 40), (1, 4, 200)])


def test_conjugate_two_sided_filter_at_dynamic_length_becomes_k_rev(tmp_path):
    model = P8().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 64),), path)
    assert report.rewrites[0].two_sided and report.rewrites[0].fft_size == 0
    _check_ort(model, path, [(2, 4, 64), (3, 4, 40), (1, 4, 200)])


class FFTsThatAreNotLongConvolutions(torch.nn.Module):
    """Section D: a 2-D spectral filter and a convolution along the channel axis beside one real
    long convolution; only the latter is rewritten."""

    def __init__(self):
        super().__init__()
        self.conv = P1()
        self.spectral = torch.nn.Parameter(torch.randn(4, 33))

    def forward(self, u):
        L = u.shape[-1]
        image = torch.fft.irfft2(torch.fft.rfft2(u) * 0.5, s=u.shape[-2:])  # 2-D filtering
        across = torch.fft.irfft(torch.fft.rfft(u, n=8, dim=1) * torch.fft.rfft(u, n=8, dim=1), n=8, dim=1)[:, :4]
        return self.conv(u) + image + across[..., :L]


def test_ffts_that_are_not_long_convolutions_are_left(tmp_path):
    model = FFTsThatAreNotLongConvolutions().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 64),), path)
    assert [r.module for r in report.rewrites] == ["conv"]
    left_ops = sorted(f.op for f in report.left)
    assert left_ops == sorted(["fft_rfft2.default", "fft_irfft2.default", "fft_rfft.default", "fft_rfft.default",
                               "fft_irfft.default"])
    _check_ort(model, path, [(2, 4, 64)])


class ChannelsLast(torch.nn.Module):
    """A model that keeps (B, L, H) and transposes around its long convolution."""

    def __init__(self):
        super().__init__()
        self.conv = P1()
        self.proj = torch.nn.Linear(4, 4)

    def forward(self, x):  # (B, L, H)
        return self.proj(self.conv(self.proj(x).transpose(1, 2)).transpose(1, 2))


def test_transposes_of_a_channels_last_model_become_layout_blh(tmp_path):
    model = ChannelsLast().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 64, 4),), path)
    assert report.rewrites[0].layout == "BLH"
    nodes = _nodes(path)
    node = next(n for n in nodes if n.op_type == "FFTConv")
    assert any(a.name == "layout" and a.s == b"BLH" for a in node.attribute)
    assert not [n for n in nodes if n.op_type == "Transpose"]
    _check_ort(model, path, [(2, 64, 4), (3, 150, 4)])


class S4DComplex(torch.nn.Module):
    """S4D with its Vandermonde kernel in complex arithmetic (a section D filter generator),
    computed for Lmax from the parameters alone and cut to the input's length."""

    def __init__(self, H=4, N=8, Lmax=256):
        super().__init__()
        self.Lmax = Lmax
        self.log_dt = torch.nn.Parameter(torch.rand(H) * -3)
        self.A_re = torch.nn.Parameter(-0.5 * torch.ones(H, N))
        self.A_im = torch.nn.Parameter(math.pi * torch.arange(N).float().repeat(H, 1))
        self.C = torch.nn.Parameter(torch.randn(H, N, 2) * 0.5)
        self.D = torch.nn.Parameter(torch.randn(H))

    def kernel(self):
        dt = torch.exp(self.log_dt)
        A = torch.complex(-torch.exp(self.A_re), self.A_im)
        dtA = A * dt[:, None]
        C = torch.view_as_complex(self.C) * (torch.exp(dtA) - 1.0) / A
        vandermonde = torch.exp(dtA.unsqueeze(-1) * torch.arange(self.Lmax))  # (H, N, Lmax)
        return 2 * torch.einsum("hn,hnl->hl", C, vandermonde).real

    def forward(self, u):
        L = u.shape[-1]
        k = self.kernel()[:, :L]
        y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L]
        return y + u * self.D.unsqueeze(-1)


def _filter_input(path):
    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.op_type == "FFTConv")
    producers = {o: n for n in model.graph.node for o in n.output}
    initializers = {i.name for i in model.graph.initializer}
    return node.input[1], producers, initializers


def test_complex_filter_generator_is_folded_to_a_constant(tmp_path):
    """The Vandermonde product runs once at export: the ONNX model holds its value, no complex
    op; with a dynamic length its cut to L is dropped too (taps past L reach no output of the
    linear causal op), so the node's filter is an initializer at every length."""
    model = S4DComplex().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 64),), path)
    assert report.rewrites[0].filter.startswith("constant (its cut to L dropped")
    k_name, producers, initializers = _filter_input(path)
    assert k_name in initializers and not any(n.op_type == "Slice" for n in _nodes(path))
    _check_ort(model, path, [(2, 4, 64), (3, 4, 200), (1, 4, 300)])

    static = tmp_path / "static.onnx"
    report = export(model, (torch.randn(2, 4, 64),), static, dynamic_shapes=(None,))
    assert report.rewrites[0].filter == "constant"
    k_name, _, initializers = _filter_input(static)
    assert k_name in initializers  # the runtime prepares its spectrum once
    _check_ort(model, static, [(2, 4, 64)])


class MLPFilter(torch.nn.Module):
    """A Hyena-style implicit filter (MLP with sine activations over positions, decay window)
    evaluated at a fixed length and cut to the input's."""

    def __init__(self, H=4, Lmax=256):
        super().__init__()
        self.register_buffer("t", torch.linspace(0, 1, Lmax)[:, None])
        self.mlp = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Linear(16, H))
        self.decay = torch.nn.Parameter(torch.linspace(2, 8, H))

    def forward(self, u):
        L = u.shape[-1]
        h = torch.sin(self.mlp(self.t)) * torch.exp(-self.t * self.decay)  # (Lmax, H)
        k = h.transpose(0, 1)[:, :L]
        return torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L]


def test_user_can_keep_the_filter_ops_in_the_graph(tmp_path):
    model = MLPFilter().eval()
    kept, folded = tmp_path / "kept.onnx", tmp_path / "folded.onnx"
    report = export(model, (torch.randn(2, 4, 64),), kept, fold_filters=False)
    assert report.rewrites[0].filter == "computed in the graph"
    assert any(n.op_type == "Sin" for n in _nodes(kept))
    _check_ort(model, kept, [(2, 4, 64), (3, 4, 100)])
    export(model, (torch.randn(2, 4, 64),), folded)
    assert not any(n.op_type == "Sin" for n in _nodes(folded))
    _check_ort(model, folded, [(2, 4, 64), (3, 4, 100)])


class PositionalMLPFilter(torch.nn.Module):
    """Hyena's filter as the public code writes it: a positional embedding stored for Lmax
    positions, cut to L, then the MLP and the decay window (so the filter at L is the first L
    taps of the one at Lmax). With `per_length`, positions are t / L instead: not a prefix."""

    def __init__(self, H=4, Lmax=512, per_length=False):
        super().__init__()
        self.per_length = per_length
        self.register_buffer("t", torch.linspace(0, 1, Lmax)[:, None])
        self.mlp = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Linear(16, H))
        self.decay = torch.nn.Parameter(torch.linspace(2, 8, H))

    def forward(self, u):
        L = u.shape[-1]
        t = torch.arange(L, dtype=torch.float32)[:, None] / L if self.per_length else self.t[:L]
        k = (torch.sin(self.mlp(t)) * torch.exp(-t * self.decay)).transpose(0, 1)
        return torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L]


def test_max_length_stores_a_filter_that_depends_on_the_length_as_a_prefix(tmp_path):
    model = PositionalMLPFilter().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 64),), path)
    assert report.rewrites[0].filter == "depends on the input or its length"
    assert any(n.op_type == "Sin" for n in _nodes(path))
    report = export(model, (torch.randn(2, 4, 64),), path, max_length=512)
    # the positions stop at 512 rows, so the filter at any longer length is the one at 512: no limit
    assert report.rewrites[0].filter == "folded whole (512 taps: the same filter at every longer length)"
    assert report.rewrites[0].max_length == 0
    k_name, _, initializers = _filter_input(path)
    assert k_name in initializers and not any(n.op_type in ("Sin", "Slice", "MatMul") for n in _nodes(path))
    _check_ort(model, path, [(2, 4, 64), (3, 4, 200), (1, 4, 512), (1, 4, 5), (2, 4, 700)])


def test_max_length_leaves_a_filter_that_is_not_a_prefix_in_the_graph(tmp_path):
    """Positions t / L give another filter at every L: storing one would change the model."""
    model = PositionalMLPFilter(per_length=True).eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 64),), path, max_length=512)
    assert report.rewrites[0].filter == "depends on the input or its length"
    assert any(n.op_type == "Sin" for n in _nodes(path))
    _check_ort(model, path, [(2, 4, 64), (3, 4, 200)])


def test_max_length_below_the_example_length_is_refused(tmp_path):
    with pytest.raises(ValueError, match="max_length = 32 is shorter than the example inputs' sequence length 64"):
        export(PositionalMLPFilter().eval(), (torch.randn(2, 4, 64),), tmp_path / "m.onnx", max_length=32)


class _SparsePositionalMLPFilter(PositionalMLPFilter):
    """PositionalMLPFilter with its filter spectrum zeroed from bin `keep` on (what freq_keep does)."""

    def __init__(self, keep):
        super().__init__()
        self.keep = keep

    def forward(self, u):
        L = u.shape[-1]
        t = self.t[:L]
        k = (torch.sin(self.mlp(t)) * torch.exp(-t * self.decay)).transpose(0, 1)
        k_f = torch.fft.rfft(k, n=2 * L)
        k_f[..., self.keep:] = 0
        return torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * k_f, n=2 * L)[..., :L]


def test_max_length_keeps_the_cut_of_a_frequency_sparse_filter(tmp_path):
    """A frequency-sparse op's filter must fit its period 2L, so its cut to L stays in the graph:
    the exported model equals the PyTorch model that zeroes the filter's bins itself, at lengths
    below and above the example's."""
    model = PositionalMLPFilter().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 64),), path, max_length=512, freq_keep=16)
    assert report.rewrites[0].filter == "depends on the input or its length"
    assert report.rewrites[0].freq_keep == 16 and report.rewrites[0].sparse_error > 1e-3
    sparse = _SparsePositionalMLPFilter(16).eval()
    sparse.load_state_dict(model.state_dict())
    _check_ort(sparse, path, [(2, 4, 64), (3, 4, 32), (1, 4, 256)])


def test_max_length_that_is_not_a_length_is_refused(tmp_path):
    with pytest.raises(ValueError, match="max_length must be a sequence length >= 1, got 0"):
        export(PositionalMLPFilter().eval(), (torch.randn(2, 4, 64),), tmp_path / "m.onnx", max_length=0)


# ---- section B: two-sided, padded, offset and shifted forms (each with its own lag semantics) ----

class P8(torch.nn.Module):
    """safari/H3 `k_rev=`: the two-sided filter through the conjugate spectrum; k_rev[j] acts at
    lag -j, so lag 0 gets k[0] + k_rev[0]."""

    def __init__(self, H=4, Lmax=256):
        super().__init__()
        self.k = torch.nn.Parameter(_filter(H, Lmax, 11))
        self.k_rev = torch.nn.Parameter(_filter(H, Lmax, 12))
        self.D = torch.nn.Parameter(torch.randn(H))

    def forward(self, u):
        L = u.shape[-1]
        n = 2 * L
        k_f = torch.fft.rfft(self.k[:, :L], n=n) / n + (torch.fft.rfft(self.k_rev[:, :L], n=n) / n).conj()
        y = torch.fft.irfft(torch.fft.rfft(u, n=n) * k_f, n=n, norm="forward")[..., :L]
        return y + u * self.D.unsqueeze(-1)


class P9(torch.nn.Module):
    """hyena-dna `bidirectional=True`: the input zero-padded by L/2 on each side, causal filter,
    n = 2L: tap j acts at lag (j + L/2) mod 2L."""

    def __init__(self, H=4, Lmax=256):
        super().__init__()
        self.k = torch.nn.Parameter(_filter(H, Lmax, 13))

    def forward(self, u):
        L = u.shape[-1]
        padded = torch.nn.functional.pad(u, (L // 2, L // 2))
        return torch.fft.irfft(torch.fft.rfft(padded, n=2 * L) * torch.fft.rfft(self.k[:, :L], n=2 * L),
                               n=2 * L)[..., :L]


class P10(torch.nn.Module):
    """safari `LongConv`: the filter is as long as the FFT (2L), its tail acts at negative lags."""

    def __init__(self, H=4, L=64):
        super().__init__()
        self.k = torch.nn.Parameter(_filter(H, 2 * L, 14))

    def forward(self, u):
        n = 2 * u.shape[-1]
        return torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(self.k, n=n), n=n)[..., :u.shape[-1]]


class P11(torch.nn.Module):
    """Mega's bidirectional EMA: a two-sided filter of 2L - 1 taps, the input padded by L - 1 in
    front, n = 2(2L - 1), output [..., 2L - 2 : 3L - 2], plus u * omega, then channels-last."""

    def __init__(self, H=4, L=64):
        super().__init__()
        self.k1 = torch.nn.Parameter(_filter(H, L, 15))
        self.k2 = torch.nn.Parameter(_filter(H, L, 16))
        self.omega = torch.nn.Parameter(torch.randn(H))

    def forward(self, u):
        L = u.shape[-1]
        k = torch.nn.functional.pad(self.k1, (L - 1, 0)) + torch.nn.functional.pad(self.k2.flip(-1), (0, L - 1))
        n, s = 2 * (2 * L - 1), 2 * L - 2
        y = torch.fft.irfft(torch.fft.rfft(torch.nn.functional.pad(u, (L - 1, 0)), n=n) * torch.fft.rfft(k, n=n),
                            n=n)[..., s:s + L]
        return (y + u * self.omega[None, :, None]).transpose(-1, -2)


class P12(torch.nn.Module):
    """Legacy S4 `shift=True`: filter and input reversed and padded by L in front, n = 2L,
    output [..., L:] reversed: the causal convolution delayed by one step."""

    def __init__(self, H=4, Lmax=256):
        super().__init__()
        self.k = torch.nn.Parameter(_filter(H, Lmax, 17))

    def forward(self, u):
        L = u.shape[-1]
        k_f = torch.fft.rfft(torch.nn.functional.pad(self.k[:, :L].flip(-1), (L, 0)), n=2 * L)
        u_f = torch.fft.rfft(torch.nn.functional.pad(u.flip(-1), (L, 0)), n=2 * L)
        return torch.fft.irfft(u_f * k_f, n=2 * L)[..., L:].flip(-1)


@pytest.mark.parametrize("model,pattern,fft_size", [(P8(), "P8", 0), (P9(), "P9/P11", 128), (P10(), "P2", 128),
                                                     (P11(), "P9/P11", 254)])
def test_circular_forms_keep_their_lags_with_static_shapes(tmp_path, model, pattern, fft_size):
    """One circular FFTConv of the model's period; the filter (padded, rolled by the input's
    padding minus the output offset, plus the reversed part at negative lags) is folded."""
    model = model.eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 64),), path, dynamic_shapes=(None,))
    assert [(r.pattern, r.fft_size, r.filter) for r in report.rewrites] == [(pattern, fft_size, "constant")]
    assert report.left == []
    _check_ort(model, path, [(2, 4, 64)])


@pytest.mark.parametrize("model", [P9()])
def test_circular_forms_with_dynamic_length_are_left_with_the_reason(tmp_path, model):
    with pytest.raises(NoLongConvolutionError, match="needs static sizes"):
        export(model.eval(), (torch.randn(2, 4, 64),), tmp_path / "m.onnx")


def test_shift_convolution_becomes_a_delayed_causal_filter(tmp_path):
    """P12 is exact for any length: the filter gains one leading zero tap (linear, fft_size 0)."""
    model = P12().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 64),), path)
    assert [(r.pattern, r.fft_size) for r in report.rewrites] == [("P12", 0)]
    _check_ort(model, path, [(2, 4, 64), (3, 4, 200)])


class SectionDNegatives(torch.nn.Module):
    """Section D FFT uses beside one real long convolution whose filter an FFT generates:
    a dense cross-correlation over input channels (ckconv: conjugate spectrum, summed over
    channels), frequency-domain smoothing of the input, and an S4-DPLR-style kernel made by an
    inverse FFT of a spectrum (no product of two transforms)."""

    def __init__(self, H=4):
        super().__init__()
        self.dense = torch.nn.Parameter(torch.randn(H, H, 16) * 0.1)
        self.spectrum = torch.nn.Parameter(torch.randn(H, 129, 2) * 0.1)
        self.D = torch.nn.Parameter(torch.randn(H))

    def forward(self, u):
        L = u.shape[-1]
        n = 2 * L
        # in real arithmetic (torch.onnx exports few complex ops): u_f * conj(k_f), summed over inputs
        uf = torch.view_as_real(torch.fft.rfft(u, n=n)).unsqueeze(1)  # (B, 1, I, F, 2)
        kf = torch.view_as_real(torch.fft.rfft(self.dense, n=n))  # (O, I, F, 2)
        re = (uf[..., 0] * kf[..., 0] + uf[..., 1] * kf[..., 1]).sum(2)
        im = (uf[..., 1] * kf[..., 0] - uf[..., 0] * kf[..., 1]).sum(2)
        cross = torch.fft.irfft(torch.view_as_complex(torch.stack([re, im], -1)), n=n)[..., :L]
        sf = torch.view_as_real(torch.fft.rfft(u))
        smoothed = (sf + torch.roll(sf, 1, -2) + torch.roll(sf, -1, -2)) / 3  # along frequency
        smooth = torch.fft.irfft(torch.view_as_complex(smoothed), n=L)
        k = torch.fft.irfft(torch.view_as_complex(self.spectrum), n=n)[..., :L]  # the generated filter
        conv = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :L]
        return conv + u * self.D.unsqueeze(-1) + cross + smooth


def test_section_d_ffts_are_left_with_their_reasons(tmp_path):
    model = SectionDNegatives().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 128),), path, dynamic_shapes=(None,))
    assert [(r.pattern, r.skip_term) for r in report.rewrites] == [("P2", True)]
    assert report.rewrites[0].filter == "constant"  # the generator's inverse FFT ran once, at export
    left = sorted(f.op for f in report.left)
    assert left == sorted(["fft_rfft.default"] * 3 + ["fft_irfft.default"] * 2), left
    assert all(f.reason.startswith("not a convolution:") for f in report.left)
    _check_ort(model, path, [(2, 4, 128)])


class P1Sparse(P1):
    """P1 with FlashFFTConv's frequency-sparse filter: k_f zeroed from bin `keep` on."""

    def __init__(self, keep):
        super().__init__()
        self.keep = keep

    def forward(self, u):
        seqlen = u.shape[-1]
        fft_size = 2 * seqlen
        k_f = torch.fft.rfft(self.k[:, :seqlen], n=fft_size) / fft_size
        k_f[..., self.keep:] = 0
        y = torch.fft.irfft(torch.fft.rfft(u, n=fft_size) * k_f, n=fft_size, norm="forward")[..., :seqlen]
        return y + u * self.D.unsqueeze(-1)


def test_frequency_sparse_export_matches_the_sparse_model(tmp_path):
    """freq_keep=8 bins on a dynamic-length export: the ONNX model (FFTConv with freq_keep) equals
    the PyTorch model that zeroes k_f itself, at two power-of-two lengths; the report gives the
    change against the dense model."""
    model = P1().eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 4, 64),), path, freq_keep=8)
    node = next(n for n in _nodes(path) if n.op_type == "FFTConv")
    assert onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == "freq_keep")) == 8
    assert report.rewrites[0].freq_keep == 8 and report.rewrites[0].sparse_error > 1e-3
    assert "freq_keep=8: error" in str(report)
    sparse = P1Sparse(8).eval()
    sparse.load_state_dict(model.state_dict())
    _check_ort(sparse, path, [(2, 4, 64), (3, 4, 128)])


def test_frequency_sparse_fraction_needs_static_lengths(tmp_path):
    model = P1().eval()
    with pytest.raises(ValueError, match="needs a static sequence length"):
        export(model, (torch.randn(2, 4, 64),), tmp_path / "m.onnx", freq_keep=0.25)
    report = export(model, (torch.randn(2, 4, 64),), tmp_path / "m.onnx", freq_keep=0.25, dynamic_shapes=({},))
    assert report.rewrites[0].freq_keep == 16  # a quarter of the 65 bins of n = 128
    sparse = P1Sparse(16).eval()
    sparse.load_state_dict(model.state_dict())
    _check_ort(sparse, tmp_path / "m.onnx", [(2, 4, 64)])


def test_frequency_sparse_export_refuses_a_period_that_is_not_a_power_of_two(tmp_path):
    with pytest.raises(FFTConvError, match="power-of-two period"):
        export(P1().eval(), (torch.randn(2, 4, 48),), tmp_path / "m.onnx", freq_keep=8)


def test_partial_filters_are_cut_and_their_error_reported(tmp_path):
    """partial=N cuts every filter to N taps: the exported model equals the PyTorch model with
    the cut filter, and the report gives the change it makes on the example input."""
    model = P1(Lmax=512).eval()
    x = torch.randn(2, 4, 400)  # not 512: k[:, :L] at L = 512 would make torch.export fix the length
    path = tmp_path / "m.onnx"
    report = export(model, (x,), path, partial=32)
    [rewrite] = report.rewrites
    cut = P1(Lmax=512).eval()
    cut.load_state_dict(model.state_dict())
    with torch.no_grad():
        cut.k[:, 32:] = 0
        y, y_cut = model(x).double(), cut(x).double()
    assert rewrite.partial_error == pytest.approx(float((y_cut - y).abs().max() / y.abs().max()), rel=1e-3)
    assert 0 < rewrite.partial_error < 1
    assert "cut filter: error" in str(report)
    _check_ort(cut, path, [(2, 4, 400), (3, 4, 1000)])
    with pytest.raises(ValueError, match="partial must be >= 1"):
        export(model, (x,), tmp_path / "bad.onnx", partial=0)


class ProjectThenSplit(torch.nn.Module):
    """Hyena's operator front: one projection to all streams, the short depthwise filter over all
    of them, then the channels split into gate, gate and value (by chunk, split or sizes)."""

    def __init__(self, d=8, how="chunk", share_projection=False):
        super().__init__()
        self.d, self.how, self.share_projection = d, how, share_projection
        self.in_proj = torch.nn.Linear(d, 3 * d)
        self.short = torch.nn.Conv1d(3 * d, 3 * d, 3, padding=2, groups=3 * d)
        self.k = torch.nn.Parameter(torch.randn(d, 64) / 8)

    def forward(self, x):  # (B, L, d)
        L = x.shape[1]
        p = self.in_proj(x)
        z = self.short(p.transpose(1, 2))[..., :L]
        if self.how == "chunk":
            x1, x2, v = z.chunk(3, dim=1)
        elif self.how == "split":
            x1, x2, v = z.split(self.d, dim=1)
        else:
            x1, x2, v = z.split([self.d, self.d, self.d], dim=1)
        u = x1 * v
        k = self.k[:, :L]
        y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(k, n=2 * L), n=2 * L)[..., :L] * x2
        y = y.transpose(1, 2)
        return y + p[..., : self.d] if self.share_projection else y


@pytest.mark.parametrize("how", ["chunk", "split", "sizes"])
def test_a_projection_split_by_channel_groups_becomes_one_per_group(tmp_path, how):
    """The split of the short filter's output (a copy in ONNX) goes: each group has its own
    projection rows, transpose and short filter; the result is the model's."""
    model = ProjectThenSplit(how=how).eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 32, 8),), path)
    assert report.split_projections == 1
    assert [r.pattern for r in report.rewrites].count("P13") == 3  # one short filter per group
    assert {r.module for r in report.rewrites if r.pattern == "P13"} == {"short"}  # where they came from
    nodes = _nodes(path)
    assert not any(n.op_type == "Split" for n in nodes) and sum(n.op_type == "FFTConv" for n in nodes) == 4
    _check_ort(model, path, [(2, 32, 8), (1, 50, 8)])


def test_a_projection_used_elsewhere_is_not_split(tmp_path):
    model = ProjectThenSplit(share_projection=True).eval()
    path = tmp_path / "m.onnx"
    report = export(model, (torch.randn(2, 32, 8),), path)
    assert report.split_projections == 0
    assert any(n.op_type == "Split" for n in _nodes(path))
    _check_ort(model, path, [(2, 32, 8)])
