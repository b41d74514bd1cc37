"""Genome-scale example: a HyenaDNA-style model whose long filters are cut to their first
`taps` taps (a partial convolution, FlashFFTConv's recipe for sequences of millions of base
pairs), exported with fftconv-rt, run in ONNX Runtime on one sequence of 2.3M tokens.

Validation: a filter cut to N taps changes nothing on sequences of at most N steps, so the
exported (cut) model must match the unmodified PyTorch model there, which Polygraphy checks;
at full length the report gives the time, the device memory and, where PyTorch can run the
unmodified model on the GPU, how far the cut model is from it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .progress import Steps

VOCAB = 12  # A, C, G, T, N and special tokens, as in HyenaDNA's character tokenizer


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


ORT_MEMORY_MEASURE = "cudaMemGetInfo before creating it and after its first run; input and output not counted"
TORCH_MEMORY_MEASURE = "allocator peak of the forward above what was allocated before moving the model to the GPU"


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300]}" if lines else type(error).__name__


def _run_ort_on_gpu(onnx_path, providers, device_tokens, logits, repeats: int):
    """(session, seconds per sequence, device bytes the session holds after its first run)."""
    import torch

    from .ort import make_session, run_on_device

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free_before = torch.cuda.mem_get_info()[0]
    session = make_session(onnx_path, providers=providers)

    def run():
        run_on_device(session, {"tokens": device_tokens}, {"logits": logits})
        torch.cuda.synchronize()

    run()  # the first run sizes ORT's memory arena, which keeps its peak
    held = free_before - torch.cuda.mem_get_info()[0]
    return session, _median_s(run, repeats), held


def _run_torch_on_gpu(model, tokens, ort_logits, repeats: int) -> str:
    """The unmodified model in PyTorch eager on the GPU: time, allocator peak and how far the cut
    model's logits are from it; or why it could not run (out of memory at this length)."""
    import torch

    device_tokens = tokens.cuda()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    try:
        model = model.cuda()

        def run_torch():
            with torch.no_grad():
                result = model(device_tokens)
            torch.cuda.synchronize()
            return result

        reference = run_torch()
        peak = torch.cuda.max_memory_allocated() - before
        seconds = _median_s(run_torch, repeats)
    except torch.OutOfMemoryError as e:
        peak = torch.cuda.max_memory_allocated() - before
        model.cpu()
        torch.cuda.empty_cache()
        return (f"out of memory at {len(tokens[0]):,} tokens (allocator peak {peak / 2**30:.2f} GiB when it failed: "
                f"{_one_line(e)[:160]})")
    note = f"{seconds * 1e3:.1f} ms, peak device memory {peak / 2**30:.2f} GiB ({TORCH_MEMORY_MEASURE})"
    if ort_logits is not None:
        change = float((ort_logits - reference).abs().max() / reference.abs().max())
        note += f"; the cut model's logits differ from it by {change:.2e} (max|diff| / max|ref|)"
    return note


def run_genome_demo(out_dir: str = "fftconv_genome", length: int = 2_300_000, taps: int = 4096,
                    d_model: int = 128, layers: int = 2, repeats: int = 3, seed: int = 0) -> bool:
    import onnxruntime
    import torch
    from polygraphy.logger import G_LOGGER

    from .export import export
    from .models import HyenaLM
    from .ort import make_session
    from .validate import validate

    G_LOGGER.module_severity = G_LOGGER.WARNING
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "hyena_dna_partial.onnx"
    on_gpu = torch.cuda.is_available() and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    # TF32 off: ORT's CUDA GEMMs default to TF32, whose error (about 1e-2 at these logits, measured
    # on an H200) would hide the op's own against the float32 tolerance of the validation
    providers = ([("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"] if on_gpu
                 else ["CPUExecutionProvider"])
    steps = Steps(5)
    torch.manual_seed(seed)

    with steps.step(f"building a HyenaDNA-style model (d_model={d_model}, {layers} blocks, max_len={length})"):
        model = HyenaLM(vocab=VOCAB, d_model=d_model, n_layers=layers, max_len=length).eval()
    with steps.step(f"exporting with every long filter cut to {taps} taps (partial convolution)"):
        example = torch.randint(0, VOCAB, (1, 2 * taps))
        report = export(model, (example,), onnx_path, input_names=["tokens"], output_names=["logits"],
                        partial=taps)
    short = (taps // 2, taps)
    with steps.step(f"validating against the unmodified PyTorch model at L = {list(short)} (<= {taps} taps)"):
        validation = validate(model, str(onnx_path), [(torch.randint(0, VOCAB, (1, L)),) for L in short],
                              providers=providers)
    tokens = torch.randint(0, VOCAB, (1, length))
    provider = "CUDAExecutionProvider" if on_gpu else "CPUExecutionProvider"
    ort_note, logits = "not run", None
    with steps.step(f"running one sequence of {length:,} tokens in ONNX Runtime ({provider})"):
        if on_gpu:
            device_tokens = tokens.cuda()
            logits = torch.empty(1, length, VOCAB, device="cuda")
            try:
                session, seconds, ort_bytes = _run_ort_on_gpu(onnx_path, providers, device_tokens, logits, repeats)
                del session
                ort_note = (f"{seconds * 1e3:.1f} ms per sequence (median of {repeats}), device memory held by the "
                            f"session {ort_bytes / 2**30:.2f} GiB ({ORT_MEMORY_MEASURE})")
            except Exception as e:  # noqa: BLE001 - out of memory at this length is the answer, not a crash
                logits = None
                ort_note = f"failed at {length:,} tokens: {_one_line(e)}"
        else:
            session = make_session(onnx_path, providers=providers)
            feed = {"tokens": tokens.numpy()}
            logits = torch.from_numpy(session.run(None, feed)[0])
            seconds = _median_s(lambda: session.run(None, feed), repeats)
            ort_note = f"{seconds * 1e3:.1f} ms per sequence (median of {repeats})"
    full_model_note = "not run (no GPU)"
    with steps.step("the unmodified model in PyTorch at full length (reference for what the cut changes)"):
        if on_gpu:
            full_model_note = _run_torch_on_gpu(model, tokens, logits, repeats)

    print()
    print(f"fftconv-rt genome example: HyenaDNA-style model, filters cut to {taps} taps, one sequence of "
          f"{length:,} tokens")
    print(report)
    print(validation)
    print(f"ONNX Runtime ({provider}): {ort_note}")
    print(f"PyTorch eager, unmodified model: {full_model_note}")
    print("result:", "PASSED" if validation.passed else "FAILED")
    return validation.passed
