"""Validation of an exported model: PyTorch against ONNX Runtime (with the
FFTConv library) through Polygraphy's Comparator, plus the op-contract metric
max|y - ref| / max|ref| per output."""

from __future__ import annotations

import copy
import sys
import time
import types
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from .reference import relative_error
from .spec import tolerance


def _to_numpy(t) -> np.ndarray:
    """A contiguous array (Polygraphy views outputs as flat buffers; a model may return a slice)."""
    import torch

    if isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        t = t.numpy()
    return np.ascontiguousarray(t)


class ModelRunError(RuntimeError):
    """A runtime could not run the ONNX model on the inputs given (the message says which inputs
    were given and which the model declares)."""


def median_ms(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() in milliseconds over `repeats` calls, after `warmup` calls that
    are not timed (first-call allocations, lazy initialisation, prepared filter spectra)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


@contextmanager
def _eval_mode(model):
    """The model in eval mode for the comparison, the caller's train/eval flags put back after.
    A module loaded from a .pt2 (torch.export) has its mode fixed at export and refuses eval()."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
    except NotImplementedError:
        pass
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def _flatten_outputs(out) -> list:
    if isinstance(out, (list, tuple)):
        flat = []
        for o in out:
            flat.extend(_flatten_outputs(o))
        return flat
    return [out]


def _float64_reference(model):
    """A float64 copy of a float32 model, whose outputs are then the reference the spec's
    tolerances are defined against (a float32 reference adds its own rounding: on a HyenaDNA-style
    model with max_len 2.3M, ORT differed from PyTorch float32 by 1.0e-5 at L = 4K, past the
    float32 tolerance, and PyTorch float32 itself from float64 by 8.9e-6); other models as they
    are. Returns (model, its float dtype or None)."""
    import torch

    floats = [t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]
    if not floats or any(t.dtype != torch.float32 for t in floats):
        return model, None
    with warnings.catch_warnings():  # copying a torch.export module: torch's own deprecation notice
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")
        return copy.deepcopy(model).double(), torch.float64


def _torch_runner_class():
    from polygraphy.backend.base import BaseRunner

    class TorchRunner(BaseRunner):
        """A Polygraphy runner for a PyTorch module on any device (Polygraphy's PytRunner needs CUDA)."""

        def __init__(self, model, input_metadata: "TensorMetadata", output_names: Sequence[str],
                     device="cpu", name: Optional[str] = None):
            super().__init__(name=name, prefix="torch-runner")
            self.float32_model = model
            self.model, self.float_dtype = _float64_reference(model)
            self.input_metadata, self.output_names, self.device = input_metadata, list(output_names), device
            self.input_names = list(input_metadata.keys())
            self.inferences = 0

        def activate_impl(self):
            pass

        def get_input_metadata_impl(self):
            return self.input_metadata

        def infer_impl(self, feed_dict):
            import torch

            inputs = [torch.from_numpy(np.asarray(feed_dict[n])).to(self.device) for n in self.input_names]
            first = self.inferences == 0
            self.inferences += 1
            if self.float_dtype is not None:
                try:
                    return self._infer(inputs, self.float_dtype)
                except (RuntimeError, ValueError):
                    if not first:
                        raise
                    # the model makes float32 tensors of its own (an explicit dtype), or calls an op that
                    # has no float64 (fftconv_rt's own refuses it with FFTConvError): float32 reference
                    self.model, self.float_dtype = self.float32_model, None
            return self._infer(inputs, None)

        def _infer(self, inputs, float_dtype):
            """Outputs of the model; with float_dtype (the float64 copy), its float inputs and the
            tensors it creates without a dtype in that type, and its outputs back in float32."""
            import torch

            default_dtype = torch.get_default_dtype()
            if float_dtype is not None:
                inputs = [x.to(float_dtype) if x.is_floating_point() else x for x in inputs]
                torch.set_default_dtype(float_dtype)
            try:
                start = time.perf_counter()
                with torch.no_grad():
                    outputs = _flatten_outputs(self.model(*inputs))
                self.inference_time = time.perf_counter() - start  # Polygraphy sums it; the report times apart
            finally:
                torch.set_default_dtype(default_dtype)
            if float_dtype is not None:
                outputs = [o.float() if isinstance(o, torch.Tensor) and o.is_floating_point() else o for o in outputs]
            return OrderedDict((n, _to_numpy(o)) for n, o in zip(self.output_names, outputs))

        def deactivate_impl(self):
            pass

    return TorchRunner


@dataclass
class OutputCheck:
    name: str
    runner: str
    relative_error: float   # worst max|y - ref| / max|ref| over the inputs
    tolerance: float
    float32_error: Optional[float] = None  # PyTorch float32's own against the float64 reference

    @property
    def passed(self) -> bool:
        return self.relative_error <= self.tolerance


@dataclass
class ValidationReport:
    checks: list = field(default_factory=list)
    polygraphy_passed: bool = False
    runner_times_ms: dict = field(default_factory=dict)  # runner -> median ms (timing below)
    timing: str = ""  # how runner_times_ms was taken: runs, warm-up, which inputs

    @property
    def passed(self) -> bool:
        return self.polygraphy_passed and all(c.passed for c in self.checks)

    def __str__(self) -> str:
        lines = [f"validation: {'PASSED' if self.passed else 'FAILED'} "
                 f"(Polygraphy Comparator: {'passed' if self.polygraphy_passed else 'failed'})"]
        for c in self.checks:
            own = "" if c.float32_error is None else f"; PyTorch float32 itself {c.float32_error:.1e}"
            lines.append(f"  {c.runner:24s} {c.name:16s} max|y-ref|/max|ref| = {c.relative_error:.3e} "
                         f"(tolerance {c.tolerance:.2g}{own}) {'ok' if c.passed else 'FAIL'}")
        if self.runner_times_ms:
            lines.append(f"  timing: {self.timing}")
        for runner, ms in self.runner_times_ms.items():
            lines.append(f"  {runner:24s} {ms:.2f} ms")
        return "\n".join(lines)


def _float32_errors(model, torch_runner, feeds: list, output_names: list, ref_runs, device: str) -> dict:
    """Per output, PyTorch float32's own worst error against the float64 reference (none when
    the reference is the model itself): an ill-conditioned model is not computed more exactly
    than that in float32, by any runtime."""
    if torch_runner.float_dtype is None:
        return {}
    import torch

    worst = {}
    for feed, ref_out in zip(feeds, ref_runs):
        inputs = [torch.from_numpy(np.asarray(feed[n])).to(device) for n in torch_runner.input_names]
        with torch.no_grad():
            outputs = _flatten_outputs(model(*inputs))
        for name, out in zip(output_names, outputs):
            worst[name] = max(worst.get(name, 0.0), relative_error(_to_numpy(out), ref_out[name]))
    return worst


def _tensorrt_runner(onnx_path: str, feeds: list):
    """Polygraphy's TrtRunner with the FFTConv plugin loaded, where TensorRT, the plugin library and
    a GPU are present (an optimisation profile spanning the given inputs); else None."""
    try:
        import tensorrt  # noqa: F401
        from polygraphy.backend.trt import (CreateConfig, EngineFromNetwork, LoadPlugins, NetworkFromOnnxPath,
                                            Profile, TrtRunner)

        from .trt import trt_plugin_path

        plugin = trt_plugin_path()
    except (ImportError, FileNotFoundError):
        return None
    profile = Profile()
    for name in feeds[0]:
        shapes = [feed[name].shape for feed in feeds]
        low = tuple(min(s[i] for s in shapes) for i in range(len(shapes[0])))
        high = tuple(max(s[i] for s in shapes) for i in range(len(shapes[0])))
        profile.add(name, min=low, opt=high, max=high)
    network = LoadPlugins(plugins=[plugin], obj=NetworkFromOnnxPath(onnx_path))
    return TrtRunner(EngineFromNetwork(network, config=CreateConfig(profiles=[profile])), name="tensorrt+fftconv")


def _provider_sets(providers) -> list[list[str]]:
    if providers:
        return [list(providers)]
    import onnxruntime

    sets = [["CPUExecutionProvider"]]
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        sets.append(["CUDAExecutionProvider", "CPUExecutionProvider"])
    return sets


def _declared_inputs(graph) -> list[tuple[str, Optional[np.dtype], Optional[list]]]:
    """(name, NumPy dtype or None, dims or None) of the graph's inputs that are not initializers;
    a dim is an int when static, else its symbolic name (or None)."""
    from onnx import helper

    initializers = {i.name for i in graph.initializer}
    declared = []
    for value in graph.input:
        if value.name in initializers:
            continue
        t = value.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)) if t.elem_type else None
        except (KeyError, TypeError):
            dtype = None
        dims = None
        if t.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
        declared.append((value.name, dtype, dims))
    return declared


def _describe_declared(declared) -> str:
    def dim(d):
        return "?" if d is None else str(d)

    return ", ".join(f"{name}: {dtype.name if dtype is not None else '?'} "
                     f"{'[' + ', '.join(dim(d) for d in dims) + ']' if dims is not None else '(any shape)'}"
                     for name, dtype, dims in declared)


def _describe_feed(feed) -> str:
    return ", ".join(f"{name}: {a.dtype.name} {tuple(a.shape)}" for name, a in feed.items())


def _check_feeds(onnx_path, declared, feeds) -> None:
    """Refuses inputs whose type, rank or static sizes differ from what the model declares."""
    for index, feed in enumerate(feeds):
        for (name, dtype, dims), value in zip(declared, feed.values()):
            wrong = ((dtype is not None and value.dtype != dtype)
                     or (dims is not None and (len(dims) != value.ndim
                                               or any(isinstance(d, int) and d > 0 and d != n
                                                      for d, n in zip(dims, value.shape)))))
            if wrong:
                raise ValueError(f"fftconv-rt validate: input set {index} does not match {onnx_path}: '{name}' is "
                                 f"{value.dtype.name} {tuple(value.shape)}; the model's inputs are "
                                 f"{_describe_declared(declared)}")


def _runtime_errors() -> tuple:
    """The exception types ONNX Runtime raises when it cannot load or run a model."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return tuple(v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception))


def _runtime_message(error: Exception) -> str:
    """ONNX Runtime's message without its "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : " code."""
    text = str(error)
    return text.split(" : ", 3)[-1] if text.startswith("[ONNXRuntimeError]") else text


def _time_runners(model, device, sessions: dict, other_runners: list, feed, repeats: int) -> dict:
    """Median ms of PyTorch (the model as given, eval, no_grad) and of each session/runner on one
    input set, after a warm-up."""
    import torch

    inputs = [torch.from_numpy(np.asarray(a)).to(device) for a in feed.values()]
    times = {}
    with torch.no_grad():
        times["pytorch"] = median_ms(lambda: model(*inputs), repeats)
    for name, session in sessions.items():
        times[name] = median_ms(lambda: session.run(None, dict(feed)), repeats)
    for runner in other_runners:
        with runner:
            times[runner.name] = median_ms(lambda: runner.infer(feed), repeats)
    return times


def validate(model, onnx_path: str, inputs: Iterable[Sequence[Any]], *, providers: Optional[Sequence] = None,
             tolerance_value: Optional[float] = None, device: str = "cpu",
             timing_repeats: int = 5) -> ValidationReport:
    """Runs `model` (PyTorch) and the ONNX model under ONNX Runtime with the FFTConv library on
    each input tuple, compares them with Polygraphy's Comparator and with the op metric.

    The reference of a float32 model is its float64 copy, as for the spec's tolerances; the
    tolerance is then at least twice PyTorch float32's own error (an ill-conditioned model cannot
    be computed closer in float32), which the report gives.
    tolerance_value: allowed max|y - ref| / max|ref| (default: the spec's for the output dtype).
    providers: ONNX Runtime providers of the one session to compare (default: one session on the
    CPU and, where onnxruntime has the CUDA provider, one on CUDA, all in one Comparator run).
    Where TensorRT and the fftconv-rt plugin are present, a TensorRT engine (Polygraphy's
    TrtRunner, plugin loaded; the model exported with tensorrt=True) joins the comparison.
    timing_repeats: after the comparison, PyTorch (the model as given) and each runtime are timed
    on the largest input set, median of this many runs after one warm-up run; 0: no timing.
    The model runs in eval mode; its own train/eval flags are left as they were.
    Inputs whose type, rank or static sizes differ from the ONNX model's raise ValueError, and a
    runtime failing on them ModelRunError, both naming the inputs given and those declared.
    """
    import onnx
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.comparator import Comparator

    try:  # Polygraphy >= 0.50 names it SimpleCompareFunc; CompareFunc.simple is deprecated
        from polygraphy.comparator import SimpleCompareFunc as simple_compare
    except ImportError:
        from polygraphy.comparator import CompareFunc

        simple_compare = CompareFunc.simple

    from .ort import make_session

    if timing_repeats < 0:
        raise ValueError(f"fftconv-rt validate: timing_repeats must be >= 0, got {timing_repeats}")
    onnx_model = onnx.load(onnx_path, load_external_data=False)
    declared = _declared_inputs(onnx_model.graph)
    input_names = [name for name, _, _ in declared]
    output_names = [o.name for o in onnx_model.graph.output]

    feeds = []
    for args in inputs:
        args = args if isinstance(args, (list, tuple)) else (args,)
        if len(args) != len(input_names):
            raise ValueError(f"fftconv-rt validate: {onnx_path} takes {len(input_names)} inputs "
                             f"({_describe_declared(declared)}), got {len(args)}")
        feeds.append(OrderedDict((n, _to_numpy(a)) for n, a in zip(input_names, args)))
    if not feeds:
        raise ValueError("fftconv-rt validate: no inputs given")
    _check_feeds(onnx_path, declared, feeds)

    from polygraphy.common import TensorMetadata

    metadata = TensorMetadata()
    for name, value in feeds[0].items():  # dynamic dimensions: any size
        metadata.add(name, dtype=value.dtype, shape=[None] * value.ndim)
    with _eval_mode(model):
        torch_runner = _torch_runner_class()(model, metadata, output_names, device=device, name="pytorch")
        sessions = {}
        for provider_list in _provider_sets(providers):
            session = make_session(onnx_path, providers=provider_list)
            sessions["onnxruntime+fftconv[" + ",".join(p.replace("ExecutionProvider", "")
                                                       for p in session.get_providers()) + "]"] = session
        ort_runners = [OnnxrtRunner(session, name=name) for name, session in sessions.items()]
        trt_runner = _tensorrt_runner(onnx_path, feeds)
        try:
            results = Comparator.run([torch_runner] + ort_runners + ([trt_runner] if trt_runner else []),
                                     data_loader=feeds)
        except _runtime_errors() as e:
            raise ModelRunError(f"fftconv-rt validate: ONNX Runtime cannot run {onnx_path} on the inputs given "
                                f"({'; '.join(_describe_feed(f) for f in feeds)}); the model's inputs are "
                                f"{_describe_declared(declared)}: {_runtime_message(e)}") from e
        if trt_runner:
            ort_runners.append(trt_runner)  # checked like the ONNX Runtime runners below

        report = ValidationReport()
        ref_runs = dict(results)[torch_runner.name]
        float32_errors = _float32_errors(model, torch_runner, feeds, output_names, ref_runs, device)
        if timing_repeats:
            largest = max(range(len(feeds)), key=lambda i: sum(a.size for a in feeds[i].values()))
            report.runner_times_ms = _time_runners(model, device, sessions, [trt_runner] if trt_runner else [],
                                                   feeds[largest], timing_repeats)
            report.timing = (f"median of {timing_repeats} runs after a warm-up run, input set {largest} "
                             f"({_describe_feed(feeds[largest])})")
    atol = {}
    for name in output_names:
        for ort_runner in ort_runners:
            ort_runs = dict(results)[ort_runner.name]
            dtype = ort_runs[0][name].dtype
            dtype_name = "bfloat16" if dtype.name == "bfloat16" else np.dtype(dtype).name
            tol = tolerance_value if tolerance_value is not None else tolerance(
                dtype_name if dtype_name in ("float32", "float16", "bfloat16") else "float32")
            own = float32_errors.get(name)
            if own is not None:
                tol = max(tol, 2 * own)
            worst, scale = 0.0, 0.0
            for ref_out, ort_out in zip(ref_runs, ort_runs):
                ref = np.asarray(ref_out[name])
                worst = max(worst, relative_error(ort_out[name], ref))
                scale = max(scale, float(np.max(np.abs(ref))) if ref.size else 0.0)
            report.checks.append(OutputCheck(name, ort_runner.name, worst, tol, own))
            atol[name] = tol * scale
    compare = simple_compare(atol=atol, rtol=0.0, check_error_stat="max")
    report.polygraphy_passed = bool(Comparator.compare_accuracy(results, compare_func=compare))
    return report


class _CallableModule(types.ModuleType):
    """Importing this submodule binds the name fftconv_rt.validate to it, in place of the package's
    validate() function; being callable, the module keeps fftconv_rt.validate(...) working however
    often and in whichever order either is used."""

    def __call__(self, *args, **kwargs):
        return validate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
