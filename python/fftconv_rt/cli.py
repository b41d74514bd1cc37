"""The `fftconv-rt` command: demo, export, validate, decompose, triton-repo, bench, plot, info.

An error the user can act on (a missing or unreadable file, a refused option, a model that
torch.export cannot trace, inputs that do not match the model, a library that does not load)
prints one line, "fftconv-rt <command>: error: <message>", and exits with status 2; --verbose
shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path


def load_model(spec: str):
    """(model, example_inputs) from "package.module:factory" (a callable returning both, imported
    from the current folder or sys.path) or from a .pt2 file written by torch.export.save (its
    module and the example inputs saved with it)."""
    if spec.endswith(".pt2"):
        import torch

        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"model file {spec} does not exist")
        program = torch.export.load(str(path))
        if not program.example_inputs:
            raise ValueError(f"{spec} holds no example inputs (save it from torch.export.export(model, args))")
        args, kwargs = program.example_inputs
        if kwargs:
            raise ValueError(f"{spec} has keyword example inputs; only positional ones are supported")
        return program.module(), tuple(args)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"the model must be 'package.module:factory' or a .pt2 file, got {spec!r}")
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is None or not module_name.startswith(e.name):
            raise  # the module itself imports something missing: its own traceback
        raise ModuleNotFoundError(f"cannot import {module_name!r} for {spec!r} (looked in {Path.cwd()} and on "
                                  f"sys.path): {e}", name=e.name) from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{module_name} has no callable {attr!r} (from {spec!r}, in {module.__file__})")
    result = factory()
    if not (isinstance(result, tuple) and len(result) == 2):
        raise ValueError(f"{spec} must return (model, example_inputs), got {type(result).__name__}")
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


def _names(text):
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


def _cmd_export(args) -> int:
    from .export import export
    from .progress import Steps

    steps = Steps(2)
    with steps.step(f"loading {args.model}"):
        model, example = load_model(args.model)
    with steps.step(f"exporting to {args.output}"):
        threshold = {} if args.min_conv_taps is None else {"min_conv_taps": args.min_conv_taps}
        report = export(model, example, args.output, opset_version=args.opset,
                        require_rewrite=not args.allow_none, fold_filters=not args.keep_filter_ops,
                        tensorrt=args.tensorrt, partial=args.partial, freq_keep=args.freq_keep,
                        max_length=args.max_length, dynamic_dims=args.dynamic_dims, strict=args.strict,
                        input_names=_names(args.input_names), output_names=_names(args.output_names),
                        **threshold)
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
    report = validate(model, args.onnx, [example], tolerance_value=args.tolerance, timing_repeats=args.repeats)
    print(report)
    return 0 if report.passed else 1


def _cmd_bench(args) -> int:
    from .bench import run_bench_command

    return run_bench_command(args)


def _cmd_plot(args) -> int:
    from .bench import plot_results

    drawn = plot_results(args.results, args.png)
    print(f"wrote {args.png} ({drawn})")
    return 0


def _cmd_info(args) -> int:
    from .info import render

    print(render())
    return 0


def _bins_or_fraction(text: str):
    """--freq-keep: an integer number of bins, or a fraction written with a point."""
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of bins (an integer) or a fraction such as 0.25, "
                                         f"got {text!r}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fftconv-rt", description="Long-convolution models from PyTorch to "
                                     "ONNX Runtime / TensorRT with one fused FFTConv op.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true",
                        help="on an error, the full traceback instead of one line (validate: also Polygraphy's log)")
    sub = _Subcommands(parser.add_subparsers(dest="command", required=True), common)

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
    p.add_argument("--dynamic-dims", default="batch+length", metavar="WHICH",
                   help="input dimensions left dynamic: batch+length (default: dimension 0 and the sequence "
                        "length), length, all (every one the model allows), none (static shapes, which "
                        "--freq-keep with a fraction needs)")
    p.add_argument("--strict", action="store_true",
                   help="fail when an FFT convolution cannot be rewritten (default: it stays as standard ONNX ops "
                        "and the report says why)")
    p.add_argument("--input-names", default=None, metavar="A,B", help="names of the ONNX inputs, in order")
    p.add_argument("--output-names", default=None, metavar="Y,Z", help="names of the ONNX outputs, in order")
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
    p.add_argument("--repeats", type=int, default=5,
                   help="time PyTorch and ONNX Runtime: median of this many runs after a warm-up (0: no timing)")
    p.set_defaults(fn=_cmd_validate)

    p = sub.add_parser("bench", help="benchmark: CPU (vs torch.fft conv and the default ONNX export) or --gpu "
                                     "(vs a device copy and cuFFT)")
    from .bench import add_bench_arguments

    add_bench_arguments(p)
    p.set_defaults(fn=_cmd_bench)

    p = sub.add_parser("plot", help="PNG plot of benchmark results (JSON lines of `bench`, `bench --gpu`, "
                                    "`bench --model`)")
    p.add_argument("results")
    p.add_argument("png")
    p.set_defaults(fn=_cmd_plot)

    p = sub.add_parser("info", help="versions, libraries found, providers, GPU")
    p.set_defaults(fn=_cmd_info)

    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except Exception as e:
        if args.verbose or not _is_user_error(e):
            detail = getattr(e, "detail", "")
            if args.verbose and detail:
                print(detail, file=sys.stderr)
            raise
        print(f"fftconv-rt {args.command}: error: {_describe(e)}", file=sys.stderr)
        return 2


class _Subcommands:
    """add_parser with the options every subcommand has (--verbose)."""

    def __init__(self, subparsers, common):
        self.subparsers, self.common = subparsers, common

    def add_parser(self, name, **kwargs):
        return self.subparsers.add_parser(name, parents=[self.common], **kwargs)


def _is_user_error(error: Exception) -> bool:
    """Errors the user can act on from their message: a missing or unreadable file, a refused
    argument or input, a model torch.export cannot trace, a library or model that does not load,
    a missing optional module. Anything else is a bug and keeps its traceback."""
    from ._lib import FFTConvError, LibraryLoadError, LibraryNotFoundError

    known = [ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, ImportError,
             FFTConvError, LibraryNotFoundError, LibraryLoadError]
    # the modules whose errors can have been raised are those already imported
    if "fftconv_rt.export" in sys.modules:
        known.append(sys.modules["fftconv_rt.export"].ExportError)
    if "fftconv_rt.validate" in sys.modules:
        known.append(sys.modules["fftconv_rt.validate"].ModelRunError)
    if "google.protobuf.message" in sys.modules:
        known.append(sys.modules["google.protobuf.message"].DecodeError)  # an unreadable .onnx
    if "onnx.checker" in sys.modules:
        known.append(sys.modules["onnx.checker"].ValidationError)
    if "onnxruntime" in sys.modules:
        from .validate import _runtime_errors

        known.extend(_runtime_errors())
    if "polygraphy.exception" in sys.modules:
        known.append(sys.modules["polygraphy.exception"].PolygraphyException)
    return isinstance(error, tuple(known))


def _describe(error: Exception) -> str:
    """The message without the "fftconv-rt <command>: " our own errors start with (main adds it);
    a protobuf parse failure of an .onnx and ONNX Runtime's status codes said in words."""
    text = re.sub(r"^fftconv-rt(?: [\w-]+)?: ", "", str(error))
    # an error raised inside a traced graph comes with torch.fx's node dump appended
    text = text.split("\n\nWhile executing %", 1)[0]
    if type(error).__name__ == "DecodeError":
        return f"the file is not a readable ONNX model (truncated, or not ONNX): {text}"
    if type(error).__module__.startswith("onnxruntime"):
        return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "ONNX Runtime: ", text)
    if isinstance(error, ModuleNotFoundError) and error.name and not text.startswith("cannot import"):
        return f"{text} (an optional dependency: pip install 'fftconv-rt[all]')"
    return text


if __name__ == "__main__":
    sys.exit(main())
