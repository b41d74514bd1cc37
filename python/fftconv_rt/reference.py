"""Float64 NumPy reference of FFTConv, written from op_spec.toml's semantics."""

from __future__ import annotations

import numpy as np


def _f64(a):
    return None if a is None else np.asarray(a).astype(np.float64)


def period_of(L: int, Lk: int, Lk_rev: int = 0, fft_size: int = 0, freq_keep: int = 0,
              period_scale: int = 0) -> tuple[int, bool]:
    """The period n of a call and whether its filter spectrum is masked (op_spec.toml): fft_size, or
    period_scale * L, or (both 0) the linear size L + max(Lk, Lk_rev) - 1; a freq_keep that removes
    bins is defined at that period, or at 2L when both are 0."""
    n = period_scale * L if period_scale > 0 else fft_size
    masked_n = n if n > 0 else 2 * L
    if 0 < freq_keep < masked_n // 2 + 1:
        return masked_n, True
    return (n if n > 0 else L + max(Lk, Lk_rev) - 1), False


def fftconv_reference(u, k, D=None, pregate=None, postgate=None, fft_size: int = 0, layout: str = "BHL",
                      freq_keep: int = 0, k_rev=None, period_scale: int = 0, max_length: int = 0) -> np.ndarray:
    """In float64, with n the period (period_of):
        v = pregate * u
        K = rfft(k[:n], n) + conj(rfft(k_rev[:n], n))      (no k_rev: K = rfft(k, n))
        y = postgate * (irfft(rfft(v, n) * K, n)[..., :L] + D * v)
    freq_keep > 0: K zeroed at the bins >= freq_keep. L > max_length > 0 raises ValueError."""
    u, k, D, pregate, postgate, k_rev = map(_f64, (u, k, D, pregate, postgate, k_rev))
    if layout == "BLH":  # compute in (B, H, L)
        u, pregate, postgate = (None if a is None else a.transpose(0, 2, 1) for a in (u, pregate, postgate))
    v = u if pregate is None else u * pregate
    L, Lk = v.shape[-1], k.shape[-1]
    if max_length > 0 and L > max_length:
        raise ValueError(f"FFTConv: sequence length L = {L} exceeds the attribute 'max_length' = {max_length}")
    if L == 0:
        y = np.zeros_like(v)
        return y.transpose(0, 2, 1) if layout == "BLH" else y
    n, masked = period_of(L, Lk, 0 if k_rev is None else k_rev.shape[-1], fft_size, freq_keep, period_scale)
    k_f = np.fft.rfft(k[..., :n], n)  # taps past n dropped, as rfft(k, n) does
    if k_rev is not None:
        k_f = k_f + np.conj(np.fft.rfft(k_rev[..., :n], n))
    if masked:
        k_f[..., freq_keep:] = 0
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
