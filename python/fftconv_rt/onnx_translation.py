"""ONNX side of the op: its schema (for onnx and onnxscript) and the torch.onnx
(dynamo) translation of torch.ops.fftconv_rt.fftconv into one FFTConv node."""

from __future__ import annotations

import onnx
from onnx.defs import OpSchema
from onnxscript import values

from .spec import DOMAIN, OP_NAME, OP_VERSION, op_spec

_FLOAT_TYPES = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
# Type variable of each input, from op_spec.toml's "types" (u-typed inputs share T).
_TYPE_VARS = {"u": "T", "k": "TK", "D": "TD", "pregate": "T", "postgate": "T"}


def _build_schema() -> OpSchema:
    spec = op_spec()
    inputs = [
        OpSchema.FormalParameter(
            i["name"], _TYPE_VARS[i["name"]], i["shape"],
            param_option=(OpSchema.FormalParameterOption.Single if i["required"]
                          else OpSchema.FormalParameterOption.Optional))
        for i in spec["inputs"]
    ]
    outputs = [OpSchema.FormalParameter(o["name"], "T", o["shape"]) for o in spec["outputs"]]
    attributes = [OpSchema.Attribute(name, onnx.helper.make_attribute(name, a["default"]), a.get("rule", ""))
                  for name, a in spec["attributes"].items()]
    constraints = [(var, _FLOAT_TYPES, "float32, float16 or bfloat16") for var in ("T", "TK", "TD")]
    return OpSchema(OP_NAME, DOMAIN, OP_VERSION, spec["semantics"], inputs=inputs, outputs=outputs,
                    type_constraints=constraints, attributes=attributes)


def register_onnx_schema() -> None:
    """Makes onnx (checker, onnxscript) know fftconv_rt::FFTConv; idempotent."""
    if not onnx.defs.has(OP_NAME, DOMAIN):
        onnx.defs.register_schema(_build_schema())


register_onnx_schema()
fftconv_opset = values.Opset(DOMAIN, OP_VERSION)


def fftconv_onnx(u, k, D=None, pregate=None, postgate=None, fft_size: int = 0, layout: str = "BHL",
                 freq_keep: int = 0):
    """Translation of torch.ops.fftconv_rt.fftconv: one FFTConv node, omitted inputs left empty
    (freq_keep written only when set, so that dense nodes read as before)."""
    if freq_keep:
        return fftconv_opset.FFTConv(u, k, D, pregate, postgate, fft_size=fft_size, layout=layout,
                                     freq_keep=freq_keep)
    return fftconv_opset.FFTConv(u, k, D, pregate, postgate, fft_size=fft_size, layout=layout)


def custom_translation_table() -> dict:
    import torch

    from . import torch_op  # noqa: F401  (registers torch.ops.fftconv_rt.fftconv)

    return {torch.ops.fftconv_rt.fftconv.default: fftconv_onnx}
