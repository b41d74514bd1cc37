"""One forward call per length (fp16, B*H*L = 2^24) for ncu to profile: python cuda_profile_case.py L [L ...]."""

import sys

import torch

from fftconv_rt.torch_op import fftconv

for L in (int(x) for x in sys.argv[1:]):
    H = (1 << 24) // (4 * L)
    u = torch.randn(4, H, L, device="cuda", dtype=torch.float16)
    k = torch.randn(H, L, device="cuda") * 0.01
    D = torch.randn(H, device="cuda")
    fftconv(u, k, D)
torch.cuda.synchronize()
