"""CPU benchmark of the FFTConv op: fftconv-rt (torch op and ONNX Runtime op)
beside PyTorch's own torch.fft.rfft convolution and ONNX Runtime running the
default ONNX export of the same model (DFT nodes), same inputs, same run.
Writes one JSON line per (length, implementation)."""

from __future__ import annotations

import copy
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _append_results(rows: list, out_path: Optional[str], log) -> None:
    """Appends the rows as JSON lines to out_path (when given)."""
    if not out_path:
        return
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    log(f"results appended to {out_path}")


def _time_round_robin(fns: dict, repeats: int, budget_s: float, block: int = 5) -> dict:
    """Median wall time in ms of each callable. The callables take turns in blocks of
    `block` back-to-back calls (the first of each block, which wakes the thread pools,
    is not counted), so that a slow spell of a shared machine hits all of them alike;
    rounds stop once `repeats` samples each are taken or past budget_s."""
    times = {name: [] for name in fns}
    start_all = time.perf_counter()
    while min(len(t) for t in times.values()) < repeats:
        for name, fn in fns.items():
            fn()
            for _ in range(block):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        if time.perf_counter() - start_all > budget_s:
            break
    return {name: float(np.median(t) * 1e3) for name, t in times.items()}


def run_cpu_bench(lengths=(1024, 4096, 16384, 65536), elements: int = 1 << 21, batch: int = 2,
                  repeats: int = 21, threads: Optional[int] = None, default_export_max_len: int = 16384,
                  out_path: Optional[str] = None, log=print) -> list[dict]:
    import onnxruntime as ort
    import torch

    from .export import export
    from .models import LongConvStack, fft_long_conv
    from .ort import make_session
    from .reference import fftconv_reference, relative_error
    from .torch_op import fftconv

    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    meta = {"device": "cpu", "cpu": _cpu_name(), "threads": threads,
            "date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "onnxruntime": ort.__version__, "dtype": "float32", "batch_x_channels_x_length": elements}
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="fftconv_bench_"))
    log(f"CPU: {meta['cpu']}, {threads} threads; B*H*L = {elements}; float32; median of {repeats} calls in round-robin blocks")
    log(f"{'L':>7s} {'B':>3s} {'H':>5s} | {'torch rfft':>10s} {'torch cached':>12s} | {'ours op':>9s} "
        f"{'ours ORT':>9s} | {'ORT DFT':>9s} | {'op/torch':>8s} {'ORT/torch':>9s} | rel.err")
    for L in lengths:
        H = max(1, elements // (batch * L))
        torch.manual_seed(0)
        model = LongConvStack(H, L).eval()
        k, D = model.k[0].detach(), model.D[0].detach()
        u = torch.randn(batch, H, L)
        n = 2 * L
        k_f = torch.fft.rfft(k, n=n) / n

        def torch_cached():
            u_f = torch.fft.rfft(u, n=n)
            return torch.fft.irfft(u_f * k_f, n=n, norm="forward")[..., :L] + u * D.unsqueeze(-1)

        # ONNX Runtime: the exported model (constant filter: its spectrum is prepared once).
        onnx_path = tmp / f"conv_{L}.onnx"
        export(model, (u,), onnx_path, dynamic_shapes=(None,), input_names=["u"], output_names=["y"])
        # ORT's idle workers spin by default and would slow whatever runs next in the round.
        quiet = ort.SessionOptions()
        quiet.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = make_session(onnx_path, providers=["CPUExecutionProvider"], options=quiet,
                               intra_op_threads=threads)
        feed = {"u": u.numpy()}

        with torch.no_grad():
            t = _time_round_robin({"torch": lambda: fft_long_conv(u, k, D), "cached": torch_cached,
                                   "op": lambda: fftconv(u, k, D), "ort": lambda: session.run(None, feed)},
                                  repeats, 60)
            y_op = fftconv(u, k, D).numpy()
        t_torch, t_cached, t_op, t_ort = t["torch"], t["cached"], t["op"], t["ort"]
        err = relative_error(y_op, fftconv_reference(u.numpy(), k.numpy(), D.numpy()))
        err_ort = relative_error(session.run(None, feed)[0], y_op)

        t_dft = None
        if L <= default_export_max_len:
            dft_path = tmp / f"conv_{L}_dft.onnx"
            torch.onnx.export(model, (u,), dynamo=True, input_names=["u"], output_names=["y"]).save(str(dft_path))
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            dft = ort.InferenceSession(str(dft_path), options, providers=["CPUExecutionProvider"])
            t_dft = _time_round_robin({"dft": lambda: dft.run(None, feed)}, 3, 30, block=3)["dft"]

        entries = {"torch_rfft_conv": t_torch, "torch_rfft_conv_cached_filter": t_cached,
                   "fftconv_rt_torch_op": t_op, "fftconv_rt_ort": t_ort, "ort_default_export_dft": t_dft}
        for impl, ms in entries.items():
            if ms is None:
                continue
            row = dict(meta, L=L, B=batch, H=H, impl=impl, ms=round(ms, 4),
                       ratio_to_torch_rfft_conv=round(ms / t_torch, 4))
            if impl == "fftconv_rt_torch_op":
                row["rel_error_vs_float64"] = err
            if impl == "fftconv_rt_ort":
                row["rel_error_vs_torch_op"] = err_ort
            rows.append(row)
        dft_text = f"{t_dft:7.1f}ms" if t_dft is not None else "  skipped"
        log(f"{L:7d} {batch:3d} {H:5d} | {t_torch:8.2f}ms {t_cached:10.2f}ms | {t_op:7.2f}ms {t_ort:7.2f}ms | "
            f"{dft_text} | {t_op / t_torch:8.2f} {t_ort / t_torch:9.2f} | {err:.1e}")
    _append_results(rows, out_path, log)
    return rows


GPU_LENGTHS = (128, 512, 2048, 8192, 32768, 131072, 524288, 2097152)
MODEL_LENGTHS = (2048, 8192, 32768, 131072)


def _cuda_ms(fn, repeats: int, warmup: int = 3) -> float:
    """Median time in ms of fn on the current CUDA stream (CUDA events, after warm-up)."""
    import torch

    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def run_model_bench(lengths=MODEL_LENGTHS, d_model: int = 768, layers: int = 4, batch: int = 1,
                    repeats: int = 10, dft_length: int = 2048, out_path: Optional[str] = None,
                    log=print, rounds_per_length: int = 3) -> list[dict]:
    """End to end on the GPU: a Hyena stack (fp16) as PyTorch eager (cuFFT), as ONNX Runtime's CUDA
    provider running the fftconv-rt export (IO binding on device tensors; also with ORT's CUDA
    graphs, captured per length), and, at dft_length
    only, as the default ONNX export (DFT nodes) on the same provider; one exported model (dynamic
    length, filters stored for the longest L: export's max_length) for every L. Each time is the
    fastest of `rounds_per_length` interleaved medians of `repeats` runs. Errors are against the
    float32 PyTorch model on the same input."""
    import torch

    from .export import export
    from .models import HyenaStack
    from .ort import make_session, run_on_device

    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = HyenaStack(d_model, layers, max(lengths)).eval()
    half = copy.deepcopy(model).half()  # exported on the CPU, then run on the GPU
    reference = model.to(dev)
    for block in half.blocks:  # the implicit filters stay float32 (positions in fp16 lose precision)
        block.mixer.filter.float()
    meta = {"device": "cuda", "gpu": torch.cuda.get_device_name(dev), "date": datetime.date.today().isoformat(),
            "torch": torch.__version__, "model": f"HyenaStack d={d_model} layers={layers}", "batch": batch,
            "dtype": "float16", "timing": f"fastest of {rounds_per_length} interleaved medians of {repeats}"}
    import onnxruntime

    meta["onnxruntime"] = onnxruntime.__version__
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "hyena.onnx")
        # the filters depend on L only as a prefix: stored for the longest L, prepared once per L
        export(half, (torch.randn(2, 256, d_model).half(),), path, max_length=max(lengths))
        session = make_session(path, providers=providers)
        dft_session = None
        try:  # the same model exported by torch.onnx alone (DFT nodes), at dft_length only: static
            # shapes, since ORT 1.31's DFT kernel failed on the dynamic-length export ("Shape mismatch
            # attempting to re-use buffer")
            dft_path = os.path.join(tmp, "hyena_dft.onnx")
            torch.onnx.export(half, (torch.randn(batch, dft_length, d_model).half(),), dft_path, dynamo=True)
            dft_session = onnxruntime.InferenceSession(dft_path, providers=providers)
        except Exception as e:  # noqa: BLE001 - reported, the rest of the benchmark goes on
            log(f"default ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        half = half.to(dev)
        in_name, out_name = session.get_inputs()[0].name, session.get_outputs()[0].name
        rows = []
        log(f"GPU: {meta['gpu']}; {meta['model']}, B={batch}, fp16; {meta['timing']} (CUDA events)")
        log(f"{'L':>8s} | {'torch eager':>11s} {'ORT fftconv':>11s} {'+CUDA graph':>11s} {'ORT DFT':>9s} | "
            f"{'speedup':>7s} {'graph':>6s} | err ORT / err torch fp16 (vs fp32)")
        for L in lengths:
            x = torch.randn(batch, L, d_model, device=dev).half()
            y = torch.empty_like(x)
            # ORT's CUDA graphs: the launches of a run captured once for this shape, then replayed
            graph_session = make_session(path, providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "1"}),
                                                          "CPUExecutionProvider"])
            y_graph = torch.empty_like(x)
            timed = (lambda: half(x), lambda: run_on_device(session, {in_name: x}, {out_name: y}),
                     lambda: run_on_device(graph_session, {in_name: x}, {out_name: y_graph}))
            with torch.no_grad():
                # interleaved rounds, the fastest median of each: PyTorch eager's host-bound dispatch
                # varies from round to round, and a slow round must not decide the ratio
                rounds = [[_cuda_ms(fn, repeats) for fn in timed] for _ in range(rounds_per_length)]
                t_torch, t_ort, t_graph = (min(times) for times in zip(*rounds))
                expected = reference(x.float())
                eager = half(x).float()
            del graph_session
            t_dft, dft_failure = None, None
            if dft_session is not None and L == dft_length:
                feed = {dft_session.get_inputs()[0].name: x.cpu().numpy()}
                try:
                    t_dft = _cuda_ms(lambda: dft_session.run(None, feed), 1, warmup=0)  # seconds per run
                except Exception as e:  # noqa: BLE001 - a failing baseline is a result
                    dft_failure = f"{type(e).__name__}: {str(e)[:300]}"
                    log(f"default ONNX export at L={L}: {dft_failure}")
            scale = float(expected.abs().max())
            err_ort = float((y.float() - expected).abs().max()) / scale
            err_graph = float((y_graph.float() - expected).abs().max()) / scale
            err_torch = float((eager - expected).abs().max()) / scale
            row = dict(meta, L=L, torch_eager_ms=round(t_torch, 3), ort_fftconv_ms=round(t_ort, 3),
                       ort_default_export_ms=None if t_dft is None else round(t_dft, 1),
                       ort_default_export_failure=dft_failure,
                       speedup_over_torch=round(t_torch / t_ort, 3), rel_error_ort=err_ort,
                       ort_fftconv_cuda_graph_ms=round(t_graph, 3),
                       speedup_cuda_graph_over_torch=round(t_torch / t_graph, 3), rel_error_ort_cuda_graph=err_graph,
                       rel_error_torch_fp16=err_torch)
            rows.append(row)
            dft = f"{t_dft:7.0f}ms" if t_dft is not None else f"{'fails' if dft_failure else '-':>9s}"
            log(f"{L:8d} | {t_torch:9.2f}ms {t_ort:9.2f}ms {t_graph:9.2f}ms {dft} | {t_torch / t_ort:6.2f}x "
                f"{t_torch / t_graph:5.2f}x | {max(err_ort, err_graph):.1e} / {err_torch:.1e}")
            del x, y, y_graph
            torch.cuda.empty_cache()
    _append_results(rows, out_path, log)
    return rows


def _float64_error(got, u, k, n: int, freq_keep: int = 0, D=None) -> float:
    """max|got - ref| / max|ref| against the float64 convolution of rows u with filters k (one
    per row) at period n, cut to u's length; freq_keep > 0 zeroes the filter's bins from there."""
    import torch

    u64, k64 = u.double(), k.double()
    k_f = torch.fft.rfft(k64, n=n)
    if freq_keep:
        k_f[..., freq_keep:] = 0
    ref = torch.fft.irfft(torch.fft.rfft(u64, n=n) * k_f, n=n)[..., :u.shape[-1]]
    if D is not None:
        ref = ref + u64 * D.double().unsqueeze(-1)
    return float((got.double() - ref).abs().max() / ref.abs().max())


def _prepared_call(u, k, D, y, layout="BHL", freq_keep=0):
    """The deployment path of one call: the filter prepared once, the workspace allocated once;
    returns (run, spectrum, workspace), run() launching the forward kernels on the current stream."""
    import ctypes

    import torch

    from . import _lib
    from .torch_op import _resolve, _workspace, prepare_filter_cuda

    params, _ = _resolve(u, k, D, None, None, 0, layout, freq_keep)
    params.stream = torch.cuda.current_stream().cuda_stream
    spectrum = prepare_filter_cuda(params, k, u.device)
    params.u, params.y = u.data_ptr(), y.data_ptr()
    params.D = D.data_ptr() if D is not None else None
    workspace = _workspace(params, u.device)
    lib = _lib.core()

    def run():
        _lib.check(lib.fftconv_cuda_forward(ctypes.byref(params), spectrum.data_ptr(), workspace.data_ptr(),
                                            workspace.numel()))

    return run, spectrum, workspace


PARTIAL_LENGTHS = (1 << 17, 1 << 21, 1 << 24)
PARTIAL_TAPS = (1024, 4096, 16384)


def run_partial_bench(lengths=PARTIAL_LENGTHS, taps=PARTIAL_TAPS, elements: int = 1 << 26, repeats: int = 10,
                      out_path: Optional[str] = None, log=print) -> list[dict]:
    """Partial convolutions (filters cut to N taps) against the dense op (the full filter of L
    taps) on the GPU, fp16, B = 1, H = elements / L (at least 16 rows): time (median, CUDA
    events), the op's own memory (prepared filter + workspace) and the peak of the call, and
    the error of the partial result on 4 rows against a float64 reference."""
    import torch

    from ._lib import FFTConvError
    from .spec import tolerance

    dev = torch.device("cuda")
    meta = {"device": "cuda", "gpu": torch.cuda.get_device_name(dev), "date": datetime.date.today().isoformat(),
            "torch": torch.__version__, "dtype": "float16", "causal": True, "bench": "partial"}
    rows = []
    log(f"GPU: {meta['gpu']}; fp16, B = 1; median of {repeats} (CUDA events); dense = the full filter of L taps")
    log(f"{'L':>9s} {'H':>5s} {'taps':>6s} | {'time':>9s} {'op memory':>10s} {'peak':>9s} | "
        f"{'dense/this':>10s} | rel.err")

    def measure(u, k, y):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        run, spectrum, workspace = _prepared_call(u, k, None, y)
        run()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(dev) - base + 2 * u.numel() * u.element_size()
        own = spectrum.numel() * 4 + (workspace.numel() if workspace.numel() > 1 else 0)
        return _cuda_ms(run, repeats), own, peak

    for L in lengths:
        H = max(16, elements // L)
        g = torch.Generator(device=dev).manual_seed(L)
        u = torch.randn(1, H, L, device=dev, generator=g).half()
        y = torch.empty_like(u)
        t = torch.arange(L, device=dev, dtype=torch.float32)
        dense_k = torch.randn(H, L, device=dev, generator=g) * torch.exp(-t / 4096) / 64
        try:
            t_dense, own, peak = measure(u, dense_k, y)
            dense = dict(time_ms=round(t_dense, 4), op_bytes=own, peak_bytes=peak)
        except (FFTConvError, torch.OutOfMemoryError) as e:
            t_dense, dense = None, dict(failure=str(e).splitlines()[0][:200])
        del dense_k
        torch.cuda.empty_cache()
        log(f"{L:9d} {H:5d} {'L':>6s} | " + (f"{t_dense:7.3f}ms {own / 2**20:8.1f}MB {peak / 2**20:7.0f}MB |"
                                           if t_dense is not None else f"{'fails: ' + dense['failure'][:60]}"))
        for n in taps:
            k = torch.randn(H, n, device=dev, generator=g) * torch.exp(-t[:n] / 4096) / 64
            t_part, own, peak = measure(u, k, y)
            window = min(L, 1 << 20)  # float64 reference of the first `window` steps of 4 rows
            err = _float64_error(y[0, :4, :window], u[0, :4, :window], k[:4], 2 * window)
            row = dict(meta, L=L, B=1, H=H, taps=n, time_ms=round(t_part, 4), op_bytes=own, peak_bytes=peak,
                       dense=dense, dense_over_partial=None if t_dense is None else round(t_dense / t_part, 2),
                       rel_error=err, tolerance=tolerance("float16"))
            rows.append(row)
            ratio = f"{t_dense / t_part:9.2f}x" if t_dense is not None else f"{'-':>10s}"
            log(f"{L:9d} {H:5d} {n:6d} | {t_part:7.3f}ms {own / 2**20:8.1f}MB {peak / 2**20:7.0f}MB | {ratio} | "
                f"{err:.1e}")
            del k
            torch.cuda.empty_cache()
        del u, y
        torch.cuda.empty_cache()
    _append_results(rows, out_path, log)
    return rows


SPARSE_LENGTHS = (1 << 13, 1 << 15, 1 << 17, 1 << 19, 1 << 21)
SPARSE_KEEPS = (2, 4, 8)  # keep 1/2, 1/4, 1/8 of the rfft bins


def run_sparse_bench(lengths=SPARSE_LENGTHS, keeps=SPARSE_KEEPS, elements: int = 1 << 26, repeats: int = 20,
                     out_path: Optional[str] = None, log=print) -> list[dict]:
    """Frequency-sparse convolutions (freq_keep = (L + 1) / r of the L + 1 bins at the period 2L)
    against the dense op on the GPU, fp16, B = 4, B*H*L = elements: time (median, CUDA events)
    and the error against the float64 sparse reference on 4 rows."""
    import torch

    from .spec import tolerance

    dev = torch.device("cuda")
    meta = {"device": "cuda", "gpu": torch.cuda.get_device_name(dev), "date": datetime.date.today().isoformat(),
            "torch": torch.__version__, "dtype": "float16", "causal": True, "bench": "freq_sparse"}
    rows = []
    log(f"GPU: {meta['gpu']}; fp16, B*H*L = {elements}; median of {repeats} (CUDA events)")
    log(f"{'L':>8s} {'keep':>6s} {'bins':>8s} | {'time':>9s} | {'dense/this':>10s} | rel.err")
    for L in lengths:
        B = 4
        H = max(1, elements // (B * L))
        g = torch.Generator(device=dev).manual_seed(L)
        u = torch.randn(B, H, L, device=dev, generator=g).half()
        y = torch.empty_like(u)
        t = torch.arange(L, device=dev, dtype=torch.float32)
        k = torch.randn(H, L, device=dev, generator=g) * torch.exp(-t / (L / 8)) / np.sqrt(L)
        run, _, _ = _prepared_call(u, k, None, y)
        t_dense = _cuda_ms(run, repeats)
        log(f"{L:8d} {'1':>6s} {L + 1:8d} | {t_dense:7.3f}ms |")
        for r in keeps:
            bins = (L + 1) // r
            run, _, _ = _prepared_call(u, k, None, y, freq_keep=bins)
            t_sparse = _cuda_ms(run, repeats)
            err = _float64_error(y[0, :4], u[0, :4], k[:4], 2 * L, freq_keep=bins)
            rows.append(dict(meta, L=L, B=B, H=H, keep=f"1/{r}", freq_keep=bins, time_ms=round(t_sparse, 4),
                             dense_ms=round(t_dense, 4), dense_over_sparse=round(t_dense / t_sparse, 3), rel_error=err,
                             tolerance=tolerance("float16")))
            log(f"{L:8d} {'1/' + str(r):>6s} {bins:8d} | {t_sparse:7.3f}ms | {t_dense / t_sparse:9.2f}x | {err:.1e}")
        del u, y, k
        torch.cuda.empty_cache()
    _append_results(rows, out_path, log)
    return rows


def run_gpu_bench(lengths=GPU_LENGTHS, dtypes=("float16", "bfloat16", "float32"), elements: int = 1 << 26,
                  batch: int = 4, repeats: int = 30, out_path: Optional[str] = None, layout: str = "BHL",
                  log=print) -> list[dict]:
    """GPU benchmark: for each L and dtype, in one run, a device copy of the same bytes, PyTorch's
    cuFFT convolution with the filter spectrum cached, and fftconv-rt (prepared spectrum and
    workspace, the deployment path), timed with CUDA events (median), with the ratios and the
    accuracy against a float64 cuFFT reference. layout "BLH" stores u and y channels-last."""
    import torch

    from .spec import tolerance

    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    meta = {"device": "cuda", "gpu": name, "date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "batch_x_channels_x_length": elements, "causal": True, "layout": layout}
    torch_dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}

    def cuda_ms(fn) -> float:
        return _cuda_ms(fn, repeats)

    rows = []
    log(f"GPU: {name}; B*H*L = {elements}; layout {layout}; causal (n = 2L); median of {repeats} (CUDA events)")
    log(f"{'dtype':>8s} {'L':>8s} {'B':>3s} {'H':>7s} | {'copy':>8s} {'cuFFT':>8s} {'ours':>8s} | "
        f"{'ours/copy':>9s} {'cuFFT/ours':>10s} | rel.err (tol)")
    for dtype in dtypes:
        tdt = torch_dtypes[dtype]
        for L in lengths:
            B = min(batch, max(1, elements // L))
            H = max(1, elements // (B * L))
            g = torch.Generator(device=dev).manual_seed(L)
            u = torch.randn(B, H, L, device=dev, generator=g).to(tdt)
            if layout == "BLH":  # channels-last storage; `u` stays the (B, H, L) view of it
                u = u.transpose(1, 2).contiguous().transpose(1, 2)
            t = torch.arange(L, device=dev, dtype=torch.float32)
            k = torch.randn(H, L, device=dev, generator=g) * torch.exp(-t / (L / 8)) / np.sqrt(L)
            D = torch.randn(H, device=dev, generator=g)
            y = torch.empty_like(u)
            copy_dst = torch.empty_like(u)

            n = 2 * L
            k_f = torch.fft.rfft(k, n=n) / n

            def cufft_conv():
                u_f = torch.fft.rfft(u.float(), n=n)
                out = torch.fft.irfft(u_f * k_f, n=n, norm="forward")[..., :L] + u * D.unsqueeze(-1)
                return out.to(tdt)

            stored = u.transpose(1, 2) if layout == "BLH" else u  # contiguous in its layout
            ours, spectrum, workspace = _prepared_call(stored, k, D, y, layout)

            t_copy = cuda_ms(lambda: copy_dst.copy_(u))
            t_cufft = cuda_ms(cufft_conv)
            t_ours = cuda_ms(ours)
            # accuracy on up to 64 rows against float64 cuFFT
            ours()
            channels = torch.arange(min(B * H, 64), device=dev) % H
            rows_checked = len(channels)
            err = _float64_error(y.reshape(B * H, L)[:rows_checked], u.reshape(B * H, L)[:rows_checked],
                                 k[channels], n, D=D[channels])
            row = dict(meta, dtype=dtype, L=L, B=B, H=H, copy_ms=round(t_copy, 4), cufft_cached_ms=round(t_cufft, 4),
                       fftconv_rt_ms=round(t_ours, 4), ours_over_copy=round(t_ours / t_copy, 3),
                       cufft_over_ours=round(t_cufft / t_ours, 3), rel_error=err, tolerance=tolerance(dtype),
                       workspace_bytes=int(workspace.numel()) if workspace.numel() > 1 else 0)
            rows.append(row)
            log(f"{dtype:>8s} {L:8d} {B:3d} {H:7d} | {t_copy:6.3f}ms {t_cufft:6.3f}ms {t_ours:6.3f}ms | "
                f"{t_ours / t_copy:9.2f} {t_cufft / t_ours:10.2f} | {err:.1e} ({tolerance(dtype):.0e})")
            del u, k, D, y, copy_dst, k_f, spectrum, workspace
            torch.cuda.empty_cache()
    _append_results(rows, out_path, log)
    return rows


def plot_gpu_results(jsonl_path: str, png_path: str) -> None:
    """One panel per I/O type: time against L for the device copy, PyTorch cuFFT (cached
    filter) and fftconv-rt, from the JSON lines of run_gpu_bench."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(jsonl_path).read_text().splitlines() if line.strip()]
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    fig, axes = plt.subplots(1, len(dtypes), figsize=(5 * len(dtypes), 4), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes):
        sel = sorted((r for r in rows if r["dtype"] == dtype), key=lambda r: r["L"])
        Ls = [r["L"] for r in sel]
        for key, label in (("copy_ms", "device copy (same bytes)"), ("cufft_cached_ms", "PyTorch cuFFT, cached filter"),
                           ("fftconv_rt_ms", "fftconv-rt")):
            ax.plot(Ls, [r[key] for r in sel], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("L (B*H*L = 2^26, causal)")
        ax.set_ylabel("ms")
        ax.set_title(f"{dtype} I/O on {sel[0]['gpu']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
