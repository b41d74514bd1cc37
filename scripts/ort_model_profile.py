"""Where the time of the end-to-end model goes under ONNX Runtime's CUDA provider.

Exports the benchmark's Hyena stack (fp16) with fftconv-rt, runs it at each given length with
ORT's profiler on, and prints per length the time by operator type and provider, the slowest
nodes, the nodes that ORT placed off the CUDA provider (Memcpy nodes included), and the operators
of the graph ORT optimised for the provider (which fusions it made).
Usage, on the GPU machine: python scripts/ort_model_profile.py [L ...] [--out DIR]
"""

import argparse
import collections
import copy
import json
import os
import tempfile

import torch

from fftconv_rt.export import export
from fftconv_rt.models import HyenaStack
from fftconv_rt.ort import make_session, run_on_device, session_options


def profile_length(path: str, L: int, d_model: int, runs: int, log) -> None:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(os.path.dirname(path), f"ort_{L}")
    optimized = os.path.join(os.path.dirname(path), f"optimized_{L}.onnx")
    options.optimized_model_filepath = optimized
    session = make_session(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"], options=options)
    import onnx

    graph = onnx.load(optimized, load_external_data=False).graph
    log(f"L = {L}: optimised graph (CUDA provider): {dict(collections.Counter(n.op_type for n in graph.node))}")
    x = torch.randn(1, L, d_model, device="cuda").half()
    y = torch.empty_like(x)
    feed = {session.get_inputs()[0].name: x}
    out = {session.get_outputs()[0].name: y}
    for _ in range(3):  # warm-up runs: their events are dropped below
        run_on_device(session, feed, out)
    torch.cuda.synchronize()
    for _ in range(runs):
        run_on_device(session, feed, out)
    torch.cuda.synchronize()
    with open(session.end_profiling()) as f:
        events = json.load(f)
    run_events = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    timed_runs = run_events[-runs:]
    start = timed_runs[0]["ts"]
    log(f"L = {L}: model_run {[round(e['dur'] / 1000, 2) for e in timed_runs]} ms")
    by_kind = collections.Counter()
    by_node = collections.Counter()
    off_cuda = set()
    for e in events:
        if e.get("cat") != "Node" or e["ts"] < start or not e["name"].endswith("_kernel_time"):
            continue
        args = e.get("args", {})
        provider = args.get("provider", "?")
        by_kind[(args.get("op_name", "?"), provider)] += e["dur"]
        by_node[e["name"][: -len("_kernel_time")]] += e["dur"]
        if provider != "CUDAExecutionProvider":
            off_cuda.add((e["name"][: -len("_kernel_time")], args.get("op_name"), provider))
    total = sum(by_kind.values())
    log(f"  node time per run {total / runs / 1000:.2f} ms; by operator and provider (ms per run):")
    for (op, provider), us in by_kind.most_common(15):
        log(f"    {op:24s} {provider:24s} {us / runs / 1000:9.3f}")
    log("  slowest nodes (ms per run):")
    for name, us in by_node.most_common(10):
        log(f"    {name:60s} {us / runs / 1000:9.3f}")
    log(f"  nodes off the CUDA provider: {sorted(off_cuda) if off_cuda else 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lengths", nargs="*", type=int, default=[2048, 8192, 32768])
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset of the export (default: the exporter's)")
    args = parser.parse_args()
    torch.manual_seed(0)
    half = copy.deepcopy(HyenaStack(args.d_model, args.layers, max(args.lengths)).eval()).half()
    for block in half.blocks:
        block.mixer.filter.float()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "hyena.onnx")
        export(half, (torch.randn(2, 256, args.d_model).half(),), path, max_length=max(args.lengths),
               opset_version=args.opset)
        session_options()  # fails early with a clear message when the library is missing
        for L in args.lengths:
            profile_length(path, L, args.d_model, args.runs, print)


if __name__ == "__main__":
    main()
