"""Long-convolution patterns: each is a small matcher from an anchor node of
an exported graph to a Match that the rewriter turns into one FFTConv call.

A pattern is a function (node) -> Match | Skip | None registered with
@pattern; None means "not this pattern", Skip means "this FFT looked like a
convolution but cannot be rewritten exactly" (with the reason, for the report).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import sympy
import torch
from torch import fx

from .graph import (aten, expr, is_last_dim, is_scalar, module_path, node_arg, only_user, provably_nonnegative,
                    same_size, shape_env, shape_exprs, strip_casts, tensor_val)


@dataclass
class Match:
    pattern: str
    anchor: fx.Node            # the node that identifies the convolution (the inverse FFT)
    end: fx.Node               # the last node replaced; its users receive the op's output
    u: fx.Node
    k: fx.Node
    D: Optional[fx.Node] = None
    D_needs_flatten: bool = False
    fft_size: int = 0
    period_scale: int = 0            # op version 2: circular of period period_scale * L (fft_size 0)
    k_is_conv_weight: bool = False   # k is a depthwise Conv1d weight (H, 1, K): flip it into a filter
    k_batch_of_one: bool = False     # k is (1, H, Lk), broadcast over the batch: take k[0]
    heads: int = 0                   # P4: k is (C, H, Lk), u (B, H, L) is shared by the C heads, y is (B, C, H, L)
    bias: Optional[fx.Node] = None   # (H,) added to the output (a Conv1d's bias)
    # How the node's filter is made from k (see _apply): delayed by filter_delay taps; or, for
    # a circular convolution of period filter_period, k zero-padded to that period, plus
    # k_reverse acting at lags 0, -1, -2, ... (P8), rolled by filter_shift.
    filter_delay: int = 0
    filter_period: int = 0
    filter_shift: int = 0
    k_reverse: Optional[fx.Node] = None
    k_rev: Optional[fx.Node] = None  # op version 2: the node's anti-causal taps (its k_rev input)
    layout: str = "BHL"              # "BLH": u (B, L, H) transformed along dim 1, k given as (Lk, H)
    details: dict = field(default_factory=dict)


# Causal depthwise Conv1d layers of this many taps and more become FFTConv by default, Hyena's
# 3-tap short filters included: the op computes them exactly on every backend, and under ORT's
# CUDA provider a 3-tap fp16 depthwise Conv took 57 ms at L = 8K (H200) where FFTConv takes
# well under 1 ms; on ORT's CPU provider (the op's direct path for short filters) it took
# 23.8 ms where Conv took 27.5 ms, on (1, 2304, 8192) float32, 2 cores.
DEFAULT_MIN_CONV_TAPS = 2


@dataclass
class Options:
    """What the user decides about matching: causal depthwise Conv1d layers of at least
    min_conv_taps taps are rewritten (P13)."""

    min_conv_taps: int = DEFAULT_MIN_CONV_TAPS
    # The op takes k_rev and period_scale (fftconv_rt::FFTConv version 2).
    two_sided_op: bool = False


@dataclass
class Skip:
    anchor: fx.Node
    reason: str


PatternFn = Callable[[fx.Node, "Options"], "Match | Skip | None"]
PATTERNS: list[tuple[str, PatternFn]] = []


def pattern(name: str):
    def register(fn: PatternFn) -> PatternFn:
        PATTERNS.append((name, fn))
        return fn
    return register


# ---- pieces shared by the rfft/irfft patterns ---------------------------------

_RFFT = {aten.fft_rfft.default}
_IRFFT = {aten.fft_irfft.default}
_FFT = {aten.fft_fft.default}
_IFFT = {aten.fft_ifft.default}
_CONJ = {aten._conj.default, aten.conj.default, aten.conj_physical.default}
# Inverse transforms a convolution pattern can end in (the matchers' anchors).
INVERSE_FFTS = _IRFFT | _IFFT
CONVOLUTIONS = {aten.conv1d.default}


def _norm_scale(norm: Optional[str], n: sympy.Expr, inverse: bool) -> sympy.Expr:
    """The factor a torch.fft norm mode applies."""
    if norm == "ortho":
        return 1 / sympy.sqrt(n)
    if norm == "forward":
        return sympy.Integer(1) if inverse else 1 / n
    return 1 / n if inverse else sympy.Integer(1)  # None / "backward"


def _peel_scalars(node, factors: list):
    """Walks up through multiplications/divisions by scalars, collecting the factors."""
    while isinstance(node, fx.Node) and node.op == "call_function":
        a, b = (node.args + (None, None))[:2]
        if node.target in (aten.mul.Tensor, aten.mul.Scalar):
            if is_scalar(b):
                factors.append(expr(b)); node = a; continue
            if is_scalar(a):
                factors.append(expr(a)); node = b; continue
        if node.target in (aten.div.Tensor, aten.div.Scalar) and is_scalar(b):
            factors.append(1 / expr(b)); node = a; continue
        break
    return node


@dataclass
class _Spectrum:
    source: fx.Node  # the real tensor transformed, casts stripped
    n: object
    norm: Optional[str]
    half_of_full: bool = False  # fft(x, n)[..., :n//2 + 1], the rfft computed the long way (P5)
    reverse: Optional[fx.Node] = None  # P8: + conj(rfft(reverse, n)), the same scale


def _half_spectrum(node) -> Optional[_Spectrum]:
    """`fft(x, n)[..., :n//2 + 1]` of a real x: the same values as rfft(x, n)."""
    if not (isinstance(node, fx.Node) and node.op == "call_function" and node.target == aten.slice.Tensor):
        return None
    full = _as_spectrum(node.args[0], _FFT)
    if full is None or node_arg(node, 2, "start", None) not in (None, 0) or node_arg(node, 4, "step", 1) != 1:
        return None
    if not is_last_dim(node.args[0], node_arg(node, 1, "dim", 0)) or full.n is None:
        return None
    if not same_size(node_arg(node, 3, "end", None), sympy.floor(expr(full.n) / 2) + 1):
        return None
    full.half_of_full = True
    return full


def _as_spectrum(node, targets) -> Optional[_Spectrum]:
    """The forward transform (one of `targets`) of a real tensor along its last dimension."""
    half = _half_spectrum(node) if targets is _RFFT else None
    if half is not None:
        return half
    if not (isinstance(node, fx.Node) and node.op == "call_function" and node.target in targets):
        return None
    x = node.args[0]
    t = tensor_val(x)
    if t is None or t.is_complex() or not is_last_dim(x, node_arg(node, 2, "dim", -1)):
        return None
    return _Spectrum(strip_casts(x), node_arg(node, 1, "n"), node_arg(node, 3, "norm"))


def _two_sided_spectrum(node, targets) -> Optional[tuple[_Spectrum, list]]:
    """P8: `rfft(k, n) * c + conj(rfft(k_rev, n) * c)`, the spectrum of a filter with k_rev at
    lags 0, -1, -2, ...; returns it (with its reverse part) and the scale factors c."""
    if not (isinstance(node, fx.Node) and node.target == aten.add.Tensor and len(node.args) == 2):
        return None
    for forward, conj in (node.args, node.args[::-1]):
        if not (isinstance(conj, fx.Node) and conj.target in _CONJ):
            continue
        factors, reverse_factors = [], []
        spectrum = _as_spectrum(_peel_scalars(forward, factors), targets)
        reverse = _as_spectrum(_peel_scalars(conj.args[0], reverse_factors), targets)
        if spectrum is None or reverse is None or not same_size(reverse.n, spectrum.n) or \
                reverse.norm != spectrum.norm or sympy.simplify(sympy.Mul(*factors) - sympy.Mul(*reverse_factors)) != 0:
            return None
        spectrum.reverse = reverse.source
        return spectrum, factors
    return None


def _zero_padded(node) -> Optional[tuple[fx.Node, object, object]]:
    """`F.pad(x, (front, back))` with zeros on the last dimension: (x, front, back)."""
    if not (isinstance(node, fx.Node) and node.target in (aten.pad.default, aten.constant_pad_nd.default)):
        return None
    pad = node.args[1]
    mode = node_arg(node, 2, "mode", "constant") if node.target == aten.pad.default else "constant"
    value = node_arg(node, 3 if node.target == aten.pad.default else 2, "value", None)
    if len(pad) != 2 or mode != "constant" or value not in (None, 0, 0.0):
        return None
    return node.args[0], pad[0], pad[1]


def _flipped(node) -> Optional[fx.Node]:
    """x for `x.flip(-1)`."""
    if isinstance(node, fx.Node) and node.target == aten.flip.default and len(node.args[1]) == 1 and \
            is_last_dim(node, node.args[1][0]):
        return node.args[0]
    return None


def _output_slice(node: fx.Node, length, n) -> Optional[tuple[fx.Node, object]]:
    """The slice [..., s:s + L] (or [..., s:] reaching n = s + L) that is the only user of
    node: (slice node, s)."""
    user = only_user(node)
    if user is None or user.target != aten.slice.Tensor:
        return None
    start = node_arg(user, 2, "start", None) or 0
    end = node_arg(user, 3, "end", None)
    if not is_last_dim(node, node_arg(user, 1, "dim", 0)) or node_arg(user, 4, "step", 1) != 1:
        return None
    if same_size(end, expr(start) + expr(length)) or \
            ((end is None or (isinstance(end, int) and end >= 2 ** 62)) and n is not None
             and same_size(n, expr(start) + expr(length))):
        return user, start
    return None


def _causal_slice(node: fx.Node, length) -> Optional[fx.Node]:
    """The [..., :L] slice that is the only user of node, or None."""
    found = _output_slice(node, length, None)
    return found[0] if found is not None and found[1] == 0 else None


def _real_part(node: fx.Node) -> Optional[fx.Node]:
    user = only_user(node)
    return user if user is not None and user.target == aten.real.default else None


def _real_causal_cut(ifft: fx.Node, length) -> Optional[fx.Node]:
    """`.real` and `[..., :L]` after a complex inverse FFT, in either order: the last of the two."""
    sliced = _causal_slice(ifft, length)
    if sliced is not None:
        return _real_part(sliced)
    real = _real_part(ifft)
    return _causal_slice(real, length) if real is not None else None


def _skip_term(y: fx.Node, u: fx.Node, H) -> tuple[Optional[fx.Node], Optional[fx.Node], bool]:
    """`y + u * D` with D of shape (H, 1) or (1, H, 1): returns (add node, D source, needs flatten)."""
    add = only_user(y)
    if add is None or add.target != aten.add.Tensor or len(add.args) != 2 or add.kwargs.get("alpha", 1) != 1:
        return None, None, False
    other = add.args[1] if add.args[0] is y else add.args[0]
    if not (isinstance(other, fx.Node) and other.target == aten.mul.Tensor and only_user(other) is add):
        return None, None, False
    a, b = other.args[:2]
    for x, d in ((a, b), (b, a)):
        if not isinstance(x, fx.Node) or strip_casts(x) is not u or not isinstance(d, fx.Node):
            continue
        if d.target == aten.unsqueeze.default and node_arg(d, 1, "dim") in (-1, 1):
            base = d.args[0]
            bs = shape_exprs(base)
            if bs is not None and len(bs) == 1 and same_size(bs[0], H):
                return add, base, False
        ds = shape_exprs(d)
        if ds is not None and len(ds) in (2, 3) and all(s == 1 for s in ds[:-2]) and \
                same_size(ds[-2], H) and ds[-1] == 1:
            return add, d, True
    return None, None, False


def _output_cast(node: fx.Node, dtype: torch.dtype) -> fx.Node:
    """Extends the replaced region over a final cast back to u's dtype."""
    user = only_user(node)
    if user is not None and user.target in (aten.to.dtype, aten._to_copy.default):
        t = tensor_val(user)
        if t is not None and t.dtype == dtype:
            return user
    return node


def _details(node: fx.Node, n, scale: str, D, u_shape, k_shape) -> dict:
    """What the report says of a match: FFT size, where the scale is, skip term, module, shapes."""
    return {"n": str(n), "scale": scale, "skip": D is not None, "module": module_path(node),
            "u_shape": [str(x) for x in u_shape], "k_shape": [str(x) for x in k_shape]}


def _sizes_and_scale_refusal(node: fx.Node, n, u_spec: _Spectrum, k_spec: _Spectrum, factors: list):
    """A Skip when the transforms' sizes differ or their scale factors do not multiply to 1/n."""
    if not (same_size(u_spec.n, n) and same_size(k_spec.n, n)):
        return Skip(node, "the forward and inverse FFT sizes differ")
    n_expr = expr(n)
    scale = sympy.Mul(*factors) * _norm_scale(u_spec.norm, n_expr, False) * \
        _norm_scale(k_spec.norm, n_expr, False) * _norm_scale(node_arg(node, 3, "norm"), n_expr, True)
    if sympy.simplify(scale * n_expr - 1) != 0:
        return Skip(node, f"the FFT scale factors multiply to {scale}, not 1/n: not a convolution")
    return None


def _fft_size_attribute(n_expr, L, Lk, env, options: Options):
    """The node's (fft_size, period_scale) for a transform of n points: (0, 0) when the
    convolution is linear for every allowed length, (n, 0) when n is fixed (circular, kept
    exactly), (0, s) when n = s * L for a whole s (op version 2: a period tied to the length,
    taps past n dropped as rfft(k, n) drops them); else the reason (a str)."""
    lengths = Lk if isinstance(Lk, list) else [Lk]
    if all(provably_nonnegative(n_expr - L - x + 1, env) for x in lengths):
        return 0, 0
    if n_expr.is_number and provably_nonnegative(n_expr - L, env) and \
            all(provably_nonnegative(n_expr - x, env) for x in lengths):
        return int(n_expr), 0
    ratio = sympy.simplify(n_expr / L)
    if options.two_sided_op and ratio.is_Integer and int(ratio) >= 1:
        return 0, int(ratio)
    return (f"cannot prove n = {n_expr} >= L + Lk - 1 = {L + lengths[0] - 1} for every allowed length; export "
            "with static shapes or a filter as long as the input")


# ---- P1 / P2 / P6: FFT(u, n) * FFT(k, n) -> inverse FFT(n) -> [..., :L] (+ u * D) --

@pattern("P1/P2 rfft-irfft causal convolution")
def rfft_product_conv(node: fx.Node, options: Options):
    if node.op != "call_function" or node.target not in _IRFFT:
        return None
    return _spectral_product_conv(node, _RFFT, _causal_slice, options,
                                  named=lambda explicit, half: "P5" if half else ("P1" if explicit else "P2"))


@pattern("P6 fft-ifft(.real) causal convolution")
def fft_product_conv(node: fx.Node, options: Options):
    if node.op != "call_function" or node.target not in _IFFT:
        return None
    return _spectral_product_conv(node, _FFT, _real_causal_cut, options, named=lambda explicit, half: "P6")


def _inverse_of_product(node: fx.Node, product_target):
    """For an inverse FFT of size n along the last dimension of (scalar factors times) a
    `product_target` node: (n, that node, the factors); else None."""
    n = node_arg(node, 1, "n")
    if n is None or not is_last_dim(node, node_arg(node, 2, "dim", -1)):
        return None
    factors: list = []
    product = _peel_scalars(node.args[0], factors)
    if not (isinstance(product, fx.Node) and product.target == product_target):
        return None
    return n, product, factors


def _causal_cut_and_size(node: fx.Node, causal_end, n, L, Lk, u, k, options: Options):
    """(the end of the causal cut [..., :L], (fft_size, period_scale)), or the Skip saying why not."""
    end = causal_end(node, L)
    if end is None:
        return Skip(node, "the inverse FFT is not followed by a causal slice [..., :L] (of its real part)")
    size = _fft_size_attribute(n, L, Lk, shape_env(u) or shape_env(k), options)
    return Skip(node, size) if isinstance(size, str) else (end, size)


def _spectral_product_conv(node: fx.Node, forward_targets, causal_end, options: Options, named):
    """The shared matcher: `node` is the inverse transform; forward_targets the transforms
    that must produce both spectra; causal_end(node, L) finds the end of the causal cut."""
    found = _inverse_of_product(node, aten.mul.Tensor)
    if found is None:
        return None
    n, product, factors = found
    spectra = []
    for operand in product.args[:2]:
        peeled = _peel_scalars(operand, factors)
        spectrum = _as_spectrum(peeled, forward_targets)
        if spectrum is None:
            two_sided = _two_sided_spectrum(peeled, forward_targets)
            if two_sided is None:
                return None
            spectrum, scale = two_sided
            factors.extend(scale)
        spectra.append(spectrum)

    # u is the (B, H, L) operand, k the (H, Lk) one, or (1, H, Lk) broadcast over the batch (StripedHyena)
    ranks = [len(shape_exprs(s.source) or []) for s in spectra]
    batch_of_one = [r == 3 and shape_exprs(s.source)[0] == 1 for r, s in zip(ranks, spectra)]
    if sorted(ranks) == [3, 3] and batch_of_one.count(True) == 1:
        ranks[batch_of_one.index(True)] = 2
    if sorted(ranks) != [2, 3]:
        return Skip(node, f"rfft operands have ranks {ranks}; this pattern needs (B, H, L) and (H, Lk)")
    u_spec, k_spec = (spectra[0], spectra[1]) if ranks[0] == 3 else (spectra[1], spectra[0])
    k_batch_of_one = len(shape_exprs(k_spec.source)) == 3
    if u_spec.reverse is not None:
        return Skip(node, "the input's spectrum has a conjugate part: not a convolution of the input")
    refusal = _sizes_and_scale_refusal(node, n, u_spec, k_spec, factors)
    if refusal:
        return refusal
    n_expr = expr(n)
    u, k = u_spec.source, k_spec.source
    # P9/P11: the input zero-padded before its transform; P12: reversed, then padded
    front, reversed_input = 0, False
    padded = _zero_padded(u)
    if padded is not None:
        u, front, _ = padded
        if _flipped(u) is not None:
            u, reversed_input = _flipped(u), True
        u = strip_casts(u)
    if len(shape_exprs(u) or []) != 3:
        return None
    B, H, L = shape_exprs(u)
    if reversed_input:
        return _reversed_shift_conv(node, u, k, n_expr, front, (B, H, L))
    Hk, Lk = shape_exprs(k)[-2:]
    if sympy.simplify(H - Hk) != 0:
        return Skip(node, "filter channels do not match the input's")

    u_dtype = tensor_val(u).dtype
    if u_dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return Skip(node, f"input dtype {u_dtype} is not float32, float16 or bfloat16")
    match = Match(pattern="", anchor=node, end=node, u=u, k=k, k_batch_of_one=k_batch_of_one)
    found = _output_slice(node, L, n)
    offset = found is not None and found[1] != 0
    reverse = k_spec.reverse
    if reverse is not None and (len(shape_exprs(reverse) or []) != 2 or
                                sympy.simplify(shape_exprs(reverse)[0] - H) != 0):
        return Skip(node, "the conjugate part of the filter is not (H, Lk_rev) with the input's channels")
    if k_batch_of_one and (reverse is not None or front != 0 or offset):
        return Skip(node, "a (1, H, Lk) filter is only rewritten in the causal forms")
    if forward_targets is _RFFT and (front != 0 or offset or (reverse is not None and not options.two_sided_op)):
        refusal = _shifted_circular(match, node, n_expr, front, L, Lk, reverse)
        if refusal:
            return refusal
        end = match.end
    else:  # P8 (op version 2): the conjugate part is the node's k_rev, at lags 0, -1, ...
        lengths = [Lk] + ([shape_exprs(reverse)[1]] if reverse is not None else [])
        cut = _causal_cut_and_size(node, causal_end, n_expr, L, lengths, u, k, options)
        if isinstance(cut, Skip):
            return cut
        end, (match.fft_size, match.period_scale) = cut
        if reverse is not None:
            match.k_rev, match.pattern = reverse, "P8"

    add, D, flatten = _skip_term(end, u, H)
    if add is not None:
        end = add
    match.end = _output_cast(end, u_dtype)
    match.D, match.D_needs_flatten = D, flatten

    explicit_scale = bool(factors) or u_spec.norm not in (None, "backward") or \
        node_arg(node, 3, "norm") not in (None, "backward")
    match.pattern = match.pattern or named(explicit_scale, any(sp.half_of_full for sp in spectra))
    match.details = _details(node, n_expr, "explicit 1/n" if explicit_scale else "inverse FFT default", D,
                             (B, H, L), (Hk, Lk))
    return match


def _shifted_circular(match: Match, node: fx.Node, n, front, L, Lk, k_reverse) -> Optional[Skip]:
    """P9/P11 (input padded by `front`, output sliced [s:s + L]) and P8 (the conjugate part
    of a two-sided filter): one circular FFTConv of period n whose filter is k padded to n,
    plus k_reverse at lags 0, -1, ... (P8), rolled by front - s. Needs static sizes. Fills
    match (pattern, end, fft_size, filter fields) or returns the reason it cannot."""
    found = _output_slice(node, L, n)
    if found is None:
        return Skip(node, "the inverse FFT is not followed by a slice [..., s:s + L]")
    match.end, start = found
    reverse_len = shape_exprs(k_reverse)[-1] if k_reverse is not None else 0
    sizes = [expr(x) for x in (n, front, start, L, Lk, reverse_len)]
    if not all(x is not None and x.is_number for x in sizes):
        return Skip(node, "a padded input, an offset output slice or a conjugate filter part needs static "
                          "sizes (export with static shapes): the circular period and shift must be numbers")
    n_, front_, start_, L_, Lk_, reverse_ = (int(x) for x in sizes)
    if front_ + L_ > n_ or Lk_ > n_ or reverse_ > n_:
        return Skip(node, f"the padded input ({front_} + {L_}) or a filter ({Lk_}, {reverse_}) is longer than "
                          f"the FFT size {n_}: the model truncates it")
    match.pattern = "P8" if k_reverse is not None else "P9/P11"
    match.fft_size = match.filter_period = n_
    match.filter_shift = front_ - start_
    match.k_reverse = k_reverse
    return None


def _reversed_shift_conv(node: fx.Node, u: fx.Node, k_padded: fx.Node, n, front, shape) -> Match | Skip:
    """P12, the 'shift' convolution: rfft(pad(k.flip(-1), (L, 0)), 2L) * rfft(pad(u.flip(-1),
    (L, 0)), 2L) -> irfft -> [..., L:] -> flip(-1). It is the causal convolution of u with k
    delayed by one step: y[t] = sum_{p < t} k[p] u[t - 1 - p]."""
    B, H, L = shape
    k_pad = _zero_padded(k_padded)
    k = _flipped(k_pad[0]) if k_pad is not None else None
    reason = "a reversed input is only rewritten in the 'shift' form of P12 (both reversed and padded by L " \
             "in front, n = 2L, output [..., L:] reversed)"
    if k is None or len(shape_exprs(k) or []) != 2:
        return Skip(node, reason)
    Hk, Lk = shape_exprs(k)
    found = _output_slice(node, L, n)
    if not (same_size(front, L) and same_size(k_pad[1], L) and same_size(Lk, L) and same_size(n, 2 * L)
            and same_size(Hk, H) and k_pad[2] == 0 and found is not None and same_size(found[1], L)):
        return Skip(node, reason)
    flip_back = only_user(found[0])
    if flip_back is None or _flipped(flip_back) is not found[0]:
        return Skip(node, reason)
    u_dtype = tensor_val(u).dtype
    if u_dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return Skip(node, f"input dtype {u_dtype} is not float32, float16 or bfloat16")
    return Match(pattern="P12", anchor=node, end=_output_cast(flip_back, u_dtype), u=u, k=strip_casts(k),
                 filter_delay=1,
                 details=_details(node, expr(n), "inverse FFT default", None, (B, H, L), (Hk, Lk)))


# ---- P4: einsum('bhl,chl->bchl', rfft(u), rfft(k)) -> irfft -> [..., :L] (+ einsum(u, D)) --

def _multi_head_equation(equation: str) -> Optional[tuple[int, int]]:
    """For 'bhl,chl->bchl' (any letters, either operand order): (index of the (B,H,L)
    operand, index of the (C,H,L) one); None for any other equation."""
    equation = equation.replace(" ", "")
    if "->" not in equation:
        return None
    lhs, out = equation.split("->")
    operands = lhs.split(",")
    if len(operands) != 2 or any(len(o) != 3 for o in operands) or len(out) != 4:
        return None
    for ui, ki in ((0, 1), (1, 0)):
        (b, h, l), (c, h2, l2) = operands[ui], operands[ki]
        if h == h2 and l == l2 and len({b, c, h, l}) == 4 and out == b + c + h + l:
            return ui, ki
    return None


def _multi_head_skip(y: fx.Node, u: fx.Node, H) -> tuple[Optional[fx.Node], Optional[fx.Node]]:
    """`y + einsum('bhl,ch->bchl', u, D)`: (add node, D of shape (C, H))."""
    add = only_user(y)
    if add is None or add.target != aten.add.Tensor or len(add.args) != 2:
        return None, None
    other = add.args[1] if add.args[0] is y else add.args[0]
    if not (isinstance(other, fx.Node) and other.target == aten.einsum.default and only_user(other) is add):
        return None, None
    equation = other.args[0].replace(" ", "")
    x, d = other.args[1]
    if strip_casts(x) is not u or "->" not in equation:
        return None, None
    (eu, ed), out = equation.split("->")[0].split(","), equation.split("->")[1]
    if len(eu) == 3 and len(ed) == 2 and ed[1] == eu[1] and out == eu[0] + ed[0] + eu[1] + eu[2]:
        return add, d
    return None, None


@pattern("P4 multi-head einsum convolution")
def multi_head_conv(node: fx.Node, options: Options):
    if node.op != "call_function" or node.target not in _IRFFT:
        return None
    found = _inverse_of_product(node, aten.einsum.default)
    if found is None:
        return None
    n, product, factors = found
    order = _multi_head_equation(product.args[0])
    if order is None:
        return Skip(node, f"einsum {product.args[0]!r} is not the multi-head product 'bhl,chl->bchl'")
    spectra = [_as_spectrum(_peel_scalars(op, factors), _RFFT) for op in product.args[1]]
    if any(sp is None for sp in spectra):
        return None
    u_spec, k_spec = spectra[order[0]], spectra[order[1]]
    u, k = u_spec.source, k_spec.source
    us, ks = shape_exprs(u), shape_exprs(k)
    if len(us) != 3 or len(ks) != 3 or not ks[0].is_number or sympy.simplify(us[1] - ks[1]) != 0:
        return Skip(node, "multi-head operands are not (B, H, L) and (C, H, Lk) with a fixed C")
    B, H, L = us
    C, _, Lk = ks
    refusal = _sizes_and_scale_refusal(node, n, u_spec, k_spec, factors)
    if refusal:
        return refusal
    n_expr = expr(n)
    cut = _causal_cut_and_size(node, _causal_slice, n_expr, L, Lk, u, k, options)
    if isinstance(cut, Skip):
        return cut
    end, (fft_size, period_scale) = cut
    if tensor_val(u).dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return Skip(node, f"input dtype {tensor_val(u).dtype} is not float32, float16 or bfloat16")
    add, D = _multi_head_skip(end, u, H)
    if add is not None:
        end = add
    return Match(pattern="P4", anchor=node, end=end, u=u, k=k, D=D, heads=int(C), fft_size=fft_size,
                 period_scale=period_scale,
                 details=_details(node, n_expr, f"{int(C)} heads, einsum", D, (B, H, L), ks))


# ---- P13: long depthwise conv1d(x, w, groups=C, padding=K-1)[..., :L] ------------------

def _ints(value) -> Optional[list]:
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        return list(value)
    return None


@pattern("P13 long depthwise conv1d")
def long_depthwise_conv1d(node: fx.Node, options: Options):
    if node.op != "call_function" or node.target not in CONVOLUTIONS:
        return None
    x, weight = node.args[0], node.args[1]
    bias = node_arg(node, 2, "bias")
    stride, padding = _ints(node_arg(node, 3, "stride", 1)), node_arg(node, 4, "padding", 0)
    dilation, groups = _ints(node_arg(node, 5, "dilation", 1)), node_arg(node, 6, "groups", 1)
    xs, ws = shape_exprs(x), shape_exprs(weight)
    if xs is None or ws is None or len(xs) != 3 or len(ws) != 3 or not all(e.is_number for e in ws):
        return None
    channels, per_group, taps = (int(e) for e in ws)
    if per_group != 1 or taps < options.min_conv_taps:
        return None  # not depthwise, or shorter than the user's threshold: left to ONNX's Conv
    if not (same_size(groups, channels) and same_size(xs[1], channels)):
        return Skip(node, f"a long Conv1d whose groups and input channels are not provably its {channels} "
                          "filters (dynamic channels?): export with a static channel dimension")
    if stride != [1] or dilation != [1] or _ints(padding) != [taps - 1]:
        return Skip(node, "a long depthwise Conv1d, but not causal (padding K-1, stride 1, dilation 1)")
    B, H, L = xs
    end = _causal_slice(node, L)
    if end is None:
        return Skip(node, "a long depthwise Conv1d not followed by the causal slice [..., :L]")
    u_dtype = tensor_val(x).dtype
    if u_dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return Skip(node, f"input dtype {u_dtype} is not float32, float16 or bfloat16")
    add, D, flatten = _skip_term(end, strip_casts(x), H)
    if add is not None:
        end = add
    return Match(pattern="P13", anchor=node, end=end, u=x, k=weight, D=D, D_needs_flatten=flatten,
                 k_is_conv_weight=True, bias=bias,
                 details=_details(node, "auto", f"Conv1d, {taps} taps", D, (B, H, L), (channels, taps)))


FFT_TARGETS = {aten.fft_rfft.default, aten.fft_irfft.default, aten.fft_fft.default, aten.fft_ifft.default,
               aten.fft_fftn.default, aten.fft_ifftn.default, aten.fft_rfftn.default, aten.fft_irfftn.default,
               aten.fft_hfft.default, aten.fft_ihfft.default, aten.fft_fft2.default, aten.fft_ifft2.default,
               aten.fft_rfft2.default, aten.fft_irfft2.default}


def fft_nodes(graph: fx.Graph) -> list[fx.Node]:
    return [n for n in graph.nodes if n.op == "call_function" and n.target in FFT_TARGETS]
