"""A small workload covering every CUDA kernel (fused and split paths, filter preparation,
circular fold, optional inputs, both layouts), for compute-sanitizer; exits non-zero on a
wrong result."""

import sys

import numpy as np
import torch

from fftconv_rt.reference import fftconv_reference, relative_error
from fftconv_rt.torch_op import fftconv

worst = 0.0
g = torch.Generator(device="cuda").manual_seed(0)
for (B, H, L, Lk, n, layout) in [(2, 3, 1000, 1000, 0, "BHL"), (1, 3, 777, 300, 0, "BLH"), (1, 2, 20000, 20000, 0, "BHL"),
                                 (1, 3, 20000, 20000, 30000, "BHL"), (2, 2, 9000, 100, 0, "BLH"), (1, 1, 5, 5, 6, "BHL")]:
    shape = (B, H, L) if layout == "BHL" else (B, L, H)
    u = torch.randn(*shape, device="cuda", generator=g)
    k = torch.randn(H, Lk, device="cuda", generator=g) * 0.1
    D = torch.randn(H, device="cuda", generator=g)
    pre = torch.rand(*shape, device="cuda", generator=g)
    post = torch.rand(*shape, device="cuda", generator=g)
    y = fftconv(u, k, D, pre, post, n, layout)
    ref = fftconv_reference(*(t.cpu().numpy() for t in (u, k, D, pre, post)), fft_size=n, layout=layout)
    err = relative_error(y.cpu().numpy(), ref)
    worst = max(worst, err)
    print(f"B={B} H={H} L={L} Lk={Lk} n={n} {layout}: {err:.2e}")
torch.cuda.synchronize()
print("worst", worst)
sys.exit(0 if worst <= 1e-5 else 1)
