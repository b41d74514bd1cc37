"""The `fftconv-rt` command: demo, export, validate, bench, info."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path


def load_model(spec: str):
    """(model, example_inputs) from "package.module:factory" (a callable returning both) or
    from a .pt2 file written by torch.export.save."""
    if spec.endswith(".pt2"):
        import torch

        path = Path(spec)
        if not path.is_file():
            raise SystemExit(f"fftconv-rt: model file {spec} does not exist")
        program = torch.export.load(str(path))
        args, kwargs = program.example_inputs
        if kwargs:
            raise SystemExit(f"fftconv-rt: {spec} has keyword example inputs; only positional ones are supported")
        return program.module(), tuple(args)
    module_name, sep, attr = spec.partition(":")
    if not sep or not attr:
        raise SystemExit(f"fftconv-rt: --model must be 'package.module:factory' or a .pt2 file, got {spec!r}")
    sys.path.insert(0, str(Path.cwd()))
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise SystemExit(f"fftconv-rt: cannot load {spec!r}: {e}")
    result = factory()
    if not (isinstance(result, tuple) and len(result) == 2):
        raise SystemExit(f"fftconv-rt: {spec} must return (model, example_inputs)")
    model, example = result
    return model, tuple(example) if isinstance(example, (list, tuple)) else (example,)


def _cmd_demo(args) -> int:
    if args.genome:
        from .genome import run_genome_demo

        ok = run_genome_demo(out_dir=args.out, length=args.genome_length, taps=args.taps,
                             repeats=2 if args.quick else 3)
        return 0 if ok else 1
    from .demo import run_demo

    lengths = (256, 1024) if args.quick else tuple(int(x) for x in args.lengths.split(","))
    ok = run_demo(out_dir=args.out, batch=args.batch, lengths=lengths, d_model=args.d_model,
                  layers=args.layers, repeats=2 if args.quick else args.repeats)
    return 0 if ok else 1


def _cmd_export(args) -> int:
    from .export import NoLongConvolutionError, export
    from .progress import Steps

    steps = Steps(2)
    with steps.step(f"loading {args.model}"):
        model, example = load_model(args.model)
    try:
        with steps.step(f"exporting to {args.output}"):
            threshold = {} if args.min_conv_taps is None else {"min_conv_taps": args.min_conv_taps}
            report = export(model, example, args.output, opset_version=args.opset,
                            require_rewrite=not args.allow_none, fold_filters=not args.keep_filter_ops,
                            tensorrt=args.tensorrt, partial=args.partial, freq_keep=args.freq_keep,
                            max_length=args.max_length, **threshold)
    except NoLongConvolutionError as e:
        print(e, file=sys.stderr)
        return 2
    if args.report_json:
        print(report.to_json())
    elif args.report:
        print(report)
    else:
        print(f"{args.output}: {report.fftconv_nodes} FFTConv nodes ({len(report.left)} FFT uses left)")
    return 0


def _cmd_triton_repo(args) -> int:
    from .triton import write_triton_repository

    config = write_triton_repository(args.model, args.repository, args.name, max_batch_size=args.max_batch_size,
                                     instance_kind="KIND_CPU" if args.cpu else "KIND_GPU",
                                     library_path_in_server=args.library_path)
    print(f"wrote {config.parent} (serve it with: tritonserver --model-repository={config.parent.parent}; "
          f"the config expects the library at the path given in {config.name})")
    return 0


def _cmd_decompose(args) -> int:
    from .export import decompose_file

    count = decompose_file(args.model, args.output)
    print(f"{args.output}: {count} FFTConv node{'s' if count != 1 else ''} replaced by standard ONNX ops "
          "(runs on any ONNX runtime, without the fftconv-rt library)")
    return 0


def _cmd_validate(args) -> int:
    from polygraphy.logger import G_LOGGER

    from .validate import validate

    if not args.verbose:
        G_LOGGER.module_severity = G_LOGGER.WARNING
    model, example = load_model(args.model)
    report = validate(model, args.onnx, [example], tolerance_value=args.tolerance)
    print(report)
    return 0 if report.passed else 1


def _cmd_bench(args) -> int:
    from .bench import GPU_LENGTHS, run_cpu_bench, run_gpu_bench

    if args.model:
        from .bench import MODEL_LENGTHS, run_model_bench

        lengths = tuple(int(x) for x in args.lengths.split(",")) if args.lengths else MODEL_LENGTHS
        run_model_bench(lengths=lengths, out_path=args.out)
        return 0
    if args.sparse:
        from .bench import SPARSE_LENGTHS, run_sparse_bench

        lengths = tuple(int(x) for x in args.lengths.split(",")) if args.lengths else SPARSE_LENGTHS
        run_sparse_bench(lengths=lengths, out_path=args.out)
        return 0
    if args.partial:
        from .bench import PARTIAL_LENGTHS, PARTIAL_TAPS, run_partial_bench

        lengths = tuple(int(x) for x in args.lengths.split(",")) if args.lengths else PARTIAL_LENGTHS
        run_partial_bench(lengths=lengths, taps=PARTIAL_TAPS, out_path=args.out)
        return 0
    if args.gpu:
        lengths = tuple(int(x) for x in args.lengths.split(",")) if args.lengths else GPU_LENGTHS
        run_gpu_bench(lengths=lengths, dtypes=tuple(args.dtypes.split(",")), elements=args.elements or 1 << 26,
                      out_path=args.out, layout=args.layout)
        return 0
    lengths = tuple(int(x) for x in (args.lengths or "1024,4096,16384,65536").split(","))
    run_cpu_bench(lengths=lengths, elements=args.elements or 1 << 21, repeats=args.repeats, threads=args.threads,
                  out_path=args.out)
    return 0


def _cmd_plot(args) -> int:
    from .bench import plot_gpu_results

    plot_gpu_results(args.results, args.png)
    print(f"wrote {args.png}")
    return 0


def _cmd_info(args) -> int:
    from .info import render

    print(render())
    return 0


def _bins_or_fraction(text: str):
    """--freq-keep: an integer number of bins, or a fraction written with a point."""
    return float(text) if "." in text else int(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fftconv-rt", description="Long-convolution models from PyTorch to "
                                     "ONNX Runtime / TensorRT with one fused FFTConv op.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="export a small Hyena-style model, run it in ONNX Runtime, validate, report")
    p.add_argument("--out", default="fftconv_demo", help="folder for the .onnx (default: %(default)s)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--lengths", default="1024,4096", help="sequence lengths to validate and time")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="short lengths, few repeats")
    p.add_argument("--genome", action="store_true",
                   help="instead: a HyenaDNA-style model with filters cut to --taps taps on one sequence of "
                        "--genome-length tokens (ONNX Runtime's CUDA provider where present)")
    p.add_argument("--genome-length", type=int, default=2_300_000)
    p.add_argument("--taps", type=int, default=4096, help="--genome: taps kept of every long filter")
    p.set_defaults(fn=_cmd_demo)

    p = sub.add_parser("export", help="export a PyTorch model with its long convolutions as FFTConv nodes")
    p.add_argument("model", help="'package.module:factory' returning (model, example_inputs), or a .pt2 file")
    p.add_argument("output", help="path of the .onnx to write")
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset (default 20, where GELU is one op that ONNX Runtime fuses with its bias; 18 "
                        "when FFTs are left in the graph)")
    p.add_argument("--report", action="store_true", help="print what was rewritten and what was left")
    p.add_argument("--report-json", action="store_true", help="print the report as JSON")
    p.add_argument("--allow-none", action="store_true", help="write the model even if nothing was rewritten")
    p.add_argument("--min-conv-taps", type=int, default=None,
                   help="depthwise causal Conv1d layers with at least this many taps become FFTConv "
                        "(default: from 2 taps, short filters too; 64 keeps Hyena's 3-tap filters as Conv)")
    p.add_argument("--freq-keep", type=_bins_or_fraction, default=None, metavar="K",
                   help="make every FFTConv frequency-sparse: its filter spectrum keeps K rfft bins (an integer) or "
                        "that fraction of them (0 < K <= 1, static lengths); changes the model, the report gives "
                        "each node's error")
    p.add_argument("--partial", type=int, default=None, metavar="N",
                   help="cut every long filter to its first N taps (changes the model; the report gives each "
                        "node's error on the example inputs)")
    p.add_argument("--tensorrt", action="store_true",
                   help="stamp the FFTConv nodes for TensorRT's ONNX parser (plugin_version/plugin_namespace)")
    p.add_argument("--keep-filter-ops", action="store_true",
                   help="keep the ops that compute a filter from the parameters in the graph (default: fold "
                        "them into an initializer at export)")
    p.add_argument("--max-length", type=int, default=None, metavar="L",
                   help="the longest sequence the model will run: a filter that depends on the length only as a "
                        "prefix (Hyena's positional embedding cut to L) is computed once at L taps and stored")
    p.set_defaults(fn=_cmd_export)

    p = sub.add_parser("triton-repo", help="write a Triton Inference Server model repository for an .onnx with "
                                           "FFTConv nodes")
    p.add_argument("model", help="the .onnx (exported by fftconv-rt)")
    p.add_argument("repository", help="the model repository folder (created if needed)")
    p.add_argument("--name", default=None, help="model name (default: the file's stem)")
    p.add_argument("--max-batch-size", type=int, default=8, help="0: no batching (default 8, dynamic batching on)")
    p.add_argument("--cpu", action="store_true", help="CPU instances (default: GPU)")
    p.add_argument("--library-path", default=None,
                   help="path of the copied libfftconv_ort.so as the server sees it (default /models/NAME/...)")
    p.set_defaults(fn=_cmd_triton_repo)

    p = sub.add_parser("decompose", help="replace every FFTConv node by standard ONNX ops (DFT, ...)")
    p.add_argument("model", help="an .onnx with FFTConv nodes")
    p.add_argument("output", help="path of the .onnx to write")
    p.set_defaults(fn=_cmd_decompose)

    p = sub.add_parser("validate", help="compare an exported model in ONNX Runtime with PyTorch (Polygraphy)")
    p.add_argument("model", help="'package.module:factory' returning (model, example_inputs), or a .pt2 file")
    p.add_argument("onnx", help="the exported .onnx")
    p.add_argument("--tolerance", type=float, default=None,
                   help="max|y-ref|/max|ref| allowed (default: the op spec's for the output dtype)")
    p.add_argument("--verbose", action="store_true", help="show Polygraphy's own log")
    p.set_defaults(fn=_cmd_validate)

    p = sub.add_parser("bench", help="benchmark: CPU (vs torch.fft conv and the default ONNX export) or --gpu "
                                     "(vs a device copy and cuFFT)")
    p.add_argument("--gpu", action="store_true", help="the CUDA benchmark")
    p.add_argument("--model", action="store_true",
                   help="end to end on the GPU: a Hyena stack in PyTorch eager vs ONNX Runtime CUDA (fftconv-rt "
                        "export and the default DFT export)")
    p.add_argument("--sparse", action="store_true",
                   help="GPU, fp16: frequency-sparse (keep 1/2, 1/4, 1/8 of the bins) against dense, L = 8K .. 2M")
    p.add_argument("--partial", action="store_true",
                   help="GPU, fp16: filters cut to 1K, 4K, 16K taps against the full filter at L = 128K, 2M, 16M")
    p.add_argument("--lengths", default=None, help="comma-separated L (default: 1K..64K on CPU, 128..2M on GPU)")
    p.add_argument("--dtypes", default="float16,bfloat16,float32", help="GPU I/O types")
    p.add_argument("--layout", choices=["BHL", "BLH"], default="BHL", help="GPU: storage of u and y")
    p.add_argument("--elements", type=int, default=None, help="B*H*L per call (default: 2^21 CPU, 2^26 GPU)")
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="append JSON lines to this file")
    p.set_defaults(fn=_cmd_bench)

    p = sub.add_parser("plot", help="PNG plot of GPU benchmark results (JSON lines of `bench --gpu`)")
    p.add_argument("results")
    p.add_argument("png")
    p.set_defaults(fn=_cmd_plot)

    p = sub.add_parser("info", help="versions, libraries found, providers, GPU")
    p.set_defaults(fn=_cmd_info)

    args = parser.parse_args(argv)
    from ._lib import LibraryLoadError

    user_errors: tuple = (FileNotFoundError, IsADirectoryError, ValueError, TypeError, ImportError,
                          LibraryLoadError)
    try:
        from google.protobuf.message import DecodeError  # an unreadable .onnx

        user_errors += (DecodeError,)
    except ImportError:
        pass
    try:
        return args.fn(args)
    except user_errors as e:
        # bad input from the user (a missing or unreadable file, a refused argument, a missing
        # optional module): the message, not a traceback
        print(f"fftconv-rt {args.command}: error: {_describe(e)}", file=sys.stderr)
        return 2


def _describe(error: Exception) -> str:
    """A user-facing message; a protobuf parse failure of an .onnx says what it means."""
    text = str(error)
    if type(error).__name__ == "DecodeError":
        return f"the file is not a readable ONNX model (truncated, or not ONNX): {text}"
    return text


if __name__ == "__main__":
    sys.exit(main())
