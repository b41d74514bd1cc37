"""The reverse pass: every fftconv_rt::FFTConv node (op version 1 or 2) becomes standard ONNX ops
(DFT, Mul, ...), so that the model runs on any ONNX runtime without the fftconv-rt library, at
the cost of speed (ONNX Runtime runs DFT on the CPU).

Per node, with P the period of the contract (op_spec.toml):
    v = pregate * u                       (as float32; BLH inputs transposed to BHL)
    causal linear (no k_rev, fft_size = period_scale = 0): c = k, n = the next power of two
        >= L + Lk - 1, and y = Re(IDFT(DFT(v, n) * DFT(c, n)))[..., :L]
    otherwise the convolution is circular of period P (fft_size, period_scale * L, or for a
    two-sided linear node L + max(Lk, Lk_rev) - 1, where the circular result is the linear one):
        c[j] = k[j] + k_rev[(P - j) mod P]    (both cut or zero-padded to P taps)
        linear = Re(IDFT(DFT(v, n) * DFT(c, n))) with n the next power of two >= L + P - 1,
        y = linear[..., :L] + linear[..., P:P + L]   (the fold; zero past the end)
    y = postgate * (y + D * v), cast back to u's type, transposed back for BLH.
(Full complex spectra: ONNX's inverse DFT takes no one-sided input.) A frequency-sparse node
(freq_keep = K > 0) transforms at its period n = P (or 2L) instead, with DFT(c, n) zeroed at the
bins f whose min(f, n - f) >= K; the result needs no fold. max_length = M > 0: L is read through a
Gather from Range(0, M + 1), which fails in a node named "..._L_exceeds_max_length_M" when L > M.
Every DFT input is zero-padded to n and given no dft_length: ONNX Runtime's DFT-20 with a
dft_length input fails at a second length ("Shape mismatch attempting to re-use buffer").
"""

from __future__ import annotations

import itertools
from pathlib import Path

import onnx
from onnx import TensorProto, helper, numpy_helper

from fftconv_rt.spec import DOMAIN, OP_NAME

_OPSET = 18


class _Builder:
    def __init__(self, prefix: str):
        self.prefix, self.nodes, self.constants, self._ids = prefix, [], [], itertools.count()

    def name(self, hint: str) -> str:
        return f"{self.prefix}/{hint}_{next(self._ids)}"

    def op(self, op_type: str, inputs, hint: str = "", **attrs) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def const(self, values, hint: str, dtype="int64") -> str:
        import numpy as np

        out = self.name(hint)
        self.constants.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), out))
        return out

    def double_const(self, value: float, hint: str) -> str:
        return self.const([value], hint, dtype="float64")


def _attribute(node, name, default):
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _decompose_node(node, index: int, opset: int) -> _Builder:
    b = _Builder(f"fftconv_decomposed_{index}")
    inputs = list(node.input) + [""] * (6 - len(node.input))
    u, k, D, pregate, postgate, k_rev = inputs[:6]
    fft_size = int(_attribute(node, "fft_size", 0))
    freq_keep = int(_attribute(node, "freq_keep", 0))
    period_scale = int(_attribute(node, "period_scale", 0))
    max_length = int(_attribute(node, "max_length", 0))
    layout = _attribute(node, "layout", "BHL")
    if layout not in ("BHL", "BLH"):
        raise ValueError(f"fftconv-rt decompose: node {node.name!r} has layout {layout!r}; expected BHL or BLH")
    for name, value in (("fft_size", fft_size), ("freq_keep", freq_keep), ("period_scale", period_scale),
                        ("max_length", max_length)):
        if value < 0:
            raise ValueError(f"fftconv-rt decompose: node {node.name!r} has {name} = {value}; expected >= 0")
    if period_scale > 0 and fft_size > 0:
        raise ValueError(f"fftconv-rt decompose: node {node.name!r} sets both fft_size and period_scale")

    def to_bhl(name):
        f = b.op("Cast", [name], "as_float", to=TensorProto.FLOAT)
        return b.op("Transpose", [f], "to_bhl", perm=[0, 2, 1]) if layout == "BLH" else f

    v = to_bhl(u)
    if pregate:
        v = b.op("Mul", [v, to_bhl(pregate)], "pregated")
    kf = b.op("Cast", [k], "k_float", to=TensorProto.FLOAT)

    axis_l = b.const([2], "axis_l")
    axis_last = b.const([-1], "axis_last")
    zero, one = b.const([0], "zero"), b.const([1], "one")
    L = b.op("Shape", [v], "L", start=2, end=3)  # (1,)
    if max_length > 0:  # an index past the end when L > max_length: ORT names this node in its error
        lengths = b.op("Range", [b.const(0, "first_length"), b.const(max_length + 1, "lengths_end"),
                                 b.const(1, "length_step")], "accepted_lengths")
        L = b.op("Gather", [lengths, L], f"L_exceeds_max_length_{max_length}", axis=0)
    Lk = b.op("Shape", [kf], "Lk", start=1, end=2)
    taps = Lk
    if k_rev:
        k_revf = b.op("Cast", [k_rev], "k_rev_float", to=TensorProto.FLOAT)
        taps = b.op("Max", [Lk, b.op("Shape", [k_revf], "Lk_rev", start=1, end=2)], "taps")

    # The period P of a circular node (None: causal linear).
    if period_scale > 0:
        period = b.op("Mul", [L, b.const([period_scale], "period_scale")], "period")
    elif fft_size > 0:
        period = b.const([fft_size], "period")
    elif freq_keep > 0:  # the period the mask is defined at
        period = b.op("Mul", [L, b.const([2], "two_int")], "period")
    elif k_rev:
        period = b.op("Sub", [b.op("Add", [L, taps], "L_plus_taps"), one], "period")
    else:
        period = None

    def next_pow2(size):
        # ORT's DFT is exact and fast at powers of two; found in double precision: log2 of 2^k + 1
        # differs from k by more than the 1e-10 margin.
        log2 = b.op("Div", [b.op("Log", [b.op("Cast", [size], "size_f64", to=TensorProto.DOUBLE)], "ln"),
                            b.double_const(0.6931471805599453, "ln2")], "log2")
        exponent = b.op("Ceil", [b.op("Sub", [log2, b.double_const(1e-10, "margin")], "log2_margin")], "exponent")
        return b.op("Cast", [b.op("Pow", [b.double_const(2.0, "two"), exponent], "pow2")], "n", to=TensorProto.INT64)

    def fit(x, size, hint):  # x (..., m) cut or zero-padded to `size` points on its last axis
        rows = b.op("Shape", [x], "rows", start=0, end=-1)
        zeros = b.op("ConstantOfShape", [b.op("Concat", [rows, size], "pad_shape", axis=0)], "pad_zeros",
                     value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
        padded = b.op("Concat", [x, zeros], "padded", axis=-1)
        return b.op("Slice", [padded, zero, size, axis_last], hint)

    if period is None:
        c = kf
        n = next_pow2(b.op("Sub", [b.op("Add", [L, Lk], "L_plus_Lk"), one], "needed"))
    else:
        # the effective filter of one period: k, plus the anti-causal taps at its end
        c = fit(kf, period, "k_period")
        if k_rev:
            j = b.op("Range", [b.const(0, "first_tap"), b.op("Squeeze", [period], "period_scalar"),
                               b.const(1, "tap_step")], "taps_j")
            reversed_index = b.op("Mod", [b.op("Sub", [period, j], "period_minus_j"), period], "reversed_index")
            reversed_taps = b.op("Gather", [fit(k_revf, period, "k_rev_period"), reversed_index], "k_rev_at_end",
                                 axis=1)
            c = b.op("Add", [c, reversed_taps], "effective_filter")
        if freq_keep > 0:
            n = period
        else:
            n = next_pow2(b.op("Sub", [b.op("Add", [L, period], "L_plus_period"), one], "needed"))
    n_scalar = b.op("Squeeze", [n], "n_scalar")

    def spectrum(real, axis):
        z = b.op("Unsqueeze", [fit(real, n, "to_n"), axis_last], "as_complex")
        return dft(z, axis, "dft", onesided=0)

    def dft(z, axis, hint, **attrs):  # DFT's axis is an attribute up to opset 19, an input from 20
        if opset >= 20:
            return b.op("DFT", [z, "", b.const(axis, "dft_axis")], hint, **attrs)
        return b.op("DFT", [z], hint, axis=axis, **attrs)

    V = spectrum(v, 2)  # (B, H, n, 2)
    K = spectrum(c, 1)  # (H, n, 2)
    re_idx, im_idx = b.const(0, "re"), b.const(1, "im")

    def part(z, idx):
        return b.op("Gather", [z, idx], "part", axis=-1)

    Vr, Vi, Kr, Ki = part(V, re_idx), part(V, im_idx), part(K, re_idx), part(K, im_idx)
    if freq_keep > 0:  # bins f with min(f, n - f) >= freq_keep are zero
        f = b.op("Range", [b.const(0, "first_bin"), n_scalar, b.const(1, "bin_step")], "bins")
        bin_index = b.op("Min", [f, b.op("Sub", [n_scalar, f], "negative_bins")], "bin_index")
        kept = b.op("Cast", [b.op("Less", [bin_index, b.const(freq_keep, "freq_keep")], "kept_bins")], "mask",
                    to=TensorProto.FLOAT)
        Kr, Ki = b.op("Mul", [Kr, kept], "k_re_kept"), b.op("Mul", [Ki, kept], "k_im_kept")
    Yr = b.op("Sub", [b.op("Mul", [Vr, Kr]), b.op("Mul", [Vi, Ki])], "y_re")
    Yi = b.op("Add", [b.op("Mul", [Vr, Ki]), b.op("Mul", [Vi, Kr])], "y_im")
    Y = b.op("Concat", [b.op("Unsqueeze", [Yr, axis_last]), b.op("Unsqueeze", [Yi, axis_last])], "y_spectrum",
             axis=-1)
    y = dft(Y, 2, "idft", inverse=1, onesided=0)
    linear = part(y, re_idx)
    y = b.op("Slice", [linear, zero, L, axis_l], "causal_cut")
    if period is not None and freq_keep == 0:
        # circular of period P: y[t] += linear[t + P] (zero past the end)
        zeros = b.op("ConstantOfShape", [b.op("Shape", [v], "v_shape")], "zeros",
                     value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
        extended = b.op("Concat", [linear, zeros], "extended", axis=2)
        wrapped = b.op("Slice", [extended, period, b.op("Add", [period, L], "period_plus_L"), axis_l], "wrapped")
        y = b.op("Add", [y, wrapped], "circular")
    if D:
        Dv = b.op("Unsqueeze", [b.op("Cast", [D], "D_float", to=TensorProto.FLOAT), axis_last], "D_column")
        y = b.op("Add", [y, b.op("Mul", [Dv, v], "skip")], "with_skip")
    if postgate:
        y = b.op("Mul", [y, to_bhl(postgate)], "postgated")
    if layout == "BLH":
        y = b.op("Transpose", [y], "to_blh", perm=[0, 2, 1])
    b.nodes.append(helper.make_node("CastLike", [y, u], [node.output[0]], name=b.name("output")))
    return b


def decompose(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of the model with every FFTConv node replaced by standard ops, and their count."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    new_nodes, count = [], 0
    opset = max([_OPSET] + [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")])
    for node in graph.node:
        if node.domain == DOMAIN and node.op_type == OP_NAME:
            built = _decompose_node(node, count, opset)
            new_nodes.extend(built.nodes)
            graph.initializer.extend(built.constants)
            count += 1
        else:
            new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    if count:
        kept = [o for o in model.opset_import if o.domain != DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept)
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = opset
        if not any(o.domain in ("", "ai.onnx") for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid("", opset))
    return model, count


def decompose_file(src: str | Path, dst: str | Path) -> int:
    """Writes the decomposed model of src to dst; returns how many FFTConv nodes were replaced."""
    model, count = decompose(onnx.load(str(src)))
    onnx.save(model, str(dst))
    return count
