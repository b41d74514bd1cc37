"""torch.ops.fftconv_rt.fftconv: results, fake implementation, export to one FFTConv node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from fftconv_rt._lib import FFTConvError
from fftconv_rt.onnx_translation import custom_translation_table
from fftconv_rt.reference import fftconv_reference, relative_error
from fftconv_rt.spec import tolerance
from fftconv_rt.torch_op import FFTConv, fftconv

from helpers import grid_inputs, make_inputs, reference_grid

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _to_torch(a, dtype):
    if a is None:
        return None
    return torch.from_numpy(np.asarray(a, dtype=np.float32)).to(dtype)


@reference_grid
def test_matches_reference(rng, L, filter_len, dtype, layout):
    arrays = grid_inputs(rng, L, filter_len, dtype, layout)
    u, k, D, pre, post = (_to_torch(a, TORCH_DTYPES[dtype]) for a in arrays)
    k, D = k.float(), D.float()
    y = fftconv(u, k, D, pre, post, 0, layout)
    assert y.dtype == u.dtype and y.shape == u.shape
    ref = fftconv_reference(*(None if t is None else t.float().numpy() for t in (u, k, D, pre, post)),
                            layout=layout)
    assert relative_error(y.float().numpy(), ref) <= tolerance(dtype)


def test_non_contiguous_inputs_are_accepted(rng):
    u = torch.randn(2, 40, 3).transpose(1, 2)  # (2, 3, 40), not contiguous
    k = torch.randn(6, 40)[::2]                # (3, 40), strided
    assert not u.is_contiguous() and not k.is_contiguous()
    y = fftconv(u, k)
    ref = fftconv_reference(u.numpy(), k.numpy())
    assert relative_error(y.numpy(), ref) <= tolerance("float32")


def test_opcheck():
    u, k, D = torch.randn(2, 3, 50), torch.randn(3, 50), torch.randn(3)
    torch.library.opcheck(torch.ops.fftconv_rt.fftconv.default, (u, k, D, None, u, 0, "BHL"),
                          test_utils=("test_schema", "test_faketensor"))


def test_module_exports_one_node_per_call(tmp_path):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = FFTConv(8, 64)
            self.b = FFTConv(8, 64, skip=False)

        def forward(self, x):
            return self.b(self.a(x, postgate=x)) + 1

    model = Model().eval()
    x = torch.randn(2, 8, 64)
    path = tmp_path / "m.onnx"
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    torch.onnx.export(model, (x,), dynamo=True, custom_translation_table=custom_translation_table(),
                      dynamic_shapes=({0: batch, 2: length},)).save(str(path))
    nodes = onnx.load(str(path)).graph.node
    ffts = [n for n in nodes if n.domain == "fftconv_rt" and n.op_type == "FFTConv"]
    assert len(ffts) == 2
    assert list(ffts[0].input)[3] == ""  # omitted pregate stays an empty input
    assert not [n for n in nodes if n.op_type == "DFT"]

    from fftconv_rt.ort import make_session

    session = make_session(path, providers=["CPUExecutionProvider"])
    for B, L in ((2, 64), (3, 100)):
        x = torch.randn(B, 8, L)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert relative_error(got, expected) <= tolerance("float32")


@pytest.mark.parametrize("call,message", [
    (lambda: fftconv(torch.randn(3, 5), torch.randn(3, 5)), "input 'u' must be rank 3"),
    (lambda: fftconv(torch.randn(1, 3, 5), torch.randn(4, 5)), "input 'k' must have shape (H, Lk) with H = 3"),
    (lambda: fftconv(torch.randn(1, 3, 5), torch.randn(3, 0)), "at least one tap"),
    (lambda: fftconv(torch.randn(1, 3, 5), torch.randn(3, 9), fft_size=8), "exceeds attribute 'fft_size'"),
    (lambda: fftconv(torch.randn(1, 3, 5), torch.randn(3, 2), fft_size=4), "smaller than the sequence length"),
    (lambda: fftconv(torch.randn(1, 3, 5), torch.randn(3, 2), fft_size=-1), "attribute 'fft_size' must be"),
    (lambda: fftconv(torch.randn(1, 3, 5), torch.randn(3, 2), fft_size=1 << 31), "attribute 'fft_size' must be"),
    (lambda: fftconv(torch.randn(1, 3, 5).double(), torch.randn(3, 2)), "element type float64"),
    (lambda: fftconv(torch.randn(1, 3, 5).half(), torch.randn(3, 2).bfloat16()), "input 'k' has element type"),
    (lambda: fftconv(torch.randn(1, 3, 5), torch.randn(3, 2), torch.randn(4)), "input 'D' must have shape (H,)"),
    (lambda: fftconv(torch.randn(1, 3, 5), torch.randn(3, 2), None, torch.randn(1, 3, 4)), "input 'pregate'"),
    (lambda: fftconv(torch.randn(1, 3, 5), torch.randn(3, 2), None, None, torch.randn(1, 3, 5).half()),
     "input 'postgate' has element type float16"),
    (lambda: fftconv(torch.randn(1, 3, 5), torch.randn(3, 2), layout="LHB"), "attribute 'layout'"),
])
def test_bad_input_is_refused_with_a_clear_message(call, message):
    with pytest.raises(FFTConvError) as info:
        call()
    assert message in str(info.value)
    assert str(info.value).startswith("FFTConv:")


@pytest.mark.parametrize("shape", [(0, 3, 10), (2, 3, 0)])
def test_empty_input_gives_empty_output(shape):
    y = fftconv(torch.zeros(shape), torch.ones(3, 4))
    assert y.shape == shape
