"""Polygraphy extension (entry point `polygraphy.run.plugins`): `polygraphy run model.onnx --onnxrt
--fftconv-rt` registers the FFTConv custom-op library with the ONNX Runtime sessions it creates.

Polygraphy builds its ONNX Runtime sessions from a plain `onnxruntime.SessionOptions()`; the
option replaces that class, for this process, by one that registers the library. Scripts written
with `--gen-script` call `register_with_onnxruntime()` themselves.
"""

from __future__ import annotations

from typing import Optional

from polygraphy.tools.args import util as args_util
from polygraphy.tools.args.base import BaseArgs


def register_with_onnxruntime(library: Optional[str] = None) -> None:
    """From now on every onnxruntime.SessionOptions() of this process registers the library."""
    import onnxruntime

    from ._lib import ort_library_path

    path = library or ort_library_path()
    base = onnxruntime.SessionOptions
    if getattr(base, "fftconv_rt_library", None) == path:
        return

    class SessionOptions(base):
        fftconv_rt_library = path

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.register_custom_ops_library(path)

    onnxruntime.SessionOptions = SessionOptions


class FFTConvRtArgs(BaseArgs):
    """
    fftconv-rt: the FFTConv custom-op library in ONNX Runtime sessions.
    """

    def add_parser_args_impl(self):
        self.group.add_argument(
            "--fftconv-rt", action="store_true", default=None,
            help="Register the fftconv_rt::FFTConv custom-op library (libfftconv_ort.so) with every "
                 "ONNX Runtime session, for models exported by fftconv-rt")
        self.group.add_argument(
            "--fftconv-rt-library", default=None,
            help="Path of the library to register instead of the one fftconv-rt installed")

    def parse_impl(self, args):
        """Registers the library when asked. Attributes: enabled (bool), library (str or None)."""
        self.library = args_util.get(args, "fftconv_rt_library")
        self.enabled = bool(args_util.get(args, "fftconv_rt")) or self.library is not None
        if self.enabled:
            register_with_onnxruntime(self.library)


def export_argument_groups() -> list:
    return [FFTConvRtArgs()]
