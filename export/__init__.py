"""fftconv_rt.export: rewrites the long convolutions of a PyTorch model into FFTConv nodes.

patterns.py holds one small matcher per code pattern (see the pattern catalogue);
exporter.py applies them to the torch.export graph and writes the ONNX model;
decompose.py is the reverse pass (FFTConv -> standard ONNX ops).
"""

import sys

from .decompose import decompose, decompose_file
from .exporter import (DYNAMIC_DIMS, ExportError, ExportReport, LeftFFT, NoLongConvolutionError, Rewrite,
                       StrictError, TraceError, export, rewrite_long_convolutions)

__all__ = ["DYNAMIC_DIMS", "ExportError", "ExportReport", "LeftFFT", "NoLongConvolutionError", "Rewrite",
           "StrictError", "TraceError", "decompose", "decompose_file", "export", "rewrite_long_convolutions"]


class _CallableModule(type(sys.modules[__name__])):
    """Importing this subpackage rebinds the name fftconv_rt.export from the package's export()
    function to this module; making the module callable keeps fftconv_rt.export(...) working."""

    def __call__(self, *args, **kwargs):
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
