"""The ONNX Runtime custom-op library: results, optional inputs, constant filters,
shape inference, errors, and the library's exported symbols."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fftconv_rt import ort_library_path
from fftconv_rt.ort import make_session
from fftconv_rt.ort import run as ort_run
from fftconv_rt.reference import fftconv_reference, relative_error
from fftconv_rt.spec import tolerance

from helpers import NAMES, build_model, grid_inputs, make_inputs, reference_grid

def run(model, arrays):
    session = make_session(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    feed = {n: a for n, a in zip(NAMES, arrays) if a is not None and n in names}
    return session, ort_run(session, feed)[0]


@reference_grid
def test_matches_reference(rng, L, filter_len, dtype, layout):
    arrays = grid_inputs(rng, L, filter_len, dtype, layout)
    model = build_model(arrays, dtype, attributes={"layout": layout}, dynamic=False)
    _, y = run(model, arrays)
    assert y.shape == arrays[0].shape and y.dtype == arrays[0].dtype
    assert relative_error(y, fftconv_reference(*arrays, layout=layout)) <= tolerance(dtype)


@pytest.mark.parametrize("present", [("postgate",), ("pregate",), ("D", "postgate"), ()])
def test_omitted_inputs_in_the_middle(rng, present):
    arrays = make_inputs(rng, 2, 4, 300, 300, "float32", present)
    _, y = run(build_model(arrays, "float32"), arrays)
    assert relative_error(y, fftconv_reference(*arrays)) <= tolerance("float32")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_constant_filter_is_reused_across_lengths(rng, dtype):
    """A constant k: spectra cached per transform size and taps used; several lengths through
    one session, 600 and 700 among them (one transform size, but k[:600] and k[:700]: a cache
    keyed by the transform size alone gave 9e-2 at 700)."""
    u, k, D, _, _ = make_inputs(rng, 2, 4, 1000, 1000, dtype, ("D",))
    model = build_model([u, k, D, None, None], dtype, constant_k=True)
    session = make_session(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for L in (1000, 37, 1000, 2500, 37, 600, 700):
        x = rng.standard_normal((3, 4, L)).astype(u.dtype)
        y = session.run(None, {"u": x, "D": D})[0]
        assert relative_error(y, fftconv_reference(x, k, D)) <= tolerance(dtype)


def test_circular_fft_size_attribute(rng):
    arrays = make_inputs(rng, 2, 3, 100, 100, "float32", ("D",))
    _, y = run(build_model(arrays, "float32", attributes={"fft_size": 150}), arrays)
    assert relative_error(y, fftconv_reference(*arrays, fft_size=150)) <= tolerance("float32")


def test_shape_inference_gives_type_and_shape(rng):
    arrays = make_inputs(rng, 2, 3, 40, 40, "float16", ("D",))
    session, _ = run(build_model(arrays, "float16"), arrays)
    out = session.get_outputs()[0]
    assert out.type == "tensor(float16)"
    assert out.shape == ["B", 3, "L"]


def test_concurrent_runs_in_threads_agree(rng):
    from concurrent.futures import ThreadPoolExecutor

    arrays = make_inputs(rng, 2, 4, 3000, 3000, "float32", ("D",))
    session = make_session(build_model(arrays, "float32", constant_k=True).SerializeToString(),
                           providers=["CPUExecutionProvider"])
    feed = {"u": arrays[0], "D": arrays[2]}
    expected = session.run(None, feed)[0]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: session.run(None, feed)[0], range(16)))
    for r in results:
        np.testing.assert_array_equal(r, expected)


@pytest.mark.parametrize("mutate,message", [
    (lambda a: [a[0][0], *a[1:]], "input 'u' must be rank 3"),
    (lambda a: [a[0], a[1][:2], *a[2:]], "input 'k' must have shape (H, Lk) with H = 3"),
    (lambda a: [a[0], a[1], a[2][:2], *a[3:]], "input 'D' must have shape (H,) = (3,)"),
    (lambda a: [a[0], a[1].astype(np.float64), *a[2:]], "input 'k' has element type float64"),
    (lambda a: [a[0].astype(np.float64), a[1], *a[2:]], "input 'u' has element type float64"),
])
def test_bad_input_is_refused_with_a_clear_message(rng, mutate, message):
    arrays = mutate(list(make_inputs(rng, 2, 3, 30, 30, "float32", ("D",))))
    model = build_model(arrays, "float32", dynamic=False)
    model.graph.input[0].type.tensor_type.ClearField("shape")  # let a wrong rank reach the kernel
    with pytest.raises(Exception) as info:
        run(model, arrays)
    assert message in str(info.value) and "FFTConv:" in str(info.value)


@pytest.mark.parametrize("attributes,message", [
    ({"layout": "HLB"}, "attribute 'layout' must be \"BHL\" or \"BLH\""),
    ({"fft_size": -4}, "attribute 'fft_size' must be >= 0"),
    ({"fft_size": 10}, "smaller than the sequence length"),
    ({"fft_size": 1.5}, "attribute 'fft_size'"),
])
def test_bad_attribute_is_refused(rng, attributes, message):
    arrays = make_inputs(rng, 1, 3, 30, 5, "float32", ())
    with pytest.raises(Exception) as info:
        run(build_model(arrays, "float32", attributes=attributes), arrays)
    assert message in str(info.value)


def test_empty_sequence_gives_empty_output(rng):
    arrays = make_inputs(rng, 2, 3, 0, 4, "float32", ("D",))
    _, y = run(build_model(arrays, "float32"), arrays)
    assert y.shape == (2, 3, 0)


def test_library_exports_only_register_custom_ops(nm_available):
    out = subprocess.run(["nm", "-D", "--defined-only", ort_library_path()], capture_output=True, text=True,
                         check=True).stdout
    exported = sorted(line.split()[-1] for line in out.splitlines() if line.split()[1] in "TtWDB")
    assert exported == ["RegisterCustomOps"]


def test_missing_library_is_reported(tmp_path, monkeypatch):
    import fftconv_rt
    from fftconv_rt import _lib

    monkeypatch.setenv("FFTCONV_RT_LIB_DIR", str(tmp_path))
    monkeypatch.setattr(fftconv_rt, "__path__", [str(tmp_path)])
    monkeypatch.setattr(_lib, "_search_dirs", lambda: [tmp_path])
    with pytest.raises(_lib.LibraryNotFoundError, match="libfftconv_ort.so not found"):
        _lib.ort_library_path()


def test_unregistered_session_names_the_missing_domain(rng):
    arrays = make_inputs(rng, 1, 2, 10, 10, "float32", ())
    with pytest.raises(Exception, match="fftconv_rt"):
        ort.InferenceSession(build_model(arrays, "float32").SerializeToString(), providers=["CPUExecutionProvider"])


def test_node_without_its_filter_is_refused_when_loading(rng):
    arrays = make_inputs(rng, 2, 3, 30, 30, "float32", ())
    model = build_model([arrays[0], None, None, None, None], "float32")
    with pytest.raises(Exception) as info:
        make_session(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert "FFTConv" in str(info.value) and "input size 1 not in range [min=2, max=6]" in str(info.value)


def test_truncated_model_file_is_refused(rng, tmp_path):
    data = build_model(make_inputs(rng, 2, 3, 30, 30, "float32", ()), "float32").SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception) as info:
        make_session(path, providers=["CPUExecutionProvider"])
    assert "Protobuf parsing failed" in str(info.value)


def _elf_for_another_machine(path, source):
    """A copy of a real library with its ELF machine set to aarch64 (x86-64 when run on aarch64)."""
    data = bytearray(source.read_bytes())
    data[18:20] = (62 if platform.machine() == "aarch64" else 183).to_bytes(2, "little")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("library", ["ort", "core"])
@pytest.mark.parametrize("defect,message", [("text", "is not a shared library (no ELF header)"),
                                            ("architecture", "was built for")])
def test_library_that_cannot_load_here_is_refused_with_the_reason(rng, tmp_path, monkeypatch, library, defect,
                                                                  message):
    """A non-library file, and a library of another architecture (which the loader would report
    as "No such file or directory"), for the ORT library and the core."""
    from fftconv_rt import _lib

    name = _lib.ORT_LIBRARY if library == "ort" else _lib.CORE_LIBRARY
    if defect == "text":
        (tmp_path / name).write_text("not a library")
    else:
        _elf_for_another_machine(tmp_path / name, Path(_lib.find_library(name)))
    monkeypatch.setenv("FFTCONV_RT_LIB_DIR", str(tmp_path))
    with pytest.raises(_lib.LibraryLoadError) as info:
        if library == "ort":
            model = build_model(make_inputs(rng, 2, 3, 30, 30, "float32", ()), "float32").SerializeToString()
            make_session(model, providers=["CPUExecutionProvider"])
        else:
            monkeypatch.setattr(_lib, "_core", None)
            _lib.core()
    assert message in str(info.value) and str(tmp_path) in str(info.value)
