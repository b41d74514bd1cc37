"""A Triton Inference Server model repository for an ONNX model with FFTConv nodes.

The repository holds `<name>/config.pbtxt`, `<name>/1/model.onnx` and the custom-op library;
the config makes Triton's ONNX Runtime backend load the library (`model_operations`) and turns
dynamic batching on.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from ._lib import ort_library_path

# ONNX TensorProto element types -> Triton data types
_TRITON_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 16: "TYPE_BF16", 11: "TYPE_FP64", 7: "TYPE_INT64",
                 6: "TYPE_INT32", 9: "TYPE_BOOL", 3: "TYPE_INT8", 2: "TYPE_UINT8"}


def _tensor_entries(values, batched: bool, kind: str) -> list[str]:
    entries = []
    for v in values:
        t = v.type.tensor_type
        if t.elem_type not in _TRITON_TYPES:
            raise ValueError(f"fftconv-rt triton-repo: {kind} '{v.name}' has ONNX element type {t.elem_type}, "
                             f"which Triton cannot serve")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if batched:
            dims = dims[1:]  # Triton lists dimensions without the batch
        entries.append(f'  {{\n    name: "{v.name}"\n    data_type: {_TRITON_TYPES[t.elem_type]}\n'
                       f'    dims: [ {", ".join(str(d) for d in dims)} ]\n  }}')
    return entries


def write_triton_repository(onnx_path: str | Path, repository: str | Path, name: Optional[str] = None, *,
                            max_batch_size: int = 8, instance_kind: str = "KIND_GPU",
                            library_path_in_server: Optional[str] = None) -> Path:
    """Writes repository/<name>/ (config.pbtxt, 1/model.onnx, libfftconv_ort.so) and returns the
    config's path.

    max_batch_size: > 0 when the model's first dimension is the batch (dynamic batching on);
    0 serves the model as it is, without batching.
    library_path_in_server: where the server sees the copied library (default: the repository
    mounted at /models, as in Triton's quick start).
    """
    import onnx

    if instance_kind not in ("KIND_GPU", "KIND_CPU"):
        raise ValueError(f"fftconv-rt triton-repo: instance kind must be KIND_GPU or KIND_CPU, got {instance_kind!r}")
    if max_batch_size < 0:
        raise ValueError(f"fftconv-rt triton-repo: max_batch_size must be >= 0, got {max_batch_size}")
    onnx_path = Path(onnx_path)
    model = onnx.load(str(onnx_path), load_external_data=False)
    name = name or onnx_path.stem
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    batched = max_batch_size > 0
    if batched:
        for v in list(inputs) + list(model.graph.output):
            dims = v.type.tensor_type.shape.dim
            if not dims or dims[0].HasField("dim_value"):
                raise ValueError(f"fftconv-rt triton-repo: '{v.name}' has no dynamic first (batch) dimension; "
                                 "export with a dynamic batch or pass max_batch_size=0")
    folder = Path(repository) / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, folder / "1" / "model.onnx")
    library = Path(ort_library_path())
    shutil.copyfile(library, folder / library.name)
    library_in_server = library_path_in_server or f"/models/{name}/{library.name}"
    lines = [f'name: "{name}"', 'backend: "onnxruntime"', f"max_batch_size: {max_batch_size}",
             "input [", ",\n".join(_tensor_entries(inputs, batched, "input")), "]",
             "output [", ",\n".join(_tensor_entries(model.graph.output, batched, "output")), "]",
             f"instance_group [\n  {{\n    count: 1\n    kind: {instance_kind}\n  }}\n]",
             f'model_operations {{\n  op_library_filename: "{library_in_server}"\n}}']
    if batched:
        lines.append("dynamic_batching {\n  max_queue_delay_microseconds: 100\n}")
    config = folder / "config.pbtxt"
    config.write_text("\n".join(lines) + "\n")
    return config
