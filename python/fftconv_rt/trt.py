"""TensorRT: the FFTConv plugin library, engines built from exported models, and running them.

The `tensorrt` Python module (NVIDIA's wheel, with its libraries) is needed to build or run an
engine; without it these functions raise an ImportError that says what is missing. The plugin
(`libfftconv_trt.so`) is built by CMake wherever TensorRT's headers are given
(FFTCONV_TENSORRT_INCLUDE_DIR) together with the CUDA kernels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ._lib import find_library

TRT_LIBRARY = "libfftconv_trt.so"
PLUGIN_NAMESPACE = "fftconv_rt"
PLUGIN_VERSION = "1"


def trt_plugin_path() -> str:
    """Path of the TensorRT plugin library (for trtexec --dynamicPlugins, polygraphy --plugins)."""
    return str(find_library(TRT_LIBRARY))


def _tensorrt():
    try:
        import tensorrt
    except ImportError as e:
        raise ImportError("fftconv-rt: building or running a TensorRT engine needs the `tensorrt` Python module "
                          "(NVIDIA's TensorRT 10 or 11 wheel, with its libraries) and a GPU; it is not installed "
                          "here. The plugin library itself is " + TRT_LIBRARY + ".") from e
    return tensorrt


def build_trt_engine(onnx_path: str | Path, fp16: bool = False, shapes: Optional[dict] = None,
                     workspace_bytes: Optional[int] = None) -> bytes:
    """A serialized TensorRT engine for an ONNX model exported with tensorrt=True (its FFTConv
    nodes carry plugin_version/plugin_namespace), with the plugin loaded.

    shapes: {input name: (min, opt, max)} for dynamic dimensions.
    """
    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    trt.get_plugin_registry().load_library(trt_plugin_path())
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"fftconv-rt: TensorRT's ONNX parser refused {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"fftconv-rt: TensorRT could not build an engine for {onnx_path} (see its log above)")
    return bytes(engine)


def run_trt_engine(engine_bytes: bytes, inputs: dict, outputs: dict) -> None:
    """Runs a serialized engine on torch CUDA tensors: inputs and outputs map tensor names to
    preallocated, contiguous device tensors; runs on torch's current stream."""
    import torch

    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    trt.get_plugin_registry().load_library(trt_plugin_path())
    engine = trt.Runtime(logger).deserialize_cuda_engine(engine_bytes)
    context = engine.create_execution_context()
    for name, tensor in inputs.items():
        context.set_input_shape(name, tuple(tensor.shape))
        context.set_tensor_address(name, tensor.data_ptr())
    for name, tensor in outputs.items():
        context.set_tensor_address(name, tensor.data_ptr())
    if not context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
        raise RuntimeError("fftconv-rt: TensorRT failed to run the engine (see its log above)")


def stamp_for_tensorrt(onnx_path: str | Path) -> int:
    """Adds to every FFTConv node of an ONNX file the attributes TensorRT's ONNX parser uses to
    find the plugin (plugin_version, plugin_namespace) and which optional inputs are present
    (has_D, has_pregate, has_postgate). ONNX Runtime ignores them. Returns the nodes stamped."""
    import onnx

    from .spec import DOMAIN, OP_NAME

    model = onnx.load(str(onnx_path))
    count = 0
    for node in model.graph.node:
        if node.domain != DOMAIN or node.op_type != OP_NAME:
            continue
        present = [i < len(node.input) and node.input[i] != "" for i in range(5)]
        stamps = {"plugin_version": PLUGIN_VERSION, "plugin_namespace": PLUGIN_NAMESPACE,
                  "has_D": int(present[2]), "has_pregate": int(present[3]), "has_postgate": int(present[4])}
        kept = [a for a in node.attribute if a.name not in stamps]
        del node.attribute[:]
        node.attribute.extend(kept + [onnx.helper.make_attribute(k, v) for k, v in stamps.items()])
        count += 1
    onnx.save(model, str(onnx_path))
    return count
