"""op_spec.toml is the single statement of the contract: the ONNX schema, the
C header's input order, the torch op's signature and the ORT op follow it, and
reference.py implements its semantics (checked here against direct sums and PyTorch)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from fftconv_rt import spec
from fftconv_rt.onnx_translation import register_onnx_schema
from fftconv_rt.reference import fftconv_reference, period_of, relative_error
from fftconv_rt.torch_op import fftconv

HEADER = Path(__file__).resolve().parent.parent / "csrc" / "include" / "fftconv_rt" / "fftconv.h"


@pytest.mark.parametrize("version", spec.OP_VERSIONS)
def test_onnx_schema_follows_spec(version):
    register_onnx_schema()
    schema = onnx.defs.get_schema(spec.OP_NAME, version, spec.DOMAIN)
    assert schema.since_version == version
    assert [i.name for i in schema.inputs] == spec.input_names(version)
    required = [i["required"] for i in spec.inputs(version)]
    options = [i.option == onnx.defs.OpSchema.FormalParameterOption.Single for i in schema.inputs]
    assert options == required
    assert set(schema.attributes) == set(spec.attributes(version))
    assert onnx.helper.get_attribute_value(schema.attributes["fft_size"].default_value) == 0
    assert onnx.helper.get_attribute_value(schema.attributes["layout"].default_value) == b"BHL"


def test_version_2_extends_version_1():
    assert spec.OP_VERSION == 2 and spec.OP_VERSIONS == (1, 2)
    assert spec.input_names(1) == ["u", "k", "D", "pregate", "postgate"]
    assert spec.input_names(2) == spec.input_names(1) + ["k_rev"]
    assert set(spec.attributes(2)) - set(spec.attributes(1)) == {"period_scale", "max_length"}
    for name in ("period_scale", "max_length"):
        assert spec.attributes(2)[name]["default"] == 0


def test_c_header_input_slots_follow_spec():
    text = HEADER.read_text()
    slots = re.findall(r"FFTCONV_INPUT_(\w+) = (\d)", text)
    assert [name.lower() for name, _ in sorted(slots, key=lambda s: int(s[1]))] == \
        [n.lower() for n in spec.input_names()]
    assert f"FFTCONV_NUM_INPUTS = {len(spec.input_names())}" in text


def test_c_header_attributes_follow_spec():
    struct = re.search(r"typedef struct fftconv_attributes \{(.*?)\} fftconv_attributes;", HEADER.read_text(), re.S)
    fields = re.findall(r"^\s*(?:int64_t|const char\*)\s+(\w+);", struct.group(1), re.M)
    assert set(fields) == set(spec.attributes())


def test_torch_op_signature_follows_spec():
    """Version-1 arguments first, in their old order (callers pass them by position), then
    version 2's new input and attributes."""
    params = list(inspect.signature(fftconv._init_fn).parameters)
    new_inputs = [n for n in spec.input_names(2) if n not in spec.input_names(1)]
    new_attributes = [a for a in spec.attributes(2) if a not in spec.attributes(1)]
    assert params == spec.input_names(1) + list(spec.attributes(1)) + new_inputs + new_attributes


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float16", 1e-3), ("bfloat16", 8e-3)])
def test_tolerances_are_design_md(dtype, tol):
    assert spec.tolerance(dtype) == tol


def _direct_two_sided(v, k, k_rev):
    """y[t] = sum_j k[j] v[t - j] + sum_j k_rev[j] v[t + j], by loops (lag 0 in both)."""
    L = v.shape[-1]
    y = np.zeros_like(v)
    for t in range(L):
        for j in range(k.shape[-1]):
            if t - j >= 0:
                y[..., t] += k[:, j] * v[..., t - j]
        for j in range(k_rev.shape[-1]):
            if t + j < L:
                y[..., t] += k_rev[:, j] * v[..., t + j]
    return y


@pytest.mark.parametrize("L,Lk,Lk_rev", [(17, 5, 9), (8, 20, 3), (1, 4, 4), (30, 30, 30)])
def test_reference_linear_two_sided_is_the_direct_sum(rng, L, Lk, Lk_rev):
    v = rng.standard_normal((2, 3, L))
    k, k_rev = rng.standard_normal((3, Lk)), rng.standard_normal((3, Lk_rev))
    assert relative_error(fftconv_reference(v, k, k_rev=k_rev), _direct_two_sided(v, k, k_rev)) < 1e-12


@pytest.mark.parametrize("L", [128, 300, 1024])
def test_reference_period_scale_is_monarch_mixers_bidirectional_conv(rng, L):
    """rfft(k_fwd, 2L) + conj(rfft(k_rev, 2L)) with fixed 512-tap filters: at L = 128 the taps past 2L
    are dropped by rfft, as period_scale does."""
    u, k, k_rev = rng.standard_normal((2, 3, L)), rng.standard_normal((3, 512)), rng.standard_normal((3, 512))
    K = torch.fft.rfft(torch.tensor(k), 2 * L) + torch.conj(torch.fft.rfft(torch.tensor(k_rev), 2 * L))
    want = torch.fft.irfft(torch.fft.rfft(torch.tensor(u), 2 * L) * K, 2 * L)[..., :L].numpy()
    assert relative_error(fftconv_reference(u, k, k_rev=k_rev, period_scale=2), want) < 1e-12


def test_reference_refuses_lengths_past_max_length(rng):
    u, k = rng.standard_normal((1, 2, 65)), rng.standard_normal((2, 8))
    with pytest.raises(ValueError, match="max_length"):
        fftconv_reference(u, k, max_length=64)
    assert fftconv_reference(u[..., :64], k, max_length=64).shape == (1, 2, 64)


def test_period_of():
    assert period_of(100, 30) == (129, False)
    assert period_of(100, 30, 60) == (159, False)
    assert period_of(100, 30, 60, fft_size=128) == (128, False)
    assert period_of(100, 300, 0, period_scale=2) == (200, False)
    assert period_of(100, 30, 0, freq_keep=10) == (200, True)
    assert period_of(128, 30, 0, freq_keep=10, period_scale=1) == (128, True)
    assert period_of(100, 30, 0, freq_keep=101) == (129, False)  # keeps every bin of 2L: the dense op
