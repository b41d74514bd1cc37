"""op_spec.toml is the single statement of the contract: the ONNX schema, the
C header's input order, the torch op's signature and the ORT op follow it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import onnx
import pytest

from fftconv_rt import spec
from fftconv_rt.onnx_translation import register_onnx_schema
from fftconv_rt.torch_op import fftconv

HEADER = Path(__file__).resolve().parent.parent / "csrc" / "include" / "fftconv_rt" / "fftconv.h"


def test_onnx_schema_follows_spec():
    register_onnx_schema()
    schema = onnx.defs.get_schema(spec.OP_NAME, spec.OP_VERSION, spec.DOMAIN)
    assert [i.name for i in schema.inputs] == spec.input_names()
    required = [i["required"] for i in spec.op_spec()["inputs"]]
    options = [i.option == onnx.defs.OpSchema.FormalParameterOption.Single for i in schema.inputs]
    assert options == required
    assert set(schema.attributes) == set(spec.op_spec()["attributes"])
    assert onnx.helper.get_attribute_value(schema.attributes["fft_size"].default_value) == 0
    assert onnx.helper.get_attribute_value(schema.attributes["layout"].default_value) == b"BHL"


def test_c_header_input_slots_follow_spec():
    text = HEADER.read_text()
    slots = re.findall(r"FFTCONV_INPUT_(\w+) = (\d)", text)
    assert [name.lower() for name, _ in sorted(slots, key=lambda s: int(s[1]))] == \
        [n.lower() for n in spec.input_names()]


def test_torch_op_signature_follows_spec():
    params = list(inspect.signature(fftconv._init_fn).parameters)
    assert params == spec.input_names() + list(spec.op_spec()["attributes"])


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float16", 1e-3), ("bfloat16", 8e-3)])
def test_tolerances_are_design_md(dtype, tol):
    assert spec.tolerance(dtype) == tol
