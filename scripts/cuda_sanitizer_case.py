"""A small workload covering every CUDA kernel (tensor-core, fused and split paths, overlap-save
pieces, frequency-sparse masks, filter preparation, circular fold, optional inputs, both layouts, the rerun of a pair
holding a NaN), for compute-sanitizer; exits non-zero on a wrong result."""

import sys

import torch

from fftconv_rt.reference import fftconv_reference, relative_error
from fftconv_rt.spec import tolerance
from fftconv_rt.torch_op import fftconv

g = torch.Generator(device="cuda").manual_seed(0)
failed = False
for (B, H, L, Lk, n, layout, dtype) in [
        (2, 3, 1000, 1000, 0, "BHL", "float32"), (1, 3, 777, 300, 0, "BLH", "float32"),
        (1, 2, 20000, 20000, 0, "BHL", "float32"), (1, 3, 20000, 20000, 30000, "BHL", "float32"),
        (2, 2, 9000, 100, 0, "BLH", "float32"), (1, 1, 5, 5, 6, "BHL", "float32"),
        # tensor-core path: one chunk, several chunks with a halo, a filter in the I/O type
        (3, 2, 1000, 1000, 0, "BHL", "float16"), (1, 2, 3000, 2000, 0, "BHL", "bfloat16"),
        (2, 3, 130, 7, 0, "BHL", "bfloat16"), (5, 2, 128, 128, 0, "BHL", "float16"),
        (2, 3, 500, 200, 0, "BLH", "float16"),
        # overlap-save pieces: fused (2048 points) and split (32768 points), the last one short
        (1, 3, 9001, 300, 0, "BHL", "float32"), (1, 2, 70001, 5000, 0, "BLH", "float16")]:
    io = getattr(torch, dtype)
    shape = (B, H, L) if layout == "BHL" else (B, L, H)
    u = torch.randn(*shape, device="cuda", generator=g).to(io)
    k = torch.randn(H, Lk, device="cuda", generator=g) * 0.1
    if Lk == 7:
        k = k.to(io)
    D = torch.randn(H, device="cuda", generator=g)
    pre = torch.rand(*shape, device="cuda", generator=g).to(io)
    post = torch.rand(*shape, device="cuda", generator=g).to(io)
    y = fftconv(u, k, D, pre, post, n, layout)
    ref = fftconv_reference(*(t.float().cpu().numpy() for t in (u, k, D, pre, post)), fft_size=n, layout=layout)
    err = relative_error(y.float().cpu().numpy(), ref)
    failed |= not err <= tolerance(dtype)
    print(f"{dtype} B={B} H={H} L={L} Lk={Lk} n={n} {layout}: {err:.2e} (tolerance {tolerance(dtype):.0e})")
# frequency-sparse: the mask kernel and the skipped bins, fused (2048 points) and split (65536)
for L, keep in ((1024, 100), (32768, 4000)):
    u = torch.randn(1, 3, L, device="cuda", generator=g).half()
    k = torch.randn(3, L, device="cuda", generator=g) * 0.01
    y = fftconv(u, k, freq_keep=keep)
    ref = fftconv_reference(u.float().cpu().numpy(), k.cpu().numpy(), freq_keep=keep)
    err = relative_error(y.float().cpu().numpy(), ref)
    failed |= not err <= tolerance("float16")
    print(f"float16 L={L} freq_keep={keep}: {err:.2e}")
# split path: a NaN in one row of a pair, rerun one row at a time
u = torch.randn(1, 2, 20000, device="cuda", generator=g)
u[0, 0, 5] = float("nan")
k = torch.randn(2, 20000, device="cuda", generator=g) * 0.01
y = fftconv(u, k)
clean = fftconv_reference(u[:, 1:].cpu().numpy(), k[1:].cpu().numpy())
err = relative_error(y[:, 1:].cpu().numpy(), clean)
failed |= not (err <= tolerance("float32") and bool(torch.isnan(y[0, 0, 5:]).all()))
print(f"float32 NaN in row 0 of a split pair: row 1 {err:.2e}")
torch.cuda.synchronize()
sys.exit(1 if failed else 0)
