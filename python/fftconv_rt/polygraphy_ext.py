"""Polygraphy extension (entry point `polygraphy.run.plugins`): `polygraphy run model.onnx --onnxrt
--fftconv-rt` registers the FFTConv custom-op library with the ONNX Runtime sessions it creates.

Polygraphy builds its ONNX Runtime sessions from a plain `onnxruntime.SessionOptions()`; the
option replaces that class, for this process, by one that registers the library. Scripts written
with `--gen-script` call `register_with_onnxruntime()` themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from polygraphy.tools.args import util as args_util
from polygraphy.tools.args.base import BaseArgs


def register_with_onnxruntime(library: Optional[str] = None) -> None:
    """From now on every onnxruntime.SessionOptions() of this process registers the library.
    A library that does not exist or that ONNX Runtime cannot load is refused here, once, with
    its path and ONNX Runtime's reason (LibraryNotFoundError, LibraryLoadError)."""
    import onnxruntime

    from ._lib import LibraryLoadError, LibraryNotFoundError, ort_library_path

    path = library or ort_library_path()
    base = onnxruntime.SessionOptions
    if getattr(base, "fftconv_rt_library", None) == path:
        return
    if not Path(path).is_file():
        raise LibraryNotFoundError(f"the FFTConv library {path} does not exist")
    try:
        base().register_custom_ops_library(path)
    except Exception as e:  # ORT raises its own Fail/InvalidArgument types, none a common base
        raise LibraryLoadError(f"ONNX Runtime cannot load the FFTConv library {path}: {e}") from None

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
            from polygraphy.logger import G_LOGGER

            from ._lib import LibraryLoadError, LibraryNotFoundError

            try:
                register_with_onnxruntime(self.library)
            except (LibraryNotFoundError, LibraryLoadError) as e:
                option = "--fftconv-rt-library" if self.library else "--fftconv-rt"
                G_LOGGER.critical(f"{option}: {e}")  # Polygraphy prints it, with no traceback, and exits


def export_argument_groups() -> list:
    return [FFTConvRtArgs()]
