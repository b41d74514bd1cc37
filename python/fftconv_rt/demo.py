"""The main job: a small Hyena-style model exported with its long convolutions
as FFTConv nodes, run in ONNX Runtime through the custom op, validated against
PyTorch (Polygraphy), timed, with a printed report."""

from __future__ import annotations

from pathlib import Path

from .progress import Steps


def run_demo(out_dir: str = "fftconv_demo", batch: int = 2, lengths=(1024, 4096), d_model: int = 64,
             layers: int = 2, repeats: int = 5, seed: int = 0) -> bool:
    import torch
    from polygraphy.logger import G_LOGGER

    from .export import export
    from .models import HyenaLM
    from .ort import make_session
    from .validate import median_ms, validate

    G_LOGGER.module_severity = G_LOGGER.WARNING
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "hyena_demo.onnx"
    steps = Steps(5)
    torch.manual_seed(seed)

    with steps.step(f"building a Hyena-style model (d_model={d_model}, {layers} blocks)"):
        model = HyenaLM(vocab=16, d_model=d_model, n_layers=layers, max_len=max(lengths)).eval()
        example = torch.randint(0, 16, (batch, lengths[0]))
    with steps.step("exporting to ONNX with the long convolutions as fftconv_rt::FFTConv"):
        report = export(model, (example,), onnx_path, input_names=["tokens"], output_names=["logits"])
    with steps.step("opening an ONNX Runtime session with the FFTConv library"):
        session = make_session(onnx_path, providers=["CPUExecutionProvider"])
    inputs = [(torch.randint(0, 16, (batch, L)),) for L in lengths]
    with steps.step(f"validating ONNX Runtime against PyTorch (Polygraphy) at L = {list(lengths)}"):
        validation = validate(model, str(onnx_path), inputs, timing_repeats=0)  # timed below
    timings = []
    with steps.step("timing PyTorch eager and ONNX Runtime + FFTConv"):
        for (tokens,) in inputs:
            feed = {"tokens": tokens.numpy()}
            with torch.no_grad():
                torch_ms = median_ms(lambda: model(tokens), repeats)
            ort_ms = median_ms(lambda: session.run(None, feed), repeats)
            timings.append((tokens.shape[1], torch_ms, ort_ms))

    print()
    print("fftconv-rt demo: Hyena-style LM, exported, run in ONNX Runtime, validated against PyTorch")
    print(f"model: {onnx_path} ({onnx_path.stat().st_size / 1e6:.2f} MB)")
    print(report)
    print(validation)
    print(f"timings (batch {batch}, CPU, median of {repeats} runs after a warm-up run):")
    print(f"  {'L':>7s} {'PyTorch eager':>14s} {'ORT + FFTConv':>14s} {'speed-up':>9s}")
    for L, torch_ms, ort_ms in timings:
        print(f"  {L:7d} {torch_ms:11.2f} ms {ort_ms:11.2f} ms {torch_ms / ort_ms:8.2f}x")
    print("result:", "PASSED" if validation.passed else "FAILED")
    return validation.passed
