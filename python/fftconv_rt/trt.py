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


def _constant_per_shape(graph) -> set:
    """Names of the graph's values computed from initializers, Constant nodes and input shapes
    only (a filter cut to L, say): their values are fixed for each shape of the inputs."""
    known = {t.name for t in graph.initializer}
    for node in graph.node:  # ONNX keeps nodes in topological order
        if node.op_type == "Constant" or node.op_type == "Shape" or (
                "Random" not in node.op_type and all(name == "" or name in known for name in node.input)):
            known.update(name for name in node.output if name)
    return known


def stamp_for_tensorrt(onnx_path: str | Path) -> int:
    """Adds to every FFTConv node of an ONNX file the attributes TensorRT's ONNX parser uses to
    find the plugin (plugin_version, plugin_namespace), which optional inputs are present
    (has_D, has_pregate, has_postgate, has_k_rev) and constant_filter = 1 where k (and k_rev)
    depend on initializers and input shapes only, so that the plugin keeps their spectrum per
    execution context and shape. ONNX Runtime ignores them. Returns the nodes stamped."""
    import onnx

    from .spec import DOMAIN, OP_NAME

    model = onnx.load(str(onnx_path))
    constant = _constant_per_shape(model.graph)
    count = 0
    for node in model.graph.node:
        if node.domain != DOMAIN or node.op_type != OP_NAME:
            continue
        present = [i < len(node.input) and node.input[i] != "" for i in range(6)]
        filters = [node.input[i] for i in (1, 5) if present[i]]
        stamps = {"plugin_version": PLUGIN_VERSION, "plugin_namespace": PLUGIN_NAMESPACE,
                  "has_D": int(present[2]), "has_pregate": int(present[3]), "has_postgate": int(present[4]),
                  "has_k_rev": int(present[5]), "constant_filter": int(all(f in constant for f in filters))}
        kept = [a for a in node.attribute if a.name not in stamps]
        del node.attribute[:]
        node.attribute.extend(kept + [onnx.helper.make_attribute(k, v) for k, v in stamps.items()])
        count += 1
    onnx.save(model, str(onnx_path))
    return count


# ---- the plugin without TensorRT's libraries ---------------------------------------------------
HARNESS_LIBRARY = "libfftconv_trt_harness.so"
_FIELD_INT32, _FIELD_CHAR, _FIELD_INT64 = 5, 6, 10  # PluginFieldType
_ONNX_TYPES = {"float32": 1, "float16": 10, "bfloat16": 16, "int32": 6}
_ITEM_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int32": 4}
_MAX_RANK = 8


class PluginError(RuntimeError):
    """A plugin method refused or failed (the message is the plugin's, as TensorRT would log it)."""


class PluginHarness:
    """TensorRT's builder and runtime steps around the FFTConv plugin, run without TensorRT's
    libraries through libfftconv_trt_harness.so (built beside the plugin): the creator makes the
    plugin from fields, `configure` is the builder's side for one shape range, `deserialize` the
    engine's serialization round trip, `attach` an execution context's clone, and
    `shape_change`/`enqueue` what a context does per call. Device memory and streams come with it.

    Tensors are described by (dtype name, shape); device data by integer addresses."""

    def __init__(self, library: str | Path | None = None):
        import ctypes

        self._ct = ctypes
        path = Path(library) if library else find_library(HARNESS_LIBRARY)
        lib = ctypes.CDLL(str(path))
        p, i32, i64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64
        i32p, i64p = ctypes.POINTER(i32), ctypes.POINTER(i64)
        signatures = {
            "trth_last_error": (ctypes.c_char_p, []),
            "trth_create": (p, [i32, ctypes.POINTER(ctypes.c_char_p), i32p, ctypes.POINTER(p), i32p]),
            "trth_destroy": (None, [p]),
            "trth_configure": (i64, [p, i32, i32p, i32p, i64p, i64p, i64p]),
            "trth_deserialize": (p, [p]),
            "trth_attach": (p, [p]),
            "trth_fields": (i32, [p, ctypes.c_char_p, i32]),
            "trth_shape_change": (i32, [p, i32, i32p, i32p, i64p]),
            "trth_enqueue": (i32, [p, i32, i32p, i32p, i64p, ctypes.POINTER(p), p, p, p]),
            "trth_time_enqueue": (i32, [p, i32, i32p, i32p, i64p, ctypes.POINTER(p), p, p, p, i32,
                                        ctypes.POINTER(ctypes.c_float)]),
            "trth_malloc": (p, [i64]),
            "trth_free": (None, [p]),
            "trth_upload": (i32, [p, p, i64]),
            "trth_download": (i32, [p, p, i64]),
            "trth_fill": (i32, [p, i32, i64]),
            "trth_stream_create": (p, []),
            "trth_stream_destroy": (None, [p]),
            "trth_stream_synchronize": (i32, [p]),
            "trth_device_name": (i32, [ctypes.c_char_p, i32]),
        }
        for name, (restype, argtypes) in signatures.items():
            function = getattr(lib, name)
            function.restype, function.argtypes = restype, argtypes
        self.lib = lib

    def error(self) -> str:
        return self.lib.trth_last_error().decode()

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            raise PluginError(f"{what}: {self.error()}")

    # -- building --
    def create(self, fields: dict, int64_fields: bool = False) -> "HarnessPlugin":
        """The creator's createPlugin from fields: ints go as INT32 (as TensorRT's ONNX parser
        passes them; INT64 with int64_fields), strings as CHAR without a terminator."""
        ct = self._ct
        names, types, data, lengths, keep = [], [], [], [], []
        for name, value in fields.items():
            if isinstance(value, str):
                buffer = ct.create_string_buffer(value.encode(), len(value))
                kind, length = _FIELD_CHAR, len(value)
            else:
                buffer = (ct.c_int64 if int64_fields else ct.c_int32)(int(value))
                kind, length = (_FIELD_INT64 if int64_fields else _FIELD_INT32), 1
            keep.append(buffer)
            names.append(name.encode())
            types.append(kind)
            data.append(ct.cast(ct.pointer(buffer), ct.c_void_p))
            lengths.append(length)
        n = len(names)
        handle = self.lib.trth_create(n, (ct.c_char_p * n)(*names), (ct.c_int32 * n)(*types),
                                      (ct.c_void_p * n)(*data), (ct.c_int32 * n)(*lengths))
        if not handle:
            raise PluginError(f"createPlugin: {self.error()}")
        return HarnessPlugin(self, handle)

    def _descs(self, dtypes, *shape_lists):
        ct = self._ct
        n = len(dtypes)
        types = (ct.c_int32 * n)(*[_ONNX_TYPES[d] for d in dtypes])
        ranks = (ct.c_int32 * n)(*[len(s) for s in shape_lists[0]])
        dims = []
        for shapes in shape_lists:
            flat = (ct.c_int64 * (n * _MAX_RANK))()
            for i, shape in enumerate(shapes):
                for r, extent in enumerate(shape):
                    flat[i * _MAX_RANK + r] = int(extent)
            dims.append(flat)
        return n, types, ranks, dims

    # -- device memory and streams --
    def malloc(self, nbytes: int) -> int:
        address = self.lib.trth_malloc(int(nbytes))
        if not address:
            raise PluginError(self.error())
        return address

    def free(self, address: int) -> None:
        self.lib.trth_free(address)

    def upload(self, address: int, array) -> None:
        import numpy as np

        array = np.ascontiguousarray(array)
        self._check(self.lib.trth_upload(address, array.ctypes.data, array.nbytes), "upload")

    def download(self, address: int, dtype, shape):
        import numpy as np

        out = np.empty(shape, dtype=dtype)
        self._check(self.lib.trth_download(out.ctypes.data, address, out.nbytes), "download")
        return out

    def fill(self, address: int, byte: int, nbytes: int) -> None:
        self._check(self.lib.trth_fill(address, byte, int(nbytes)), "fill")

    def stream(self) -> int:
        handle = self.lib.trth_stream_create()
        if not handle:
            raise PluginError("cudaStreamCreate failed")
        return handle

    def destroy_stream(self, stream: int) -> None:
        self.lib.trth_stream_destroy(stream)

    def synchronize(self, stream: int) -> None:
        self._check(self.lib.trth_stream_synchronize(stream), "synchronize")

    def device_name(self) -> str:
        buffer = self._ct.create_string_buffer(256)
        self._check(self.lib.trth_device_name(buffer, 256), "device name")
        return buffer.value.decode()


class HarnessPlugin:
    """One plugin object (the builder's, an engine's or an execution context's)."""

    def __init__(self, harness: PluginHarness, handle: int):
        self.harness, self.handle = harness, handle

    def __del__(self):
        if self.handle:
            self.harness.lib.trth_destroy(self.handle)
            self.handle = None

    def configure(self, dtypes, min_shapes, opt_shapes=None, max_shapes=None) -> int:
        """Output type, format combinations, configurePlugin and getWorkspaceSize for a shape range;
        the workspace bytes."""
        opt_shapes = opt_shapes or min_shapes
        max_shapes = max_shapes or opt_shapes
        n, types, ranks, (low, opt, high) = self.harness._descs(dtypes, min_shapes, opt_shapes, max_shapes)
        workspace = self.harness.lib.trth_configure(self.handle, n, types, ranks, low, opt, high)
        if workspace < 0:
            raise PluginError(f"building: {self.harness.error()}")
        return workspace

    def deserialize(self) -> "HarnessPlugin":
        handle = self.harness.lib.trth_deserialize(self.handle)
        if not handle:
            raise PluginError(f"createPlugin from the serialized fields: {self.harness.error()}")
        return HarnessPlugin(self.harness, handle)

    def attach(self) -> "HarnessPlugin":
        handle = self.harness.lib.trth_attach(self.handle)
        if not handle:
            raise PluginError(f"attachToContext: {self.harness.error()}")
        return HarnessPlugin(self.harness, handle)

    def fields(self) -> dict:
        buffer = self.harness._ct.create_string_buffer(4096)
        if self.harness.lib.trth_fields(self.handle, buffer, 4096) != 0:
            raise PluginError(self.harness.error())
        return dict(item.split("=", 1) for item in buffer.value.decode().split(";") if item)

    def shape_change(self, dtypes, shapes) -> None:
        n, types, ranks, (dims,) = self.harness._descs(dtypes, shapes)
        if self.harness.lib.trth_shape_change(self.handle, n, types, ranks, dims) != 0:
            raise PluginError(f"onShapeChange: {self.harness.error()}")

    def _call_args(self, dtypes, shapes, inputs):
        ct = self.harness._ct
        n, types, ranks, (dims,) = self.harness._descs(dtypes, shapes)
        return n, types, ranks, dims, (ct.c_void_p * n)(*inputs)

    def enqueue(self, dtypes, shapes, inputs, output: int, workspace: int, stream: int) -> None:
        args = self._call_args(dtypes, shapes, inputs)
        if self.harness.lib.trth_enqueue(self.handle, *args, output, workspace, stream) != 0:
            raise PluginError(f"enqueue: {self.harness.error()}")

    def time_enqueue(self, dtypes, shapes, inputs, output: int, workspace: int, stream: int, count: int) -> list:
        """Milliseconds of `count` enqueues (CUDA events around each), after one untimed."""
        times = (self.harness._ct.c_float * count)()
        args = self._call_args(dtypes, shapes, inputs)
        if self.harness.lib.trth_time_enqueue(self.handle, *args, output, workspace, stream, count, times) != 0:
            raise PluginError(f"timed enqueue: {self.harness.error()}")
        return list(times)
