"""fftconv-rt: long-convolution (FFTConv) models from PyTorch to production inference.

Main entry points:
  fftconv_rt.export(model, example_inputs, path)   PyTorch -> ONNX with FFTConv nodes (fftconv_rt.export)
  fftconv_rt.make_session(path)                    an ONNX Runtime session with the op registered
  fftconv_rt.validate(model, path, inputs)         PyTorch vs ONNX Runtime through Polygraphy (fftconv_rt.validate)
  fftconv_rt.ort_library_path()                    the custom-op library, for your own sessions
  fftconv_rt.trt_plugin_path(), build_trt_engine() the TensorRT plugin library and engines (fftconv_rt.trt)
  torch.ops.fftconv_rt.fftconv / fftconv_rt.torch_op.FFTConv   the op in PyTorch (import fftconv_rt.torch_op)
"""

__version__ = "0.1.0"

from ._lib import FFTConvError, LibraryNotFoundError, ort_library_path  # noqa: E402
from .reference import fftconv_reference  # noqa: E402

# fftconv_rt.validate is the submodule, callable as validate.validate: a function of that name
# here would be replaced by the submodule the first time anything imports fftconv_rt.validate.
from . import validate  # noqa: E402


def export(model, example_inputs, path, **kwargs):
    """See fftconv_rt.export.export."""
    from .export import export as _export

    return _export(model, example_inputs, path, **kwargs)


def make_session(model, providers=None, options=None, intra_op_threads=None):
    """See fftconv_rt.ort.make_session."""
    from .ort import make_session as _make_session

    return _make_session(model, providers=providers, options=options, intra_op_threads=intra_op_threads)


def trt_plugin_path() -> str:
    """See fftconv_rt.trt.trt_plugin_path."""
    from .trt import trt_plugin_path as _path

    return _path()


def build_trt_engine(onnx_path, fp16=False, shapes=None, **kwargs):
    """See fftconv_rt.trt.build_trt_engine."""
    from .trt import build_trt_engine as _build

    return _build(onnx_path, fp16=fp16, shapes=shapes, **kwargs)


__all__ = ["FFTConvError", "LibraryNotFoundError", "export", "fftconv_reference", "make_session",
           "ort_library_path", "validate", "trt_plugin_path", "build_trt_engine", "__version__"]
