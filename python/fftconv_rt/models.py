"""Small long-convolution models written for this package: the demo's
Hyena-style language model and its pieces. Their long convolutions are
written the way the public Hyena/HyenaDNA code writes them (pattern P1:
rfft/irfft with n = 2L, filter spectrum scaled by 1/n, causal slice, skip
term), so exporting them exercises the exporter's matcher."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def fft_long_conv(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """Causal depthwise convolution of u (B, H, L) with k (H, L) plus the skip u * D, by FFT."""
    seqlen = u.shape[-1]
    fft_size = 2 * seqlen
    k_f = torch.fft.rfft(k, n=fft_size) / fft_size
    u_f = torch.fft.rfft(u.to(dtype=k.dtype), n=fft_size)
    y = torch.fft.irfft(u_f * k_f, n=fft_size, norm="forward")[..., :seqlen]
    out = y + u * D.unsqueeze(-1)
    return out.to(dtype=u.dtype)


class Sin(nn.Module):
    def __init__(self, dim: int, w: float = 10.0):
        super().__init__()
        self.freq = nn.Parameter(w * torch.ones(1, dim))

    def forward(self, x):
        return torch.sin(self.freq * x)


class ImplicitFilter(nn.Module):
    """Hyena's implicit long filter: an MLP over a positional encoding of t, times a decay window.
    As in the public Hyena code, the encoding is computed once for max_len positions and cut to
    the first L on each call, so the filter at length L is the first L taps of the one at max_len
    (which is what lets the exporter's max_length option store it)."""

    def __init__(self, channels: int, max_len: int, emb_dim: int = 9, hidden: int = 32, order: int = 2):
        super().__init__()
        bands = (emb_dim - 1) // 2
        t = torch.linspace(0, 1, max_len)[:, None]  # (max_len, 1)
        w = 2 * math.pi * torch.arange(max_len, dtype=torch.float32)[:, None] / max_len
        band_freqs = torch.linspace(1e-4, bands - 1, bands)[None, :]
        self.register_buffer("t", t, persistent=False)
        self.register_buffer("z", torch.cat([t, torch.cos(band_freqs * w), -torch.sin(band_freqs * w)], dim=-1),
                             persistent=False)
        layers = [nn.Linear(emb_dim, hidden), Sin(hidden)]
        for _ in range(order):
            layers += [nn.Linear(hidden, hidden), Sin(hidden)]
        layers.append(nn.Linear(hidden, channels, bias=False))
        self.mlp = nn.Sequential(*layers)
        max_decay, min_decay = math.log(1e-2) / 0.3, math.log(1e-2) / 1.5
        self.register_buffer("deltas", torch.linspace(min_decay, max_decay, channels)[None, :], persistent=False)

    def forward(self, seqlen: int) -> torch.Tensor:
        z, t = self.z[:seqlen], self.t[:seqlen]
        h = self.mlp(z) * torch.exp(-t * self.deltas.abs())  # (L, H)
        return h.transpose(0, 1)  # (H, L)


class HyenaOperator(nn.Module):
    """Order-2 Hyena operator: projections, short depthwise conv, gate, implicit long conv, gate."""

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.short_filter = nn.Conv1d(3 * d_model, 3 * d_model, kernel_size=3, padding=2, groups=3 * d_model)
        self.filter = ImplicitFilter(d_model, max_len)
        self.bias = nn.Parameter(torch.randn(d_model))

    def forward(self, x):  # (B, L, d)
        seqlen = x.shape[1]
        u = self.in_proj(x).transpose(1, 2)  # (B, 3d, L)
        u = self.short_filter(u)[..., :seqlen]
        x1, x2, v = u.chunk(3, dim=1)
        k = self.filter(seqlen)
        y = fft_long_conv(v * x1, k, self.bias)
        y = y * x2
        return self.out_proj(y.transpose(1, 2))


class HyenaBlock(nn.Module):
    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.mixer = HyenaOperator(d_model, max_len)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model))

    def forward(self, x):
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class HyenaStack(nn.Module):
    """Hyena blocks on (B, L, d) activations (the end-to-end benchmark's model)."""

    def __init__(self, d_model: int, n_layers: int, max_len: int):
        super().__init__()
        self.blocks = nn.ModuleList(HyenaBlock(d_model, max_len) for _ in range(n_layers))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class HyenaLM(nn.Module):
    """A small HyenaDNA-style model: token embedding, Hyena blocks, LM head."""

    def __init__(self, vocab: int = 16, d_model: int = 64, n_layers: int = 2, max_len: int = 4096):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.blocks = nn.ModuleList(HyenaBlock(d_model, max_len) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, tokens):  # (B, L) int64
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class LongConvStack(nn.Module):
    """Channels-first stack of FFT long convolutions with explicit filters (the benchmark's model)."""

    def __init__(self, channels: int, length: int, layers: int = 1):
        super().__init__()
        t = torch.arange(length, dtype=torch.float32)
        decay = torch.exp(-4.0 * t / length)
        self.k = nn.ParameterList(nn.Parameter(torch.randn(channels, length) * decay / math.sqrt(length))
                                  for _ in range(layers))
        self.D = nn.ParameterList(nn.Parameter(torch.randn(channels)) for _ in range(layers))

    def forward(self, u):  # (B, H, L)
        for k, D in zip(self.k, self.D):
            u = fft_long_conv(u, k[:, : u.shape[-1]], D)
        return u
