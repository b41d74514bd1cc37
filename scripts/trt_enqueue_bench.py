#!/usr/bin/env python3
"""Times the TensorRT plugin's enqueue against the torch op and the ONNX Runtime CUDA op on the same
shapes, in one process, and writes one JSON line per shape and type.

The plugin runs through fftconv_rt.trt.PluginHarness (TensorRT's builder and runtime steps without
TensorRT's libraries), with and without the field constant_filter (spectrum kept per context and
shape, against prepared at every enqueue). The torch op prepares the filter at every call; the ORT
op (only where onnxruntime-gpu is importable) keeps a constant filter's spectrum per session, as an
initializer. Also timed: a plain device copy of u's bytes (the memory roofline). Milliseconds are
medians of CUDA events after warm-up.

    PYTHONPATH=python FFTCONV_RT_LIB_DIR=build-trt/lib python scripts/trt_enqueue_bench.py \\
        --build build-trt --out bench/results/trt-enqueue.jsonl
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path


def _median_ms(torch, run, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        run()
    stream = torch.cuda.current_stream()
    events = [torch.cuda.Event(enable_timing=True) for _ in range(repeats + 1)]
    events[0].record(stream)
    for i in range(repeats):
        run()
        events[i + 1].record(stream)
    torch.cuda.synchronize()
    return statistics.median(events[i].elapsed_time(events[i + 1]) for i in range(repeats))


def _ort_session(fftconv_rt, k, D, dtype_name, layout):
    """An ORT CUDA session of one FFTConv node with k and D as initializers; None and the reason
    where onnxruntime has no CUDA provider."""
    try:
        import onnxruntime
    except ImportError:
        return None, "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return None, "onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu is not installed)"
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from fftconv_rt.spec import DOMAIN, OP_NAME, OP_VERSION

    elem = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16}[dtype_name]
    shape = ["B", "H", "L"] if layout == "BHL" else ["B", "L", "H"]
    node = helper.make_node(OP_NAME, ["u", "k", "D"], ["y"], domain=DOMAIN, layout=layout)
    graph = helper.make_graph([node], "fftconv", [helper.make_tensor_value_info("u", elem, shape)],
                              [helper.make_tensor_value_info("y", elem, shape)],
                              initializer=[numpy_helper.from_array(np.asarray(k, np.float32), "k"),
                                           numpy_helper.from_array(np.asarray(D, np.float32), "D")])
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, OP_VERSION)]
    model = helper.make_model(graph, opset_imports=opsets)
    return fftconv_rt.make_session(model.SerializeToString(), providers=["CUDAExecutionProvider"]), "ok"


def bench_one(torch, harness, B, H, L, dtype_name, layout, repeats):
    import fftconv_rt
    import fftconv_rt.torch_op  # noqa: F401  (registers torch.ops.fftconv_rt.fftconv)
    from fftconv_rt.reference import relative_error

    dtype = getattr(torch, dtype_name)
    shape = (B, H, L) if layout == "BHL" else (B, L, H)
    gen = torch.Generator(device="cuda").manual_seed(0)
    u = torch.randn(shape, device="cuda", generator=gen).to(dtype)
    decay = torch.exp(-4.0 * torch.arange(L, device="cuda") / L)
    k = torch.randn((H, L), device="cuda", generator=gen) * decay / L ** 0.5
    D = torch.randn(H, device="cuda", generator=gen)
    row = {"gpu": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(), "B": B, "H": H, "L": L,
           "Lk": L, "dtype": dtype_name, "layout": layout, "k_dtype": "float32", "options": "D", "repeats": repeats}

    y = torch.empty_like(u)
    row["copy_ms"] = _median_ms(torch, lambda: y.copy_(u), repeats)

    try:
        y_torch = torch.ops.fftconv_rt.fftconv(u, k, D, layout=layout)
        row["torch_op_ms"] = _median_ms(torch, lambda: torch.ops.fftconv_rt.fftconv(u, k, D, layout=layout), repeats)
    except Exception as e:  # recorded, not fatal: the other backends are still timed
        y_torch, row["torch_op_error"] = None, f"{type(e).__name__}: {e}"

    dtypes, shapes = [dtype_name, "float32", "float32"], [shape, tuple(k.shape), tuple(D.shape)]
    stream = torch.cuda.current_stream().cuda_stream
    for constant_filter, key in ((0, "trt_enqueue_ms"), (1, "trt_enqueue_constant_filter_ms")):
        builder = harness.create({"layout": layout, "constant_filter": constant_filter})
        workspace_bytes = builder.configure(dtypes, shapes, shapes, shapes)
        context = builder.deserialize().attach()
        workspace = torch.empty(max(workspace_bytes, 1), dtype=torch.uint8, device="cuda")
        y_trt = torch.full_like(u, float("nan"))
        context.shape_change(dtypes, shapes)
        pointers = [u.data_ptr(), k.data_ptr(), D.data_ptr()]
        times = context.time_enqueue(dtypes, shapes, pointers, y_trt.data_ptr(), workspace.data_ptr(), stream,
                                     repeats)
        row[key] = statistics.median(times)
        row["trt_workspace_bytes"] = workspace_bytes
        torch.cuda.synchronize()
        if y_torch is not None:
            row[key.replace("_ms", "_vs_torch_op")] = relative_error(y_trt.float().cpu().numpy(),
                                                                     y_torch.float().cpu().numpy())
        del context, builder

    session, status = _ort_session(fftconv_rt, k.cpu().numpy(), D.cpu().numpy(), dtype_name, layout)
    row["ort_cuda"] = status
    if session is not None:
        import numpy as np

        binding = session.io_binding()
        element = {"float32": np.float32, "float16": np.float16}.get(dtype_name)
        if element is None:
            row["ort_cuda"] = f"not timed: IO binding of {dtype_name} needs a numpy type"
        else:
            y_ort = torch.empty_like(u)
            binding.bind_input("u", "cuda", 0, element, list(shape), u.data_ptr())
            binding.bind_output("y", "cuda", 0, element, list(shape), y_ort.data_ptr())
            row["ort_cuda_ms"] = _median_ms(torch, lambda: session.run_with_iobinding(binding), repeats)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", required=True, help="CMake build folder with lib/libfftconv_trt_harness.so")
    parser.add_argument("--out", required=True, help="JSON lines file to append to")
    parser.add_argument("--lengths", default="8192,131072", help="comma-separated sequence lengths")
    parser.add_argument("--dtypes", default="float16,float32")
    parser.add_argument("--layout", default="BHL", choices=["BHL", "BLH"])
    parser.add_argument("--elements", type=int, default=1 << 26,
                        help="B*H*L of the large-batch shapes; every length is also timed at B = 1")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)

    import torch

    from fftconv_rt.trt import HARNESS_LIBRARY, PluginHarness

    harness = PluginHarness(Path(args.build) / "lib" / HARNESS_LIBRARY)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for L in (int(x) for x in args.lengths.split(",")):
        H = min(256, max(1, args.elements // L))
        for B in sorted({1, max(1, args.elements // (H * L))}):
            for dtype_name in args.dtypes.split(","):
                row = bench_one(torch, harness, B, H, L, dtype_name, args.layout, args.repeats)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
