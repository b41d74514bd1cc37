"""Benchmarks of fftconv-rt, each in one run beside its baselines, one JSON line per measured case.

CPU (default): the torch op and the ONNX Runtime op beside PyTorch's torch.fft.rfft convolution and
ONNX Runtime running the default ONNX export (DFT nodes). GPU (--gpu, causal or --circular): beside a
device copy, PyTorch's cuFFT convolution and the peers FlashFFTConv and ThunderKittens' FFTConv.
End to end (--model), partial (--partial) and frequency-sparse (--sparse) convolutions on the GPU."""

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
    log(f"CPU: {meta['cpu']}, {threads} threads; B*H*L = {elements}; float32; median of {repeats} calls in "
        "round-robin blocks")
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
CIRCULAR_LENGTHS = (1024, 4096)
CIRCULAR_CHANNELS = 768  # the bidirectional models' width, as issue 21 measured them
MODEL_LENGTHS = (2048, 8192, 32768, 131072)
PEERS = ("flashfftconv", "thunderkittens")
THUNDERKITTENS_ENV = "FFTCONV_RT_THUNDERKITTENS"


class BenchUnavailableError(ValueError):
    """A benchmark this machine cannot run (no GPU, no CUDA kernels, no CUDA provider). A ValueError,
    like every request the CLI refuses, so that `fftconv-rt bench` reports it in one line."""


def require_cuda(flag: str, ort_cuda: bool = False) -> None:
    """Raises BenchUnavailableError naming what is missing for `bench <flag>` on this machine."""
    import torch

    from . import _lib

    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no device visible"
        raise BenchUnavailableError(f"bench {flag} needs an NVIDIA GPU, and torch {torch.__version__} ({build}) "
                                    "sees none; run `fftconv-rt bench` without GPU flags for the CPU benchmark")
    if not _lib.has_cuda_kernels():
        raise BenchUnavailableError(f"bench {flag}: this build of fftconv-rt has no CUDA kernels (built without "
                                    "nvcc); rebuild with -DFFTCONV_BUILD_CUDA=ON")
    if ort_cuda:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
        if "CUDAExecutionProvider" not in providers:
            raise BenchUnavailableError(f"bench {flag} needs onnxruntime's CUDAExecutionProvider (pip install "
                                        f"onnxruntime-gpu); onnxruntime {onnxruntime.__version__} has "
                                        f"{', '.join(providers)}")


def _failure(error: BaseException) -> str:
    """One line naming a failed measurement: the exception type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300]}" if lines else type(error).__name__


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


def _wall_ms(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time in ms of fn: the CPU runs of the GPU benchmark's code (its tests)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def _device_name(dev) -> str:
    import torch

    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu: {_cpu_name()}"


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


def _prepared_call(u, k, D, y, layout="BHL", freq_keep=0, fft_size=0, pregate=None, postgate=None, k_rev=None):
    """The deployment path of one call: the filter prepared once, the workspace allocated once;
    returns (run, spectrum, workspace), run() launching the forward kernels on the current stream.
    u, y, pregate and postgate are the stored (contiguous) tensors of `layout`."""
    import ctypes

    import torch

    from . import _lib
    from .torch_op import _workspace, prepare_filter_cuda

    given = {"u": u, "k": k, "D": D, "pregate": pregate, "postgate": postgate, "k_rev": k_rev}
    unknown = [name for name, t in given.items() if t is not None and name not in _lib.INPUT_NAMES]
    if unknown:
        raise ValueError(f"this build of the op has no input {', '.join(unknown)}")
    tensors = [given.get(name) for name in _lib.INPUT_NAMES]
    descs = [_lib.describe(t.shape, _lib.dtype_code(str(t.dtype))) if t is not None else _lib.describe((), None)
             for t in tensors]
    params, _ = _lib.resolve(descs, fft_size, layout, freq_keep)
    params.stream = torch.cuda.current_stream().cuda_stream
    spectrum = prepare_filter_cuda(params, k, u.device, **({"k_rev": k_rev} if k_rev is not None else {}))
    _lib.set_pointers(params, [t.data_ptr() if t is not None else None for t in tensors], y.data_ptr())
    workspace = _workspace(params, u.device)
    lib = _lib.core()

    def run():
        _lib.check(lib.fftconv_cuda_forward(ctypes.byref(params), spectrum.data_ptr(), workspace.data_ptr(),
                                            workspace.numel()))

    return run, spectrum, workspace


def _cpu_call(u, k, D, y, layout="BHL", fft_size=0):
    """The CPU op writing into y: what run_gpu_bench times in place of the CUDA path when it runs
    on the CPU (the tests of its rows, modes and errors on a machine without a GPU)."""
    from .torch_op import fftconv

    def run():
        y.copy_(fftconv(u, k, D, fft_size=fft_size, layout=layout))

    return run, None, None


class PeerUnavailable(Exception):
    """A peer that cannot be measured for this case; the message is the reason the row records."""


class _Peers:
    """The peer implementations measured beside fftconv-rt, each imported once per run. A peer's
    `runner(case)` returns a callable computing y (B, H, L) for the case, or raises PeerUnavailable."""

    def __init__(self, names, thunderkittens_path: Optional[str]):
        unknown = sorted(set(names) - set(PEERS))
        if unknown:
            raise ValueError(f"unknown peer {', '.join(unknown)}; expected some of {', '.join(PEERS)}")
        self.names = tuple(names)
        self.thunderkittens_path = thunderkittens_path or os.environ.get(THUNDERKITTENS_ENV) or None
        self._imported: dict = {}

    def _import(self, name: str):
        """The peer's module class, or PeerUnavailable with why not (remembered for the whole run)."""
        if name not in self._imported:
            try:
                self._imported[name] = (self._import_flashfftconv if name == "flashfftconv"
                                        else self._import_thunderkittens)()
            except PeerUnavailable as e:
                self._imported[name] = e
        found = self._imported[name]
        if isinstance(found, PeerUnavailable):
            raise found
        return found

    @staticmethod
    def _import_flashfftconv():
        try:
            from flashfftconv import FlashFFTConv
        except Exception as e:  # noqa: BLE001 - its extension may fail to load in many ways; the row says how
            raise PeerUnavailable(f"flashfftconv is not importable ({_failure(e)}); build it from "
                                  "HazyResearch/flash-fft-conv (csrc/flashfftconv, then the package)") from None
        return FlashFFTConv

    def _import_thunderkittens(self):
        """TKFFTConv from baselines/tk_fftconv.py of a built ThunderKittens kernels/fftconv folder; the
        folder and its baselines/ go first on sys.path (the module imports the built extension as _C)."""
        import importlib.util
        import sys

        if not self.thunderkittens_path:
            raise PeerUnavailable(f"no ThunderKittens checkout given (--thunderkittens PATH or {THUNDERKITTENS_ENV}="
                                  "PATH: the built kernels/fftconv folder of HazyResearch/ThunderKittens)")
        folder = Path(self.thunderkittens_path).resolve()
        module_file = folder / "baselines" / "tk_fftconv.py"
        if not module_file.is_file():
            raise PeerUnavailable(f"{module_file} does not exist; --thunderkittens must name ThunderKittens' "
                                  "kernels/fftconv folder")
        for entry in (str(folder / "baselines"), str(folder)):  # the folder ends up first
            if entry in sys.path:
                sys.path.remove(entry)
            sys.path.insert(0, entry)
        try:
            extension = importlib.import_module("_C")
        except Exception as e:  # noqa: BLE001
            raise PeerUnavailable(f"ThunderKittens' extension _C is not importable from {folder} ({_failure(e)}); "
                                  "build it there with `make GPU=H100 PYBIND_INCLUDES=`") from None
        if not hasattr(extension, "fftconv"):
            raise PeerUnavailable(f"the module _C found first on sys.path ({getattr(extension, '__file__', '?')}) "
                                  "is not ThunderKittens' FFTConv extension (no fftconv function)")
        spec = importlib.util.spec_from_file_location("fftconv_rt_bench_tk_fftconv", module_file)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001
            raise PeerUnavailable(f"{module_file} failed to import ({_failure(e)})") from None
        return module.TKFFTConv

    def runner(self, name: str, case: dict):
        import torch

        if case["layout"] != "BHL":
            raise PeerUnavailable("measured in the BHL layout only (its input layout)")
        u, k = case["u"], case["k"]
        if name == "flashfftconv":
            if case["dtype"] not in ("float16", "bfloat16"):
                raise PeerUnavailable(f"FlashFFTConv takes float16/bfloat16 input, not {case['dtype']}")
            FlashFFTConv = self._import(name)
            try:  # its module takes the FFT size: 2L causal, L circular; it transforms k in every call
                module = FlashFFTConv(case["fft_size"], dtype=u.dtype).to(u.device).eval()
            except NotImplementedError as e:
                raise PeerUnavailable(f"FlashFFTConv has no FFT size {case['fft_size']} ({_failure(e)})") from None
            return lambda: module(u, k)
        if case["mode"] != "circular":
            raise PeerUnavailable("ThunderKittens' FFTConv computes circular convolutions only (--circular)")
        if case["dtype"] != "bfloat16":
            raise PeerUnavailable(f"ThunderKittens' FFTConv takes bfloat16 input only, not {case['dtype']}")
        if case["fft_size"] not in (1024, 4096):
            raise PeerUnavailable(f"ThunderKittens' FFTConv has periods 1024 and 4096 only, not {case['fft_size']}")
        TKFFTConv = self._import(name)
        if u.device.type == "cuda" and torch.cuda.get_device_capability(u.device) != (9, 0):
            raise PeerUnavailable("ThunderKittens' FFTConv runs on H100/H200 (sm_90) only")
        # it prepares the filter spectrum in its constructor
        module = TKFFTConv(k, seqlen=case["fft_size"], H=k.shape[0], dtype=torch.bfloat16).to(u.device)
        return lambda: module(u, k)


def _gpu_shape(L: int, elements: int, batch: int, channels: Optional[int]) -> tuple[int, int]:
    """(B, H) of one case: with `channels`, H = min(channels, elements / L) and B fills B*H*L up to
    `elements`; without, B = min(batch, elements / L) and H fills it."""
    if channels:
        H = max(1, min(channels, elements // L))
        return max(1, elements // (H * L)), H
    B = min(batch, max(1, elements // L))
    return B, max(1, elements // (B * L))


def _cuda_error(dev) -> Optional[str]:
    """Why the CUDA context can no longer run anything (a sticky error a crashed kernel left), or None."""
    import torch

    if dev.type != "cuda":
        return None
    try:
        torch.cuda.synchronize(dev)
    except Exception as e:  # noqa: BLE001 - returned as the reason
        return _failure(e)
    return None


def _ensure_cuda_usable(dev, after: str) -> None:
    """Raises, saying what to do, when `after` (a failure) left the CUDA context unusable."""
    lost = _cuda_error(dev)
    if lost:
        raise RuntimeError(f"the CUDA context is unusable after {after} ({lost}); the rows measured so far are "
                           "written; leave that variant or length (--lengths) out and run the rest again")


# A peer whose output is this far from float64 computed something else (a kernel that failed without
# raising); its time is not comparable. The loosest tolerance of the op is 8e-3 (bf16).
WRONG_RESULT_ERROR = 0.05


def _measure_peer(peers: _Peers, name: str, case: dict, timer, ours_ms: float, checked: dict) -> dict:
    """The row fields of one peer: <name>_ms, _rel_error (its own convolution, no skip term, against
    float64 on the checked rows), _over_ours, and _failure (null, or why it was not measured). A
    failure that loses the CUDA context sets case["context_lost"]."""
    import torch

    fields = {f"{name}_ms": None, f"{name}_rel_error": None, f"{name}_over_ours": None, f"{name}_failure": None}
    u = case["u"]
    try:
        run = peers.runner(name, case)
        with torch.no_grad():
            y = run()
            if tuple(y.shape) != tuple(u.shape):
                raise PeerUnavailable(f"returned shape {tuple(y.shape)}, expected {tuple(u.shape)}")
            rows = checked["rows"]
            error = _float64_error(y.reshape(-1, u.shape[-1])[:rows], u.reshape(-1, u.shape[-1])[:rows],
                                   case["k"][checked["channels"]], case["fft_size"])
            if not error <= WRONG_RESULT_ERROR:  # NaN included
                fields[f"{name}_rel_error"] = error
                raise PeerUnavailable(f"wrong result: error {error:.2e} against float64 (over {WRONG_RESULT_ERROR})")
            ms = timer(run)
    except PeerUnavailable as e:
        fields[f"{name}_failure"] = str(e)
        return fields
    except Exception as e:  # noqa: BLE001 - a peer failing (as FlashFFTConv does at 2M) is a result
        fields[f"{name}_failure"] = _failure(e)
        lost = _cuda_error(case["device"])
        if lost:
            fields[f"{name}_failure"] += f"; it left the CUDA context unusable ({lost})"
            case["context_lost"] = f"{name} failed at L={u.shape[-1]} and left the CUDA context unusable ({lost})"
        return fields
    fields.update({f"{name}_ms": round(ms, 4), f"{name}_rel_error": error, f"{name}_over_ours": round(ms / ours_ms, 3)})
    return fields


def _gpu_case(setup: dict, dtype: str, tdt, L: int, B: int, H: int) -> dict:
    """One row of run_gpu_bench: copy, cuFFT, fftconv-rt and the peers on one (dtype, L, B, H)."""
    import torch

    from .spec import tolerance

    dev, layout, timer = setup["device"], setup["layout"], setup["timer"]
    circular = setup["mode"] == "circular"
    n = L if circular else 2 * L
    g = torch.Generator(device=dev).manual_seed(L)
    u = torch.randn(B, H, L, device=dev, generator=g).to(tdt)
    if layout == "BLH":  # channels-last storage; `u` stays the (B, H, L) view of it
        u = u.transpose(1, 2).contiguous().transpose(1, 2)
    t = torch.arange(L, device=dev, dtype=torch.float32)
    k = torch.randn(H, L, device=dev, generator=g) * torch.exp(-t / (L / 8)) / np.sqrt(L)
    D = torch.randn(H, device=dev, generator=g)
    y = torch.empty_like(u)
    copy_dst = torch.empty_like(u)
    k_f = torch.fft.rfft(k, n=n) / n

    def cufft_conv():
        u_f = torch.fft.rfft(u.float(), n=n)
        out = torch.fft.irfft(u_f * k_f, n=n, norm="forward")[..., :L] + u * D.unsqueeze(-1)
        return out.to(tdt)

    # the tensors as stored in their layout (contiguous)
    stored, y_stored = (u.transpose(1, 2), y.transpose(1, 2)) if layout == "BLH" else (u, y)
    call = _prepared_call if dev.type == "cuda" else _cpu_call
    ours, _, workspace = call(stored, k, D, y_stored, layout=layout, fft_size=n if circular else 0)

    t_copy = timer(lambda: copy_dst.copy_(u))
    t_cufft = timer(cufft_conv)
    t_ours = timer(ours)
    # accuracy on up to 64 rows against float64 cuFFT
    ours()
    channels_checked = torch.arange(min(B * H, 64), device=dev) % H
    checked = {"rows": len(channels_checked), "channels": channels_checked}
    err = _float64_error(y.reshape(B * H, L)[:checked["rows"]], u.reshape(B * H, L)[:checked["rows"]],
                         k[channels_checked], n, D=D[channels_checked])
    case = {"device": dev, "layout": layout, "mode": setup["mode"], "dtype": dtype, "fft_size": n, "u": u, "k": k}
    peer_fields = {}
    for peer in setup["peers"].names:
        if "context_lost" in case:
            peer_fields.update({f"{peer}_ms": None, f"{peer}_rel_error": None, f"{peer}_over_ours": None,
                                f"{peer}_failure": "not run: " + case["context_lost"]})
        else:
            peer_fields.update(_measure_peer(setup["peers"], peer, case, timer, t_ours, checked))
    setup["context_lost"] = case.get("context_lost")
    workspace_bytes = int(workspace.numel()) if workspace is not None and workspace.numel() > 1 else 0
    return dict(setup["meta"], dtype=dtype, L=L, B=B, H=H, fft_size=n, copy_ms=round(t_copy, 4),
                cufft_cached_ms=round(t_cufft, 4), fftconv_rt_ms=round(t_ours, 4),
                ours_over_copy=round(t_ours / t_copy, 3), cufft_over_ours=round(t_cufft / t_ours, 3),
                rel_error=err, tolerance=tolerance(dtype), workspace_bytes=workspace_bytes, **peer_fields)


def run_gpu_bench(lengths=None, dtypes=("float16", "bfloat16", "float32"), elements: int = 1 << 26,
                  batch: int = 4, repeats: int = 30, out_path: Optional[str] = None, layout: str = "BHL",
                  log=print, mode: str = "causal", channels: Optional[int] = None, peers=PEERS,
                  thunderkittens: Optional[str] = None, device: str = "cuda") -> list[dict]:
    """GPU benchmark: for each L and dtype, in one run, a device copy of the same bytes, PyTorch's
    cuFFT convolution with the filter spectrum cached, fftconv-rt (prepared spectrum and workspace,
    the deployment path) and the peers that are importable (FlashFFTConv; ThunderKittens' FFTConv in
    circular bf16 at 1K/4K), timed with CUDA events (median), with the ratios and the accuracy
    against a float64 cuFFT reference. mode "causal": period n = 2L (default lengths 128 .. 2M);
    "circular": period n = L, H = 768 channels unless `channels` says otherwise (lengths 1K, 4K).
    layout "BLH" stores u and y channels-last. device "cpu" runs the same cases with the CPU op and
    wall-clock medians (what the tests run on machines without a GPU). Rows are appended to out_path
    as they are measured."""
    import torch

    if mode not in ("causal", "circular"):
        raise ValueError(f"bench --gpu: mode must be 'causal' or 'circular', got {mode!r}")
    if layout not in ("BHL", "BLH"):
        raise ValueError(f"bench --gpu: layout must be 'BHL' or 'BLH', got {layout!r}")
    torch_dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    unknown = [d for d in dtypes if d not in torch_dtypes]
    if unknown:
        raise ValueError(f"bench --gpu: unknown dtype {', '.join(unknown)}; expected some of "
                         f"{', '.join(torch_dtypes)}")
    peer_set = _Peers(peers, thunderkittens)
    dev = torch.device(device)
    if dev.type == "cuda":
        require_cuda("--gpu")
    circular = mode == "circular"
    lengths = tuple(lengths or (CIRCULAR_LENGTHS if circular else GPU_LENGTHS))
    channels = channels or (CIRCULAR_CHANNELS if circular else None)
    on_gpu = dev.type == "cuda"

    def timer(fn) -> float:
        return _cuda_ms(fn, repeats) if on_gpu else _wall_ms(fn, repeats)

    name = _device_name(dev)
    meta = {"device": dev.type, "gpu": name, "date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "batch_x_channels_x_length": elements, "mode": mode, "layout": layout}
    rows, logged_failures = [], set()
    period = "n = L" if circular else "n = 2L"
    log(f"GPU: {name}; B*H*L <= {elements}; layout {layout}; {mode} ({period}); median of {repeats} "
        f"({'CUDA events' if on_gpu else 'wall clock'}); peers: {', '.join(peer_set.names) or 'none'}")
    log(f"{'dtype':>8s} {'L':>8s} {'B':>3s} {'H':>7s} | {'copy':>8s} {'cuFFT':>8s} {'ours':>8s} | "
        f"{'ours/copy':>9s} {'cuFFT/ours':>10s} | " + "".join(f"{p[:10]:>10s} " for p in peer_set.names)
        + "| rel.err (tol)")
    setup = {"device": dev, "layout": layout, "mode": mode, "timer": timer, "peers": peer_set, "meta": meta}
    # length-major: a peer that crashes the CUDA context at one length loses no other length's rows
    for L in lengths:
        for dtype in dtypes:
            B, H = _gpu_shape(L, elements, batch, channels)
            row = _gpu_case(setup, dtype, torch_dtypes[dtype], L, B, H)
            rows.append(row)
            _append_results([row], out_path, log=lambda _: None)
            peer_text = "".join(f"{row[p + '_ms']:8.3f}ms " if row[p + "_ms"] is not None else f"{'-':>10s} "
                                for p in peer_set.names)
            log(f"{dtype:>8s} {L:8d} {B:3d} {H:7d} | {row['copy_ms']:6.3f}ms {row['cufft_cached_ms']:6.3f}ms "
                f"{row['fftconv_rt_ms']:6.3f}ms | {row['ours_over_copy']:9.2f} {row['cufft_over_ours']:10.2f} | "
                f"{peer_text}| {row['rel_error']:.1e} ({row['tolerance']:.0e})")
            for peer in peer_set.names:
                reason = row[f"{peer}_failure"]
                if reason and (peer, reason) not in logged_failures:  # each reason once
                    logged_failures.add((peer, reason))
                    log(f"{'':>8s} {peer} not measured: {reason}")
            if setup["context_lost"]:
                raise RuntimeError(f"{setup['context_lost']}; the rows so far are written" +
                                   (f" to {out_path}" if out_path else "") + "; run the remaining lengths again "
                                   "(--lengths) without that peer (--peers)")
            if on_gpu:
                torch.cuda.empty_cache()
    if out_path:
        log(f"results appended to {out_path}")
    return rows


MODEL_VARIANTS = ("torch_eager", "torch_compile", "torch_compile_cudagraph", "ort_fftconv", "ort_fftconv_cuda_graph")
ORT_MEMORY_MEASURE = ("cudaMemGetInfo: free device memory before the session was created minus after its warm-up "
                      "runs (its weights, arena, CUDA graph, library workspaces; input and output not counted)")
TORCH_MEMORY_MEASURE = ("torch.cuda.max_memory_allocated over the warm-up calls (from a reset) minus what was "
                        "allocated before them, plus the model's weights")


def _module_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def _torch_peak_bytes(fn, weights_bytes: int, calls: int = 3) -> int:
    """Device memory a PyTorch variant needs: its allocator's peak over `calls` calls (compiling and
    capturing included) above what was allocated before, plus its weights."""
    import torch

    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - before + weights_bytes)


def _session_device_bytes(make_session_fn, run, calls: int = 3):
    """(session, bytes): the device memory a new ORT session holds after `calls` runs, by the free
    memory the driver reports (ORT's arena is outside PyTorch's allocator)."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free_before = torch.cuda.mem_get_info()[0]
    session = make_session_fn()
    for _ in range(calls):
        run(session)
    torch.cuda.synchronize()
    return session, int(free_before - torch.cuda.mem_get_info()[0])


def _fftconv_nodes(onnx_path: str, d_model: int, length: int) -> list[dict]:
    """The FFTConv nodes of an exported model as the op's arguments at this length: which inputs
    each has, its layout and attributes, and its filter's shape and type (from the initializer;
    (d_model, length) float32 when the filter is computed in the graph)."""
    import onnx

    from ._lib import INPUT_NAMES

    model = onnx.load(onnx_path, load_external_data=False)
    initializers = {i.name: i for i in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.op_type != "FFTConv":
            continue
        present = {name: i < len(node.input) and node.input[i] != "" for i, name in enumerate(INPUT_NAMES)}
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        k = initializers.get(node.input[1])
        if k is not None and len(k.dims) == 2:
            channels, taps = int(k.dims[0]), min(int(k.dims[1]), length)
            k_dtype = onnx.helper.tensor_dtype_to_np_dtype(k.data_type).name
        else:
            channels, taps, k_dtype = d_model, length, "float32"
        layout = attributes.get("layout", b"BHL")
        nodes.append({"inputs": present, "channels": channels, "taps": taps, "k_dtype": k_dtype,
                      "layout": layout.decode() if isinstance(layout, bytes) else layout,
                      "fft_size": int(attributes.get("fft_size", 0)), "freq_keep": int(attributes.get("freq_keep", 0))})
    return nodes


def _gemms_ms(linears, rows: int, timer, dev) -> float:
    """The time of the nn.Linear layers' GEMMs, each on `rows` rows (one input per width)."""
    import torch

    inputs = {m.in_features: torch.randn(rows, m.in_features, device=dev, dtype=m.weight.dtype) for m in linears}

    def gemms():
        for m in linears:
            torch.nn.functional.linear(inputs[m.in_features], m.weight, m.bias)

    with torch.no_grad():
        return timer(gemms)


def _floor_ms(half_model, onnx_path: str, batch: int, length: int, d_model: int, timer, dev) -> dict:
    """The time no implementation of this model can beat with these kernels: its GEMMs measured
    alone (every nn.Linear outside the implicit filters, which export folds, on B*L rows) plus its
    FFTConv nodes measured alone (each node's shapes, inputs and attributes from the exported graph)."""
    import torch

    from .models import ImplicitFilter

    folded = [name for name, m in half_model.named_modules() if isinstance(m, ImplicitFilter)]
    linears = [m for name, m in half_model.named_modules() if isinstance(m, torch.nn.Linear)
               and not any(name.startswith(prefix + ".") for prefix in folded)]
    gemm_ms = _gemms_ms(linears, batch * length, timer, dev)
    torch_dtypes = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}
    fftconv_ms, nodes = 0.0, _fftconv_nodes(onnx_path, d_model, length)
    io_dtype = next(p.dtype for p in half_model.parameters() if p.dtype != torch.float32)
    for node in nodes:
        H, layout = node["channels"], node["layout"]
        shape = (batch, length, H) if layout == "BLH" else (batch, H, length)
        u = torch.randn(shape, device=dev, dtype=io_dtype)
        k = torch.randn(H, node["taps"], device=dev).to(torch_dtypes[node["k_dtype"]]) / node["taps"] ** 0.5
        D = torch.randn(H, device=dev) if node["inputs"]["D"] else None
        gates = [torch.randn_like(u) if node["inputs"][g] else None for g in ("pregate", "postgate")]
        k_rev = torch.randn_like(k) / node["taps"] ** 0.5 if node["inputs"].get("k_rev") else None
        y = torch.empty_like(u)
        run, _, _ = _prepared_call(u, k, D, y, layout=layout, freq_keep=node["freq_keep"], fft_size=node["fft_size"],
                                   pregate=gates[0], postgate=gates[1], k_rev=k_rev)
        fftconv_ms += timer(run)
    return {"floor_gemm_ms": round(gemm_ms, 3), "floor_fftconv_ms": round(fftconv_ms, 3),
            "floor_fftconv_nodes": len(nodes), "floor_gemms": len(linears), "floor_ms": round(gemm_ms + fftconv_ms, 3)}


FLOOR_FIELDS = ("floor_gemm_ms", "floor_fftconv_ms", "floor_fftconv_nodes", "floor_gemms", "floor_ms", "floor_failure")


def _model_row(meta: dict, L: int, times: dict, memory: dict, errors: dict, failures: dict, floor: dict,
               dft: dict) -> dict:
    """One row of bench --model: per variant <v>_ms, <v>_peak_bytes (PyTorch) or <v>_device_bytes (ORT),
    rel_error_<v> and <v>_failure; the floor; the ORT speedups over PyTorch eager and over the fastest
    PyTorch variant measured."""
    row = dict(meta, L=L)
    for v in MODEL_VARIANTS:
        ms = times.get(v)
        row[f"{v}_ms"] = None if ms is None else round(ms, 3)
        row[f"{v}_{'device' if v.startswith('ort') else 'peak'}_bytes"] = memory.get(v)
        row[f"rel_error_{v}"] = errors.get(v)
        row[f"{v}_failure"] = failures.get(v)
    torch_times = [times[v] for v in MODEL_VARIANTS if v.startswith("torch") and times.get(v) is not None]
    fastest_torch = min(torch_times) if torch_times else None
    row["fastest_torch_ms"] = None if fastest_torch is None else round(fastest_torch, 3)
    for v in ("ort_fftconv", "ort_fftconv_cuda_graph"):
        ms = times.get(v)
        suffix = "" if v == "ort_fftconv" else "_cuda_graph"
        row[f"speedup{suffix}_over_torch"] = (round(times["torch_eager"] / ms, 3)
                                              if ms and times.get("torch_eager") else None)
        row[f"speedup{suffix}_over_fastest_torch"] = round(fastest_torch / ms, 3) if ms and fastest_torch else None
    row.update(dict.fromkeys(FLOOR_FIELDS), **floor)
    best_ort = min((times[v] for v in ("ort_fftconv", "ort_fftconv_cuda_graph") if times.get(v)), default=None)
    row["ort_over_floor"] = round(best_ort / floor["floor_ms"], 3) if best_ort and floor.get("floor_ms") else None
    row.update(dft)
    return row


def _reference_error(got, expected) -> float:
    return float((got.float() - expected).abs().max() / expected.abs().max())


def _measure_variants(setups: dict, timer, rounds: int, after_failure=lambda variant: None):
    """Prepares every variant (setups: name -> a function returning (call, device bytes)), then times
    the prepared ones in `rounds` interleaved rounds, each variant's time the fastest round's median
    (PyTorch eager's host-bound dispatch varies from round to round, and a slow round must not decide
    a ratio). A variant that raises, preparing or timed, gets its reason in `failures` and leaves the
    rounds; after_failure(name) runs after each failure. Returns (callables, times, memory, failures)."""
    callables, memory, failures = {}, {}, {}
    for name, prepare in setups.items():
        try:
            callables[name], memory[name] = prepare()
        except Exception as e:  # noqa: BLE001 - one variant failing (torch.compile, say) is a result
            failures[name] = _failure(e)
            after_failure(name)
    samples = {name: [] for name in callables}
    for _ in range(rounds):
        for name in list(samples):
            try:
                samples[name].append(timer(callables[name]))
            except Exception as e:  # noqa: BLE001
                failures[name] = _failure(e)
                del samples[name]
                after_failure(name)
    return callables, {name: min(times) for name, times in samples.items()}, memory, failures


def _model_case(setup: dict, L: int) -> dict:
    """One row of run_model_bench: every variant at length L, its memory and error, the floor."""
    import torch

    from .ort import make_session, run_on_device

    dev, half, compiled = setup["device"], setup["half"], setup["compiled"]
    x = torch.randn(setup["batch"], L, setup["d_model"], device=dev).half()
    outputs = {v: torch.empty_like(x) for v in ("ort_fftconv", "ort_fftconv_cuda_graph")}

    def cudagraph_call():
        torch.compiler.cudagraph_mark_step_begin()  # a new replay: the last one's outputs may be overwritten
        return compiled["torch_compile_cudagraph"](x)

    def torch_variant(call):
        return lambda: (call, _torch_peak_bytes(call, setup["weights"]))

    def ort_variant(name, providers):
        def run(session):
            run_on_device(session, {session.get_inputs()[0].name: x}, {session.get_outputs()[0].name: outputs[name]})

        def prepare():
            session, held = _session_device_bytes(lambda: make_session(setup["path"], providers=providers), run)
            return (lambda: run(session)), held

        return prepare

    setups = {"torch_eager": torch_variant(lambda: half(x)),
              "torch_compile": torch_variant(lambda: compiled["torch_compile"](x)),
              "torch_compile_cudagraph": torch_variant(cudagraph_call),
              "ort_fftconv": ort_variant("ort_fftconv", setup["providers"]),
              "ort_fftconv_cuda_graph": ort_variant("ort_fftconv_cuda_graph", setup["graph_providers"])}
    with torch.no_grad():
        callables, times, memory, failures = _measure_variants(
            setups, lambda fn: _cuda_ms(fn, setup["repeats"]), setup["rounds"],
            after_failure=lambda name: _ensure_cuda_usable(dev, f"{name} failed at L={L}"))
        expected = setup["reference"](x.float())
        errors = {}
        for name in times:
            errors[name] = _reference_error(outputs[name] if name.startswith("ort") else callables[name](), expected)
        del callables, expected  # the ORT sessions go with their callables
        try:
            floor = _floor_ms(half, setup["path"], setup["batch"], L, setup["d_model"],
                              lambda fn: _cuda_ms(fn, setup["repeats"]), dev)
        except Exception as e:  # noqa: BLE001 - the floor failing leaves the measured variants standing
            floor = {"floor_failure": _failure(e)}
            _ensure_cuda_usable(dev, f"the floor's measurement at L={L}")
    dft = {"ort_default_export_ms": None, "ort_default_export_failure": None}
    dft_session = setup["dft_session"]
    if dft_session is not None and L == setup["dft_length"]:
        feed = {dft_session.get_inputs()[0].name: x.cpu().numpy()}
        try:  # seconds per run: one run
            dft["ort_default_export_ms"] = round(_cuda_ms(lambda: dft_session.run(None, feed), 1, warmup=0), 1)
        except Exception as e:  # noqa: BLE001 - a failing baseline is a result
            dft["ort_default_export_failure"] = _failure(e)
    return _model_row(setup["meta"], L, times, memory, errors, failures, floor, dft)


def run_model_bench(lengths=MODEL_LENGTHS, d_model: int = 768, layers: int = 4, batch: int = 1,
                    repeats: int = 10, dft_length: int = 2048, out_path: Optional[str] = None,
                    log=print, rounds_per_length: int = 3) -> list[dict]:
    """End to end on the GPU, one run: a Hyena stack (fp16) as PyTorch eager (cuFFT), torch.compile
    (default mode), torch.compile(mode="reduce-overhead") (CUDA graphs), ONNX Runtime's CUDA provider
    running the fftconv-rt export (IO binding on device tensors; plain and with ORT's CUDA graphs) and,
    at dft_length only, the default ONNX export (DFT nodes); each with its device memory (PyTorch: the
    allocator's peak; ORT: what the session holds, with make_session's arena settings) and its error
    against the float32 model on the same input; and the floor (the GEMMs and the FFTConv nodes, each
    measured alone). One exported model (dynamic length, filters stored for the longest L) for every
    L, a new session per L. Each time is the fastest of `rounds_per_length` interleaved medians of
    `repeats` runs; a variant that fails records its reason and the others go on."""
    import onnxruntime
    import torch

    from .export import export
    from .models import HyenaStack
    from .ort import CUDA_MEMORY_OPTIONS

    require_cuda("--model", ort_cuda=True)
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = HyenaStack(d_model, layers, max(lengths)).eval()
    half = copy.deepcopy(model).half()  # exported on the CPU, then run on the GPU
    reference = model.to(dev)
    for block in half.blocks:  # the implicit filters stay float32 (positions in fp16 lose precision)
        block.mixer.filter.float()
    meta = {"device": "cuda", "gpu": torch.cuda.get_device_name(dev), "date": datetime.date.today().isoformat(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "model": f"HyenaStack d={d_model} layers={layers}", "batch": batch, "dtype": "float16",
            "timing": f"fastest of {rounds_per_length} interleaved medians of {repeats}",
            "torch_memory": TORCH_MEMORY_MEASURE, "ort_memory": ORT_MEMORY_MEASURE,
            "ort_cuda_options": dict(CUDA_MEMORY_OPTIONS)}
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    graph_providers = [("CUDAExecutionProvider", {"enable_cuda_graph": "1"}), "CPUExecutionProvider"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "hyena.onnx")
        # the filters depend on L only as a prefix: stored for the longest L, prepared once per L
        export(half, (torch.randn(2, 256, d_model).half(),), path, max_length=max(lengths))
        dft_session = None
        try:  # the same model exported by torch.onnx alone (DFT nodes), at dft_length only: static
            # shapes, since ORT 1.31's DFT kernel failed on the dynamic-length export ("Shape mismatch
            # attempting to re-use buffer")
            dft_path = os.path.join(tmp, "hyena_dft.onnx")
            torch.onnx.export(half, (torch.randn(batch, dft_length, d_model).half(),), dft_path, dynamo=True)
            dft_session = onnxruntime.InferenceSession(dft_path, providers=providers)
        except Exception as e:  # noqa: BLE001 - reported, the rest of the benchmark goes on
            log(f"default ONNX export failed: {_failure(e)}")
        half = half.to(dev)
        weights = _module_bytes(half)
        # one module per compiled variant; dynamic=False specialises each length (the fastest code)
        compiled = {"torch_compile": torch.compile(copy.deepcopy(half), dynamic=False),
                    "torch_compile_cudagraph": torch.compile(copy.deepcopy(half), mode="reduce-overhead",
                                                             dynamic=False)}
        log(f"GPU: {meta['gpu']}; {meta['model']}, B={batch}, fp16; {meta['timing']} (CUDA events)")
        log(f"{'L':>8s} | {'eager':>8s} {'compile':>8s} {'cudagrph':>8s} {'ORT':>8s} {'ORT+graph':>9s} | "
            f"{'floor':>8s} {'ORT/floor':>9s} | {'vs best torch':>13s} | memory GiB: eager, compile, cudagraph, "
            "ORT, ORT+graph")
        setup = {"device": dev, "half": half, "compiled": compiled, "reference": reference, "weights": weights,
                 "path": path, "providers": providers, "graph_providers": graph_providers, "batch": batch,
                 "d_model": d_model, "repeats": repeats, "rounds": rounds_per_length, "meta": meta,
                 "dft_session": dft_session, "dft_length": dft_length}
        for L in lengths:
            row = _model_case(setup, L)
            rows.append(row)
            _append_results([row], out_path, log=lambda _: None)
            log(_model_line(row))
            for v in MODEL_VARIANTS:
                if row[f"{v}_failure"]:
                    log(f"{'':>8s}   {v} failed: {row[v + '_failure']}")
            torch.cuda.empty_cache()
    if out_path:
        log(f"results appended to {out_path}")
    return rows


def _model_line(row: dict) -> str:
    """The printed line of one bench --model row."""
    def ms(value, width=8):
        return f"{value:{width - 2}.2f}ms" if value is not None else f"{'fails':>{width}s}"

    def gib(value):
        return f"{value / 2**30:.2f}" if value is not None else "-"

    memory = ", ".join(gib(row[f"{v}_{'device' if v.startswith('ort') else 'peak'}_bytes"]) for v in MODEL_VARIANTS)
    ratio = f"{row['ort_over_floor']:8.2f}x" if row["ort_over_floor"] else f"{'-':>9s}"
    best = max((row[key] for key in ("speedup_over_fastest_torch", "speedup_cuda_graph_over_fastest_torch")
                if row[key] is not None), default=None)
    best_text = f"{best:12.2f}x" if best else f"{'-':>13s}"
    if row["floor_ms"] is not None:
        floor = (f"floor = GEMMs {row['floor_gemm_ms']:.2f} ms ({row['floor_gemms']} alone) + FFTConv "
                 f"{row['floor_fftconv_ms']:.2f} ms ({row['floor_fftconv_nodes']} nodes alone)")
    else:
        floor = f"floor not measured: {row['floor_failure']}"
    return (f"{row['L']:8d} | {ms(row['torch_eager_ms'])} {ms(row['torch_compile_ms'])} "
            f"{ms(row['torch_compile_cudagraph_ms'])} {ms(row['ort_fftconv_ms'])} "
            f"{ms(row['ort_fftconv_cuda_graph_ms'], 9)} | {ms(row['floor_ms'])} {ratio} | {best_text} | {memory}\n"
            f"{'':>8s}   {floor}")


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

    require_cuda("--partial")
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

    require_cuda("--sparse")
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


def _read_rows(jsonl_path: str) -> list[dict]:
    path = Path(jsonl_path)
    if not path.is_file():
        raise FileNotFoundError(f"{jsonl_path} does not exist (expected the JSON lines of `fftconv-rt bench --out`)")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{jsonl_path}, line {number}: not a JSON object ({e.msg}); expected the JSON lines "
                             "of `fftconv-rt bench --out`") from None
        if not isinstance(row, dict):
            raise ValueError(f"{jsonl_path}, line {number}: a JSON {type(row).__name__}, expected an object")
        rows.append(row)
    if not rows:
        raise ValueError(f"{jsonl_path} has no rows")
    return rows


def result_kind(row: dict) -> str:
    """Which benchmark wrote a row: "gpu", "cpu", "model", "partial", "freq_sparse" or "unknown"."""
    if "copy_ms" in row:
        return "gpu"
    if "torch_eager_ms" in row:
        return "model"
    if "bench" in row:
        return str(row["bench"])
    if "impl" in row and row.get("device") == "cpu":
        return "cpu"
    return "unknown"


def _plot_series(ax, rows: list[dict], series) -> None:
    """One line per (key, label) with at least one number, against L (rows sorted by L)."""
    rows = sorted(rows, key=lambda r: r["L"])
    for key, label, style in series:
        points = [(r["L"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points), style, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_ylabel("ms")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def plot_results(jsonl_path: str, png_path: str) -> str:
    """A PNG of the results of one benchmark: `bench --gpu` (a panel per mode and I/O type: copy, cuFFT,
    fftconv-rt and the measured peers), the CPU benchmark (one panel, every implementation) or
    `bench --model` (one panel, every variant and the floor). Returns what was drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _read_rows(jsonl_path)
    kinds = sorted({result_kind(r) for r in rows})
    drawable = ("gpu", "cpu", "model")
    if len(kinds) > 1 or kinds[0] not in drawable:
        raise ValueError(f"{jsonl_path} holds rows of {', '.join(kinds)}; plot draws one of `bench --gpu`, the CPU "
                         "`bench` or `bench --model` per file (partial and frequency-sparse rows are tables: see "
                         "bench/README.md)")
    kind = kinds[0]
    if kind == "gpu":
        panels = list(dict.fromkeys((r.get("mode", "causal"), r["dtype"]) for r in rows))
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
        for ax, (mode, dtype) in zip(axes[0], panels):
            sel = [r for r in rows if r.get("mode", "causal") == mode and r["dtype"] == dtype]
            _plot_series(ax, sel, (("copy_ms", "device copy (same bytes)", "-"),
                                   ("cufft_cached_ms", "PyTorch cuFFT, cached filter", "-"),
                                   ("fftconv_rt_ms", "fftconv-rt", "-"),
                                   ("flashfftconv_ms", "FlashFFTConv", "--"),
                                   ("thunderkittens_ms", "ThunderKittens FFTConv", "--")))
            period = "n = L" if mode == "circular" else "n = 2L"
            ax.set_xlabel(f"L ({mode}, {period}; B*H*L = {sel[0].get('batch_x_channels_x_length', '?')})")
            ax.set_title(f"{dtype} I/O on {sel[0]['gpu']}", fontsize=9)
        what = f"{len(panels)} panels (mode, I/O type)"
    elif kind == "cpu":
        fig, axes = plt.subplots(1, 1, figsize=(6, 4), squeeze=False)
        ax = axes[0][0]
        impls = list(dict.fromkeys(r["impl"] for r in rows))
        by_impl = {impl: [r for r in rows if r["impl"] == impl] for impl in impls}
        ax_rows = [dict(L=r["L"], **{impl: next((x["ms"] for x in by_impl[impl] if x["L"] == r["L"]), None)
                                     for impl in impls}) for r in by_impl[impls[0]]]
        _plot_series(ax, ax_rows, [(impl, impl, "-") for impl in impls])
        ax.set_xlabel(f"L (float32, B*H*L = {rows[0].get('batch_x_channels_x_length', '?')}, causal)")
        ax.set_title(f"CPU: {rows[0].get('cpu', '?')}, {rows[0].get('threads', '?')} threads", fontsize=9)
        what = f"CPU results, {len(impls)} implementations"
    else:
        fig, axes = plt.subplots(1, 1, figsize=(6, 4), squeeze=False)
        ax = axes[0][0]
        _plot_series(ax, rows, [(f"{v}_ms", v.replace("_", " "), "--" if v.startswith("torch") else "-")
                                for v in MODEL_VARIANTS] + [("floor_ms", "floor (GEMMs + FFTConv alone)", ":")])
        ax.set_xlabel("L")
        ax.set_title(f"{rows[0].get('model', 'model')}, {rows[0].get('dtype', '')} on {rows[0]['gpu']}", fontsize=9)
        what = "end-to-end results"
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return what


plot_gpu_results = plot_results  # the name `fftconv-rt plot` imports


def add_bench_arguments(parser) -> None:
    """The options of `fftconv-rt bench` (also `python -m fftconv_rt.bench`)."""
    parser.add_argument("--gpu", action="store_true", help="the CUDA benchmark (vs a device copy, cuFFT and peers)")
    parser.add_argument("--circular", action="store_true",
                        help="--gpu: circular convolutions of period N = L (default L = 1K, 4K; H = 768) instead of "
                             "causal ones (n = 2L)")
    parser.add_argument("--model", action="store_true",
                        help="end to end on the GPU: a Hyena stack in PyTorch eager, torch.compile (default and "
                             "reduce-overhead) and ONNX Runtime CUDA (fftconv-rt export, plain and CUDA graphs), "
                             "with memory and the floor")
    parser.add_argument("--sparse", action="store_true",
                        help="GPU, fp16: frequency-sparse (keep 1/2, 1/4, 1/8 of the bins) against dense, L = 8K .. 2M")
    parser.add_argument("--partial", action="store_true",
                        help="GPU, fp16: filters cut to 1K, 4K, 16K taps against the full filter at L = 128K, 2M, 16M")
    parser.add_argument("--lengths", default=None,
                        help="comma-separated L (default: 1K..64K on CPU, 128..2M with --gpu, 1K,4K with --circular)")
    parser.add_argument("--dtypes", default="float16,bfloat16,float32", help="--gpu: I/O types")
    parser.add_argument("--layout", choices=["BHL", "BLH"], default="BHL", help="--gpu: storage of u and y")
    parser.add_argument("--elements", type=int, default=None, help="B*H*L per call (default: 2^21 CPU, 2^26 GPU)")
    parser.add_argument("--channels", type=int, default=None,
                        help="--gpu: H (capped at elements / L; B fills B*H*L); default 768 with --circular, else "
                             "B = 4 and H fills")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help="--gpu: peers to measure where importable, comma-separated, or 'none' "
                             "(default: %(default)s)")
    parser.add_argument("--thunderkittens", default=None, metavar="PATH",
                        help=f"--gpu: the built kernels/fftconv folder of a ThunderKittens checkout (or "
                             f"{THUNDERKITTENS_ENV}=PATH)")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="append JSON lines to this file")


def run_bench_command(args, log=print) -> int:
    """Runs the benchmark the parsed options of add_bench_arguments ask for."""
    lengths = tuple(int(x) for x in args.lengths.split(",")) if args.lengths else None
    chosen = [flag for flag in ("gpu", "model", "sparse", "partial") if getattr(args, flag)]
    if len(chosen) > 1:
        raise ValueError(f"bench: choose one of --gpu, --model, --sparse, --partial (got {', '.join(chosen)})")
    if args.circular and chosen != ["gpu"]:
        raise ValueError("bench: --circular is a mode of --gpu")
    if args.model:
        run_model_bench(lengths=lengths or MODEL_LENGTHS, out_path=args.out, log=log)
    elif args.sparse:
        run_sparse_bench(lengths=lengths or SPARSE_LENGTHS, out_path=args.out, log=log)
    elif args.partial:
        run_partial_bench(lengths=lengths or PARTIAL_LENGTHS, taps=PARTIAL_TAPS, out_path=args.out, log=log)
    elif args.gpu:
        peers = () if args.peers.strip() == "none" else tuple(p.strip() for p in args.peers.split(",") if p.strip())
        run_gpu_bench(lengths=lengths, dtypes=tuple(args.dtypes.split(",")), elements=args.elements or 1 << 26,
                      out_path=args.out, layout=args.layout, log=log, mode="circular" if args.circular else "causal",
                      channels=args.channels, peers=peers, thunderkittens=args.thunderkittens)
    else:
        run_cpu_bench(lengths=lengths or (1024, 4096, 16384, 65536), elements=args.elements or 1 << 21,
                      repeats=args.repeats, threads=args.threads, out_path=args.out, log=log)
    return 0


def main(argv=None) -> int:
    """`python -m fftconv_rt.bench`: the same options as `fftconv-rt bench`."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m fftconv_rt.bench", description=__doc__.splitlines()[0])
    add_bench_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_bench_command(args)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
