"""ONNX side of the op: its schema (for onnx and onnxscript) and the torch.onnx
(dynamo) translation of torch.ops.fftconv_rt.fftconv into one FFTConv node."""

from __future__ import annotations

import onnx
from onnx.defs import OpSchema
from onnxscript import values

from .spec import DOMAIN, OP_NAME, OP_VERSION, OP_VERSIONS, op_spec
from .spec import attributes as spec_attributes
from .spec import inputs as spec_inputs

_FLOAT_TYPES = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
# Type variable of each input, from op_spec.toml's "types" (u-typed inputs share T).
_TYPE_VARS = {"u": "T", "k": "TK", "D": "TD", "pregate": "T", "postgate": "T", "k_rev": "TR"}


def _build_schema(version: int) -> OpSchema:
    spec = op_spec()
    inputs = [
        OpSchema.FormalParameter(
            i["name"], _TYPE_VARS[i["name"]], i["shape"],
            param_option=(OpSchema.FormalParameterOption.Single if i["required"]
                          else OpSchema.FormalParameterOption.Optional))
        for i in spec_inputs(version)
    ]
    outputs = [OpSchema.FormalParameter(o["name"], "T", o["shape"]) for o in spec["outputs"]]
    attributes = [OpSchema.Attribute(name, onnx.helper.make_attribute(name, a["default"]), a.get("rule", ""))
                  for name, a in spec_attributes(version).items()]
    type_vars = sorted({_TYPE_VARS[i["name"]] for i in spec_inputs(version)})
    constraints = [(var, _FLOAT_TYPES, "float32, float16 or bfloat16") for var in type_vars]
    return OpSchema(OP_NAME, DOMAIN, version, spec["semantics"], inputs=inputs, outputs=outputs,
                    type_constraints=constraints, attributes=attributes)


def register_onnx_schema() -> None:
    """Makes onnx (checker, onnxscript) know fftconv_rt::FFTConv at every version; idempotent."""
    for version in OP_VERSIONS:
        registered = onnx.defs.has(OP_NAME, version, DOMAIN) and \
            onnx.defs.get_schema(OP_NAME, version, DOMAIN).since_version == version
        if not registered:
            onnx.defs.register_schema(_build_schema(version))


register_onnx_schema()
fftconv_opset = values.Opset(DOMAIN, OP_VERSION)


def fftconv_onnx(u, k, D=None, pregate=None, postgate=None, fft_size: int = 0, layout: str = "BHL",
                 freq_keep: int = 0, k_rev=None, period_scale: int = 0, max_length: int = 0):
    """Translation of torch.ops.fftconv_rt.fftconv: one FFTConv node of version 2 (the model imports
    the domain at version 2), omitted inputs left empty, and the attributes that are not at their
    default written (so that dense causal nodes read as before)."""
    attributes = {"fft_size": fft_size, "layout": layout}
    for name, value in (("freq_keep", freq_keep), ("period_scale", period_scale), ("max_length", max_length)):
        if value:
            attributes[name] = value
    if k_rev is not None:
        return fftconv_opset.FFTConv(u, k, D, pregate, postgate, k_rev, **attributes)
    return fftconv_opset.FFTConv(u, k, D, pregate, postgate, **attributes)


def custom_translation_table() -> dict:
    import torch

    from . import torch_op  # noqa: F401  (registers torch.ops.fftconv_rt.fftconv)

    return {torch.ops.fftconv_rt.fftconv.default: fftconv_onnx}
