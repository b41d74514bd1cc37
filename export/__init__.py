"""fftconv_rt.export: rewrites the long convolutions of a PyTorch model into FFTConv nodes.

patterns.py holds one small matcher per code pattern (see the pattern catalogue);
exporter.py applies them to the torch.export graph and writes the ONNX model.
"""

from .exporter import ExportReport, LeftFFT, NoLongConvolutionError, Rewrite, export, rewrite_long_convolutions

__all__ = ["ExportReport", "LeftFFT", "NoLongConvolutionError", "Rewrite", "export", "rewrite_long_convolutions"]
