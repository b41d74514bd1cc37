"""The TensorRT plugin's enqueue on the GPU, driven the way TensorRT's builder and runtime drive it
(fftconv_rt.trt.PluginHarness over libfftconv_trt_harness.so: creator from fields, format checks,
configurePlugin and getWorkspaceSize for a shape range, serialization round trip, attachToContext
clones, onShapeChange, enqueue on a non-default stream into a workspace of exactly the size asked),
compared with the float64 reference within the spec's tolerances.

Needs a CUDA GPU and a build with the plugin: configure CMake with -DFFTCONV_TENSORRT_INCLUDE_DIR and
set FFTCONV_TRT_BUILD_DIR to that build folder. Also run under compute-sanitizer memcheck/racecheck
(the harness allocates every buffer with its exact size)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fftconv_rt.reference import decaying_filter, fftconv_reference, relative_error
from fftconv_rt.spec import tolerance
from fftconv_rt.trt import HARNESS_LIBRARY, PluginError, PluginHarness

_BUILD = os.environ.get("FFTCONV_TRT_BUILD_DIR")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not _BUILD, reason="the TensorRT plugin and its harness are built only against TensorRT's "
                                          "headers: configure CMake with -DFFTCONV_TENSORRT_INCLUDE_DIR and set "
                                          "FFTCONV_TRT_BUILD_DIR to that build (GPU machine)"),
]

SLOTS = ("u", "k", "D", "pregate", "postgate", "k_rev")
_NUMPY = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}


@pytest.fixture(scope="module")
def harness():
    path = Path(_BUILD) / "lib" / HARNESS_LIBRARY
    assert path.is_file(), f"{path} was not built"
    return PluginHarness(path)


def to_device_type(a: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(the array as stored in `dtype`, its values in float64): bfloat16 as rounded-to-nearest-even bits."""
    if dtype == "bfloat16":
        bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        return rounded, (rounded.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    stored = a.astype(_NUMPY[dtype])
    return stored, stored.astype(np.float64)


def from_device_type(a: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return (a.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return a.astype(np.float64)


def make_call(rng, B, H, L, Lk, dtype="float16", layout="BHL", options=("D",), k_dtype="float32", Lk_rev=0):
    """Host inputs of one call by slot (stored type, float64 values), in the plugin's input order."""
    shape = (B, H, L) if layout == "BHL" else (B, L, H)
    arrays = {"u": (rng.standard_normal(shape), dtype), "k": (decaying_filter(rng, H, Lk), k_dtype)}
    if "D" in options:
        arrays["D"] = (rng.standard_normal(H), k_dtype)
    for gate in ("pregate", "postgate"):
        if gate in options:
            arrays[gate] = (rng.standard_normal(shape), dtype)
    if Lk_rev:
        arrays["k_rev"] = (decaying_filter(rng, H, Lk_rev), k_dtype)
    return {slot: (*to_device_type(np.asarray(a, dtype=np.float32), t), t) for slot, (a, t) in arrays.items()}


def reference(call, layout, **attributes):
    values = {slot: v for slot, (_, v, _) in call.items()}
    return fftconv_reference(values.pop("u"), values.pop("k"), layout=layout, **values, **attributes)


class Context:
    """One execution context: its plugin (attachToContext's clone), its device buffers and stream."""

    def __init__(self, harness, engine, workspace_bytes):
        self.harness, self.plugin = harness, engine.attach()
        self.workspace_bytes = workspace_bytes
        self.workspace = harness.malloc(workspace_bytes)
        self.stream = harness.stream()
        self.buffers = []

    def close(self):
        self.harness.synchronize(self.stream)
        for address in self.buffers + [self.workspace]:
            self.harness.free(address)
        self.harness.destroy_stream(self.stream)
        self.buffers = []

    def upload(self, call):
        """Device copies (exact sizes) of the call's inputs and its output buffer."""
        pointers = []
        for stored, _, _ in call.values():
            address = self.harness.malloc(stored.nbytes)
            self.harness.upload(address, stored)
            pointers.append(address)
            self.buffers.append(address)
        stored_u = call["u"][0]
        output = self.harness.malloc(stored_u.nbytes)
        self.harness.fill(output, 0xFF, stored_u.nbytes)  # NaNs where nothing is written
        self.buffers.append(output)
        return pointers, output

    def enqueue(self, call, pointers=None, output=None, shape_change=True):
        """onShapeChange (as TensorRT calls it when shapes or addresses change) and enqueue; returns
        what to download once the stream is done."""
        if pointers is None:
            pointers, output = self.upload(call)
        dtypes = [t for _, _, t in call.values()]
        shapes = [stored.shape for stored, _, _ in call.values()]
        if shape_change:
            self.plugin.shape_change(dtypes, shapes)
        self.plugin.enqueue(dtypes, shapes, pointers, output, self.workspace, self.stream)
        return output

    def result(self, call, output):
        self.harness.synchronize(self.stream)
        stored_u, _, dtype = call["u"]
        return from_device_type(self.harness.download(output, stored_u.dtype, stored_u.shape), dtype)


def presence_fields(call):
    """has_* fields naming the optional inputs present (as the exporter stamps them)."""
    return {f"has_{slot}": int(slot in call) for slot in ("D", "pregate", "postgate", "k_rev")}


def build_engine(harness, fields, call, min_length=None, max_length=None, layout="BHL", by_count=False):
    """Builder and serialization: the runtime plugin and the workspace asked for a profile of
    lengths [min_length, max_length] around the call's shapes."""
    axis = 2 if layout == "BHL" else 1
    dtypes = [t for _, _, t in call.values()]
    shapes = [list(stored.shape) for stored, _, _ in call.values()]

    def with_length(length):
        return [[length if (slot in ("u", "pregate", "postgate") and i == axis) else n for i, n in enumerate(shape)]
                for slot, shape in zip(call, shapes)]

    low = with_length(min_length) if min_length else shapes
    high = with_length(max_length) if max_length else shapes
    builder = harness.create(fields if by_count else {**presence_fields(call), **fields})
    workspace = builder.configure(dtypes, low, shapes, high)
    engine = builder.deserialize()
    assert engine.fields() == builder.fields(), "the fields changed in the serialization round trip"
    return engine, workspace


def run_once(harness, fields, call, layout="BHL", **profile):
    engine, workspace = build_engine(harness, fields, call, layout=layout, **profile)
    context = Context(harness, engine, workspace)
    try:
        return context.result(call, context.enqueue(call))
    finally:
        context.close()


def check(y, ref, dtype, what=""):
    assert np.all(np.isfinite(y)), f"{what}: non-finite output (elements left unwritten?)"
    error = relative_error(y, ref)
    assert error <= tolerance(dtype), f"{what}: error {error:.3g} > {tolerance(dtype)} for {dtype}"


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("layout", ["BHL", "BLH"])
@pytest.mark.parametrize("options", [(), ("D", "pregate", "postgate")])
def test_types_layouts_and_options(harness, rng, dtype, layout, options):
    call = make_call(rng, 2, 8, 1000, 1000, dtype, layout, options)
    y = run_once(harness, {"layout": layout}, call, layout=layout)
    check(y, reference(call, layout), dtype, f"{dtype} {layout} {options}")


@pytest.mark.parametrize("L", [1, 2, 7, 128, 1023, 4096, 65536])
def test_lengths(harness, rng, L):
    call = make_call(rng, 2, 4, L, L, "float16", "BHL", ("D", "postgate"))
    check(run_once(harness, {}, call), reference(call, "BHL"), "float16", f"L = {L}")


@pytest.mark.parametrize("dtype,layout", [("float16", "BHL"), ("float32", "BLH"), ("bfloat16", "BHL")])
def test_longest_lengths(harness, rng, dtype, layout):
    L = 1 << 21
    call = make_call(rng, 1, 2, L, L, dtype, layout, ("D",))
    check(run_once(harness, {"layout": layout}, call, layout=layout), reference(call, layout), dtype, f"L = {L}")


def test_filter_in_the_input_type(harness, rng):
    call = make_call(rng, 2, 8, 3000, 3000, "bfloat16", "BHL", ("D", "pregate"), k_dtype="bfloat16")
    check(run_once(harness, {}, call), reference(call, "BHL"), "bfloat16")


@pytest.mark.parametrize("fft_size", [1024, 1500, 4096])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_circular_fft_size(harness, rng, fft_size, dtype):
    call = make_call(rng, 2, 8, 1000, 700, dtype, "BHL", ("D", "pregate", "postgate"))
    y = run_once(harness, {"fft_size": fft_size, "has_D": 1, "has_pregate": 1, "has_postgate": 1}, call)
    check(y, reference(call, "BHL", fft_size=fft_size), dtype, f"fft_size {fft_size}")


@pytest.mark.parametrize("layout", ["BHL", "BLH"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_frequency_sparse(harness, rng, layout, dtype):
    call = make_call(rng, 2, 8, 4096, 4096, dtype, layout, ("D",))
    y = run_once(harness, {"layout": layout, "freq_keep": 700}, call, layout=layout)
    check(y, reference(call, layout, freq_keep=700), dtype, "freq_keep 700")


@pytest.mark.parametrize("dtype,taps", [("float16", 2048), ("float16", 2049), ("bfloat16", 1024),
                                        ("bfloat16", 1025), ("float32", 256), ("float32", 257)])
def test_filters_at_the_tensor_core_tap_limit(harness, rng, dtype, taps):
    """Short filters run as tensor-core Toeplitz products up to a tap limit, longer ones by FFT."""
    call = make_call(rng, 2, 16, 8192, taps, dtype, "BHL", ("D",))
    check(run_once(harness, {}, call, min_length=1, max_length=1 << 16), reference(call, "BHL"), dtype,
          f"{taps} taps")


@pytest.mark.parametrize("layout", ["BHL", "BLH"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_anti_causal_taps_by_count(harness, rng, layout, dtype):
    call = make_call(rng, 2, 8, 3000, 200, dtype, layout, ("D", "pregate", "postgate"), Lk_rev=100)
    y = run_once(harness, {"layout": layout}, call, layout=layout, by_count=True)
    check(y, reference(call, layout), dtype, "k_rev")


def test_anti_causal_taps_by_field_without_other_options(harness, rng):
    call = make_call(rng, 2, 8, 5000, 5000, "float16", "BHL", (), Lk_rev=5000)
    fields = {"has_D": 0, "has_pregate": 0, "has_postgate": 0, "has_k_rev": 1}
    check(run_once(harness, fields, call), reference(call, "BHL"), "float16", "k_rev only")


@pytest.mark.parametrize("constant_filter", [0, 1])
def test_period_scale_across_a_shape_change(harness, rng, constant_filter):
    """n = 2L at every length; a 512-tap filter at L = 128 loses its taps past n, as rfft(k, n) does."""
    fields = {"period_scale": 2, "constant_filter": constant_filter}
    first = make_call(rng, 2, 8, 128, 512, "float16", "BHL", ("D",), Lk_rev=64)
    engine, workspace = build_engine(harness, fields, first, min_length=64, max_length=4096)
    context = Context(harness, engine, workspace)
    try:
        for L in (128, 4096, 1000):
            call = dict(first)
            call["u"] = (*to_device_type(rng.standard_normal((2, 8, L)).astype(np.float32), "float16"), "float16")
            y = context.result(call, context.enqueue(call))
            check(y, reference(call, "BHL", period_scale=2), "float16", f"period_scale 2 at L = {L}")
    finally:
        context.close()


def test_max_length(harness, rng):
    call = make_call(rng, 1, 4, 1000, 1000, "float32")
    y = run_once(harness, {"max_length": 2048}, call, min_length=1, max_length=2048)
    check(y, reference(call, "BHL"), "float32", "within max_length")
    with pytest.raises(PluginError, match="max_length"):
        build_engine(harness, {"max_length": 2048}, call, min_length=1, max_length=2049)


@pytest.mark.parametrize("constant_filter", [0, 1])
def test_shape_changes_between_enqueues(harness, rng, constant_filter):
    """One context, a profile of lengths 1..128K, enqueues at lengths and batches that change."""
    first = make_call(rng, 2, 8, 100, 3000, "float16", "BLH", ("D", "postgate"))
    engine, workspace = build_engine(harness, {"layout": "BLH", "constant_filter": constant_filter}, first,
                                     min_length=1, max_length=1 << 17, layout="BLH")
    context = Context(harness, engine, workspace)
    try:
        for B, L in ((2, 100), (1, 1 << 17), (3, 5000), (2, 100)):
            call = make_call(rng, B, 8, L, 3000, "float16", "BLH", ("D", "postgate"))
            call["k"], call["D"] = first["k"], first["D"]
            y = context.result(call, context.enqueue(call))
            check(y, reference(call, "BLH"), "float16", f"B = {B}, L = {L}")
    finally:
        context.close()


def test_changed_filter_is_prepared_again_without_constant_filter(harness, rng):
    call = make_call(rng, 2, 8, 8192, 8192, "float16")
    engine, workspace = build_engine(harness, {}, call)
    context = Context(harness, engine, workspace)
    try:
        pointers, output = context.upload(call)
        check(context.result(call, context.enqueue(call, pointers, output)), reference(call, "BHL"), "float16")
        new_k = decaying_filter(rng, 8, 8192)
        context.harness.upload(pointers[1], new_k)  # same address, new values
        call["k"] = (new_k, new_k.astype(np.float64), "float32")
        y = context.result(call, context.enqueue(call, pointers, output, shape_change=False))
        check(y, reference(call, "BHL"), "float16", "after the filter changed")
    finally:
        context.close()


def test_constant_filter_spectrum_is_kept_per_context_and_shape(harness, rng):
    """With constant_filter the spectrum is prepared at the first enqueue of a shape and reused: a
    filter rewritten in place (which a build-time constant never is) is not read again until the
    shape changes. This shows the caching, not a recommended use."""
    call = make_call(rng, 2, 8, 8192, 8192, "float16")
    engine, workspace = build_engine(harness, {"constant_filter": 1}, call, min_length=1, max_length=16384)
    context = Context(harness, engine, workspace)
    try:
        pointers, output = context.upload(call)
        first_ref = reference(call, "BHL")
        check(context.result(call, context.enqueue(call, pointers, output)), first_ref, "float16", "first")
        new_k = decaying_filter(rng, 8, 8192)
        context.harness.upload(pointers[1], new_k)
        y = context.result(call, context.enqueue(call, pointers, output, shape_change=False))
        check(y, first_ref, "float16", "kept spectrum")
        shorter = make_call(rng, 2, 8, 4096, 8192, "float16")
        shorter["k"] = (new_k, new_k.astype(np.float64), "float32")
        short_pointers, short_output = context.upload(shorter)
        short_pointers[1] = pointers[1]
        y = context.result(shorter, context.enqueue(shorter, short_pointers, short_output))
        check(y, reference(shorter, "BHL"), "float16", "prepared again at the new shape")
    finally:
        context.close()


@pytest.mark.parametrize("constant_filter", [0, 1])
def test_two_contexts_at_once_on_two_streams(harness, rng, constant_filter):
    first = make_call(rng, 2, 16, 1 << 16, 1 << 16, "float16", "BHL", ("D", "pregate", "postgate"))
    engine, workspace = build_engine(harness, {"constant_filter": constant_filter}, first, min_length=1,
                                     max_length=1 << 16)
    contexts = [Context(harness, engine, workspace) for _ in range(2)]
    try:
        second = make_call(rng, 2, 16, 30000, 1 << 16, "float16", "BHL", ("D", "pregate", "postgate"))
        second["k"], second["D"] = first["k"], first["D"]
        calls = [first, second]
        for _ in range(2):  # the second round runs on kept spectra where constant_filter is set
            outputs = [context.enqueue(call) for context, call in zip(contexts, calls)]
            for context, call, output in zip(contexts, calls, outputs):
                check(context.result(call, output), reference(call, "BHL"), "float16", "concurrent contexts")
    finally:
        for context in contexts:
            context.close()


def test_empty_batch_writes_nothing(harness, rng):
    empty = make_call(rng, 0, 4, 64, 64, "float32")
    engine, workspace = build_engine(harness, {}, empty)
    context = Context(harness, engine, workspace)
    try:
        context.enqueue(empty)
        context.harness.synchronize(context.stream)
    finally:
        context.close()


def test_bad_shapes_refused_at_build_with_the_input_named(harness, rng):
    call = make_call(rng, 2, 8, 1000, 1000, "float16")
    call["k"] = (*to_device_type(decaying_filter(rng, 7, 1000), "float32"), "float32")
    with pytest.raises(PluginError, match="'k'"):
        build_engine(harness, {}, call)
