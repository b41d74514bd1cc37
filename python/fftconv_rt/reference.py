"""Float64 NumPy reference of FFTConv, written from op_spec.toml's semantics."""

from __future__ import annotations

import numpy as np


def _f64(a):
    return None if a is None else np.asarray(a).astype(np.float64)


def fftconv_reference(u, k, D=None, pregate=None, postgate=None, fft_size: int = 0,
                      layout: str = "BHL", freq_keep: int = 0) -> np.ndarray:
    """y = postgate * (irfft(rfft(v, n) * rfft(k, n), n)[..., :L] + D * v), v = pregate * u, in float64;
    freq_keep > 0: rfft(k, n) zeroed at the bins >= freq_keep, n = fft_size or 2L."""
    u, k, D, pregate, postgate = map(_f64, (u, k, D, pregate, postgate))
    if layout == "BLH":  # compute in (B, H, L)
        u, pregate, postgate = (None if a is None else a.transpose(0, 2, 1) for a in (u, pregate, postgate))
    v = u if pregate is None else u * pregate
    L, Lk = v.shape[-1], k.shape[-1]
    if freq_keep > 0:
        n = fft_size if fft_size > 0 else 2 * L
        k_f = np.fft.rfft(k, n)
        k_f[..., freq_keep:] = 0
    else:
        n = fft_size if fft_size > 0 else L + Lk - 1
        k_f = np.fft.rfft(k, n)
    y = np.fft.irfft(np.fft.rfft(v, n) * k_f, n)[..., :L]
    if D is not None:
        y = y + D[:, None] * v
    if postgate is not None:
        y = y * postgate
    return y.transpose(0, 2, 1) if layout == "BLH" else y


def relative_error(y, ref) -> float:
    """max|y - ref| / max|ref| (0 for an empty or all-zero reference with equal output)."""
    y = np.asarray(y).astype(np.float64)
    ref = np.asarray(ref).astype(np.float64)
    if ref.size == 0:
        return 0.0
    scale = np.max(np.abs(ref))
    err = np.max(np.abs(y - ref))
    return float(err / scale) if scale > 0 else float(err)


def decaying_filter(rng: np.random.Generator, H: int, Lk: int) -> np.ndarray:
    """Random filters decaying like trained long-conv filters (exponential envelope)."""
    t = np.arange(Lk)[None, :]
    rates = rng.uniform(0.5, 8.0, size=(H, 1)) / max(Lk, 1)
    return (rng.standard_normal((H, Lk)) * np.exp(-rates * t)).astype(np.float32)
