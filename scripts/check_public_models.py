#!/usr/bin/env python
"""Exports the long-convolution layers of public model repositories with fftconv_rt and checks them (issue 20).

    python scripts/check_public_models.py --repos third_party_fetched [--only NAME] [--verbose]

--repos holds one checkout per repository, in a folder of the name below (third_party_fetched/ is ignored by git:
none of their code belongs in this project). Last run on these commits (owner/name, folder, commit):

    HazyResearch/safari             safari          02220c69d247e5473616cd053a443ad99fd2559b
    state-spaces/s4                 s4              e757cef57d89e448c413de7325ed5601aceaac13
    HazyResearch/m2                 m2              7d359e8ce0d18294d840d1ed775ec920b3b48afd
    togethercomputer/stripedhyena   stripedhyena    7e13f618027fea9625be1f2d2d94f9a361f6bd02
    HazyResearch/hyena-dna          hyena-dna       d553021b483b82980aa4b868b37ec2d4332e198a
    HazyResearch/H3                 H3              5c4d06b5795405170387c80998b58d76179a8a1a
    ctlllll/SGConv                  SGConv          97862df5b42507da0c6920b180ee2a250a1f8968
    raminmh/liquid-s4               liquid-s4       06031dc770975d364f7d5b2fbf77b41b2c4bddd1

e.g. `git clone <repository> third_party_fetched/s4 && git -C third_party_fetched/s4 checkout e757cef57d`.
The modules import einops, opt_einsum, scipy, hydra-core and rich besides torch: `pip install einops opt_einsum
scipy hydra-core rich`. Optional imports that no checked code path uses (pytorch_lightning, torchvision,
transformers, IPython) are replaced by named stand-ins that raise if called; the table's notes list them.

Each module is built with small sizes and a fixed seed, exported with `fftconv_rt.export(model, (x,), path)` and
default options, run in ONNX Runtime (CPU) through `fftconv_rt.make_session`, and compared with PyTorch eager in
float32 (max|y - ref| / max|ref| <= 1e-3) at the traced length and at a shorter and a longer one. Where PyTorch
refuses a length, the check passes only if ONNX Runtime refuses it too. A module passes when it exports with every
long convolution as an FFTConv node, no DFT node left, and every length passes. Every module runs in a process
of its own, so that the checkouts' packages of one name (`src`) never meet and a crash stops only its row.
Exit code 1 when any module fails.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.machinery
import importlib.util
import io
import json
import math
import re
import subprocess
import sys
import tempfile
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

TOLERANCE = 1e-3
BATCH = 2  # torch.export specialises dimensions of size 1
ROW_MARKER = "@@check_public_models row "
CASE_TIMEOUT_S = 1200


@dataclass
class Subject:
    """A built module and how to feed it."""

    model: object
    make_input: Callable[[int], object]  # sequence length -> the example input (batch BATCH)
    traced: int
    shorter: int
    longer: int


@dataclass(frozen=True)
class Case:
    name: str
    folder: str  # the checkout under --repos; "" for a module of PyTorch itself
    module: str  # what is checked, as the repository names it
    long_convs: int  # long convolutions in the module's forward, read from its code (where: `convs`)
    convs: str
    short_convs: int = 0  # short depthwise causal Conv1d layers (P13 rewrites them too from min_conv_taps taps)
    short_taps: int = 3
    stand_ins: tuple = ()
    build: Callable[[Path], Subject] = None


CASES: dict[str, Case] = {}


def case(name: str, folder: str, module: str, long_convs: int, convs: str, **kwargs):
    def register(build):
        CASES[name] = Case(name, folder, module, long_convs, convs, build=build, **kwargs)
        return build
    return register


# ---------------------------------------------------------------------------------------------------------------
# Stand-ins for optional imports that the checked code paths never call.

class AbsentDependencyError(RuntimeError):
    pass


def _absent(qualname: str):
    """A class that stands for qualname; it can be subclassed but not used."""
    def refuse(*_args, **_kwargs):
        raise AbsentDependencyError(f"{qualname} is a stand-in of check_public_models.py (the package is not "
                                    "installed); the checked code path was expected not to use it")
    return type(qualname.rsplit(".", 1)[-1], (), {"__init__": refuse, "__call__": refuse})


def _pass_through(function):  # pytorch_lightning's rank_zero_only: only decides which rank logs
    return function


STAND_INS = {
    "pytorch_lightning": lambda: {"LightningModule": _absent("pytorch_lightning.LightningModule"),
                                  "Callback": _absent("pytorch_lightning.Callback"),
                                  "Trainer": _absent("pytorch_lightning.Trainer")},
    "pytorch_lightning.utilities": lambda: {"rank_zero_only": _pass_through},
    "torchvision": lambda: {},
    "torchvision.ops": lambda: {"StochasticDepth": _absent("torchvision.ops.StochasticDepth")},
    "transformers": lambda: {},
    "transformers.tokenization_utils": lambda: {"AddedToken": _absent("transformers.AddedToken"),
                                                "PreTrainedTokenizer": _absent("transformers.PreTrainedTokenizer")},
    "IPython": lambda: {"embed": _absent("IPython.embed")},
}


STANDING_IN: set = set()  # top-level names replaced in this process


def install_stand_ins(names) -> None:
    for name in names:
        top = name.split(".")[0]
        if top not in STANDING_IN and importlib.util.find_spec(top) is not None:  # installed: the real one is used
            continue
        STANDING_IN.add(top)
        module = types.ModuleType(name)
        module.__dict__.update(STAND_INS[name]())
        module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=True)
        module.__path__ = []  # a package, so that its stand-in submodules import
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)


def import_from(root: Path, module: str, skip_package_init: Optional[str] = None):
    """Imports module with root first on sys.path. skip_package_init names a package whose __init__ pulls in a
    training stack the checked module does not need (M2's src/__init__.py imports all of BERT): it is made a
    plain package of its folder instead."""
    sys.path.insert(0, str(root))
    if skip_package_init:
        package = types.ModuleType(skip_package_init)
        package.__path__ = [str(root / skip_package_init)]
        sys.modules[skip_package_init] = package
    return importlib.import_module(module)


class FirstOutput(torch.nn.Module):
    """Wraps a module that returns (y, state) so that the exported model returns y."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)[0]


def _randn(*shape, seed: int):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def channels_first(width: int):
    return lambda length: _randn(BATCH, width, length, seed=length)


def channels_last(width: int):
    return lambda length: _randn(BATCH, length, width, seed=length)


# ---------------------------------------------------------------------------------------------------------------
# The modules. Lengths: traced 64, shorter 37 (odd, not a divisor of anything), longer 128 (the l_max where the
# module has one, so that the longer length is one the module accepts).

WIDTH = 8


@case("safari/standalone_hyena", "safari", "standalone_hyena.HyenaOperator(order=2)", 1,
      "standalone_hyena.py:13-24 fftconv, rfft/irfft n=2L (P1); filter: implicit MLP of pos. embedding cut to L",
      short_convs=1)
def _safari_standalone_hyena(root):
    mod = import_from(root, "standalone_hyena")
    model = mod.HyenaOperator(d_model=WIDTH, l_max=128, order=2, filter_order=16)
    return Subject(model, channels_last(WIDTH), 64, 37, 128)


@case("safari/standalone_long_convs", "safari", "standalone_long_convs.LongConv(channels=2)", 1,
      "standalone_long_convs.py:71-74 rfft/irfft n=2L, kernel (C=2, H, 2*L_init) Parameter (P4 einsum, P10)")
def _safari_standalone_long_convs(root):
    mod = import_from(root, "standalone_long_convs")
    model = mod.LongConv(H=WIDTH, L=64, channels=2, dropout=0.0)
    return Subject(model, channels_first(WIDTH), 64, 37, 128)


@case("safari/src hyena", "safari", "src/models/sequence/hyena.py HyenaOperator(order=3)", 2,
      "hyena.py:28-46 fftconv_ref on 5-D u (b h v z l), k_f.unsqueeze(1); called twice (order 3)",
      short_convs=1, stand_ins=("pytorch_lightning", "pytorch_lightning.utilities"))
def _safari_src_hyena(root):
    mod = import_from(root, "src.models.sequence.hyena")
    # num_heads > 1 fails in safari's own forward (it splits the heads' channels by d_model): one head, 5-D u
    model = mod.HyenaOperator(d_model=WIDTH, l_max=128, order=3, num_heads=1, filter_order=16)
    return Subject(model, channels_last(WIDTH), 64, 37, 128)


@case("safari/src long_conv", "safari", "src/models/sequence/long_conv.py LongConv", 1,
      "long_conv.py forward: rfft(k, n=l_kernel+L), einsum 'bhl,chl->bchl', irfft (P3, P4); LongConvKernel",
      stand_ins=("pytorch_lightning", "pytorch_lightning.utilities"))
def _safari_src_long_conv(root):
    mod = import_from(root, "src.models.sequence.long_conv")
    model = mod.LongConv(d_model=WIDTH, l_max=128)
    return Subject(FirstOutput(model), channels_first(WIDTH), 64, 37, 128)


@case("s4/s4d", "s4", "models/s4/s4d.py S4D", 1,
      "s4d.py:91-93 rfft/irfft n=2L (P2); filter: S4DKernel Vandermonde, complex exp (s4d.py:43-45)")
def _s4_s4d(root):
    mod = import_from(root, "models.s4.s4d")
    model = mod.S4D(WIDTH, d_state=16)
    return Subject(FirstOutput(model), channels_first(WIDTH), 64, 37, 128)


def _s4_fftconv(root, **kwargs):
    return import_from(root, "models.s4.s4").FFTConv(WIDTH, **kwargs)


S4_FFTCONV = "s4.py:1726-1729 rfft(k, n=l_kernel+L), einsum 'bhl,chl->bchl', irfft (P3, P4)"


@case("s4/FFTConv diag", "s4", "models/s4/s4.py FFTConv(mode='diag')", 1,
      S4_FFTCONV + "; filter: SSMKernelDiag, complex exp (Vandermonde)",
      stand_ins=("pytorch_lightning", "pytorch_lightning.utilities"))
def _s4_fftconv_diag(root):
    return Subject(FirstOutput(_s4_fftconv(root, mode="diag", d_state=16)), channels_first(WIDTH), 64, 37, 128)


@case("s4/FFTConv nplr", "s4", "models/s4/s4.py FFTConv(mode='nplr', l_max=128)", 1,
      S4_FFTCONV + "; filter: SSMKernelDPLR, Cauchy kernel + irfft (s4.py:1416)",
      stand_ins=("pytorch_lightning", "pytorch_lightning.utilities"))
def _s4_fftconv_nplr(root):
    model = _s4_fftconv(root, mode="nplr", d_state=16, l_max=128)
    return Subject(FirstOutput(model), channels_first(WIDTH), 64, 37, 128)


@case("s4/FFTConv diag bidirectional", "s4", "models/s4/s4.py FFTConv(mode='diag', bidirectional=True)", 1,
      S4_FFTCONV + "; two-sided kernel pad(k0,(0,L)) + pad(k1.flip(-1),(L,0)) (s4.py:1713-1715, P7)",
      stand_ins=("pytorch_lightning", "pytorch_lightning.utilities"))
def _s4_fftconv_bidirectional(root):
    model = _s4_fftconv(root, mode="diag", d_state=16, bidirectional=True)
    return Subject(FirstOutput(model), channels_first(WIDTH), 64, 37, 128)


@case("s4/FFTConv diag channels-last", "s4", "models/s4/s4.py FFTConv(mode='diag', transposed=False, l_max=128)", 1,
      S4_FFTCONV + "; (B, L, H) input transposed around the convolution (s4.py:1706, 1757)",
      stand_ins=("pytorch_lightning", "pytorch_lightning.utilities"))
def _s4_fftconv_channels_last(root):
    model = _s4_fftconv(root, mode="diag", d_state=16, transposed=False, l_max=128)
    return Subject(FirstOutput(model), channels_last(WIDTH), 64, 37, 128)


def _m2_mixer(root, bidirectional: bool):
    mod = import_from(root / "bert", "src.mm.monarch_mixer_sequence_mixer", skip_package_init="src")
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its settings
        model = mod.MonarchMixerSequenceMixing(WIDTH, l_max=128, bidirectional=bidirectional)
    return Subject(FirstOutput(model), channels_last(WIDTH), 64, 37, 128)


@case("m2/mixer bidirectional", "m2", "bert/src/mm MonarchMixerSequenceMixing(bidirectional=True)", 1,
      "hyena_utils.py:236-249: k = pad(k_fwd,(0,L)) + pad(k_rev.flip(-1),(L,0)), 2L taps, fftconv_ref n=2L (P7)",
      short_convs=1)
def _m2_bidirectional(root):
    return _m2_mixer(root, bidirectional=True)


@case("m2/mixer causal", "m2", "bert/src/mm MonarchMixerSequenceMixing(bidirectional=False)", 1,
      "hyena_utils.py:16-43 fftconv_ref, rfft/irfft n=2L, D pre-shaped (1, H, 1) (P1)", short_convs=1)
def _m2_causal(root):
    return _m2_mixer(root, bidirectional=False)


def _stripedhyena_block(root, **config):
    model_module = import_from(root, "stripedhyena.model")
    from stripedhyena.utils import dotdict

    settings = dotdict(hidden_size=WIDTH * 2, num_filters=WIDTH * 2, num_attention_heads=2, state_size=4,
                       short_filter_length=3, short_filter_bias=True, hyena_filter_groups=1, column_split_hyena=True,
                       eps=1e-5, params_dtype=torch.float32, mlp_dtype=torch.float32, inner_mlp_size=32,
                       model_parallel_size=1, use_flash_rmsnorm=False, use_flash_depthwise=False, use_flashfft=False,
                       inference_mode=False, prefill_style="fft", **config)
    model = model_module.ParallelGatedConvBlock(settings, layer_idx=0)
    return Subject(FirstOutput(model), channels_last(WIDTH * 2), 64, 37, 128)


@case("stripedhyena/ParallelGatedConvBlock", "stripedhyena", "stripedhyena/model.py ParallelGatedConvBlock", 1,
      "engine.py:178-183 rfft(h)/n, fft(x1v)[..., :n/2+1], irfft (P5); filter: modal form, complex log/exp "
      "(model.py:266-275)", short_convs=1)
def _stripedhyena(root):
    return _stripedhyena_block(root)


@case("stripedhyena/long FIR", "stripedhyena", "stripedhyena/model.py ParallelGatedConvBlock(long_fir_threshold=48)",
      1, "engine.py:186-195 depthwise F.conv1d of the modal filter cut to 48 taps, padding 47, [..., :L] (P13)",
      short_convs=1)
def _stripedhyena_long_fir(root):
    return _stripedhyena_block(root, long_fir_threshold=48)


@case("hyena-dna/standalone", "hyena-dna", "standalone_hyenadna.py HyenaOperator(order=3)", 2,
      "standalone_hyenadna.py:45-61 fftconv, rfft/irfft n=2L (P1), called twice (order 3)", short_convs=1,
      stand_ins=("torchvision", "torchvision.ops", "transformers", "transformers.tokenization_utils"))
def _hyena_dna_standalone(root):
    mod = import_from(root, "standalone_hyenadna")
    model = mod.HyenaOperator(d_model=WIDTH, l_max=128, order=3, filter_order=16)
    return Subject(model, channels_last(WIDTH), 64, 37, 128)


@case("hyena-dna/src hyena bidirectional", "hyena-dna", "src/models/sequence/hyena.py HyenaOperator(bidirectional)",
      1, "hyena.py:59-80 fftconv_ref(bidirectional=True): input zero-padded L/2 each side, n=2L, [..., :L] (P9)",
      short_convs=1, stand_ins=("pytorch_lightning", "pytorch_lightning.utilities"))
def _hyena_dna_bidirectional(root):
    mod = import_from(root, "src.models.sequence.hyena")
    model = mod.HyenaOperator(d_model=WIDTH, l_max=128, order=2, filter_order=16, bidirectional=True)
    return Subject(model, channels_last(WIDTH), 64, 37, 128)


@case("H3/H3", "H3", "src/models/ssm/h3.py H3 (S4D kernel)", 2,
      "h3.py:123-126 shift-SSM conv rfft/irfft n=L_kernel+L (P2/P3); h3.py:141-147 diag-SSM conv, 1/n on the "
      "input spectrum (P1b); filters: SSKernelShift (FFT correlation) and SSKernelDiag (complex exp)",
      stand_ins=("pytorch_lightning", "pytorch_lightning.utilities"))
def _h3(root):
    mod = import_from(root, "src.models.ssm.h3")
    model = mod.H3(d_model=WIDTH, d_state=16, l_max=128, mode="diag", measure="diag-lin")
    return Subject(model, channels_last(WIDTH), 64, 37, 128)


@case("SGConv/GConv", "SGConv", "gconv_standalone.py GConv(l_max=128)", 1,
      "gconv_standalone.py:449-453 rfft/irfft n=2L, einsum 'bhl,chl->bchl' (P2, P4); filter: multi-scale "
      "interpolated kernels, cut or zero-padded to L", stand_ins=("IPython",))
def _sgconv(root):
    mod = import_from(root, "gconv_standalone")
    model = mod.GConv(WIDTH, l_max=128, kernel_dim=16)
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():  # the first call stores the kernel norm
        model(_randn(BATCH, WIDTH, 64, seed=0))
    return Subject(FirstOutput(model), channels_first(WIDTH), 64, 37, 128)


@case("liquid-s4/S4 polyb", "liquid-s4", "src/models/sequence/ss/s4.py S4(liquid_kernel='polyb', l_max=128)", 1,
      "ss/s4.py:280-307 rfft(k, n=L_kernel+L), einsum 'bhl,chl->bchl', irfft (P3, P4); liquid terms: products of "
      "shifted inputs, no FFT (ss/s4.py:312-339); filter: SSKernelNPLR, Cauchy kernel + irfft (ss/kernel.py:356)",
      stand_ins=("pytorch_lightning", "pytorch_lightning.utilities"))
def _liquid_s4(root):
    mod = import_from(root, "src.models.sequence.ss.s4")
    model = mod.S4(WIDTH, d_state=16, l_max=128, liquid_kernel="polyb")
    return Subject(FirstOutput(model), channels_first(WIDTH), 64, 37, 128)


@case("torch/Conv1d long depthwise", "", "torch.nn.Conv1d(groups=H, kernel_size=48, padding=47)[..., :L]", 1,
      "one depthwise causal Conv1d of 48 taps (P13), as StripedHyena's long FIR")
def _torch_conv1d(_root):
    class LongDepthwiseConv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(WIDTH, WIDTH, 48, padding=47, groups=WIDTH)

        def forward(self, u):
            return self.conv(u)[..., :u.shape[-1]]

    return Subject(LongDepthwiseConv(), channels_first(WIDTH), 64, 37, 128)


# ---------------------------------------------------------------------------------------------------------------
# Checking one module (in its own process).

@dataclass
class Row:
    name: str
    module: str
    repository: str
    fftconv_nodes: Optional[int] = None
    dft_nodes: Optional[int] = None
    long_conv_nodes: Optional[int] = None  # ONNX Conv nodes of more taps than the module's short filters
    long_convs: int = 0
    short_convs: int = 0
    lengths: list = field(default_factory=list)  # [length, relative error or None, note]
    error: str = ""
    passed: bool = False
    stand_ins: list = field(default_factory=list)


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# ONNX Runtime's wording around the message of the node that failed
ORT_PREFIX = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : (Non-zero status code returned while running (\w+) node\. "
                        r"Name:'([^']*)' Status Message: )?")


def _one_line(exc: BaseException) -> str:
    """The exception and, for a wrapped one (torch.onnx's ConversionError), its root cause, on one line."""
    def text(e):
        message = ORT_PREFIX.sub(lambda m: f"{m.group(2)} node {m.group(3)}: " if m.group(1) else "", str(e))
        return " ".join(ANSI_ESCAPE.sub("", f"{type(e).__name__}: {message}").split())
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    if root is exc:
        line = text(exc)
    elif type(exc).__module__.startswith("fftconv_rt"):  # the exporter's own words, then what torch said
        line = f"{text(exc)} <- {text(root)}"
    else:  # torch.onnx's wrappers say only which step failed
        line = f"{type(exc).__name__} <- {text(root)}"
    return line if len(line) <= 320 else line[:317] + "..."


def _commit(checkout: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        return out[:10]
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "(not a git checkout)"


def _count_nodes(path: Path, short_taps: int) -> tuple[int, int, int]:
    """FFTConv nodes, DFT nodes and Conv nodes of more than short_taps taps (or of unknown taps) in the model."""
    import onnx
    from fftconv_rt.spec import DOMAIN, OP_NAME

    model = onnx.load(str(path), load_external_data=False)
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    fftconv = sum(1 for n in nodes if n.domain == DOMAIN and n.op_type == OP_NAME)
    dft = sum(1 for n in nodes if n.op_type == "DFT" and n.domain in ("", "ai.onnx"))

    def taps(node):
        for attribute in node.attribute:
            if attribute.name == "kernel_shape":
                return list(attribute.ints)[-1]
        shape = weights.get(node.input[1]) if len(node.input) > 1 else None
        return shape[-1] if shape else None

    long_conv = sum(1 for n in nodes if n.op_type == "Conv" and n.domain in ("", "ai.onnx")
                    and (taps(n) is None or taps(n) > short_taps))
    return fftconv, dft, long_conv


def _as_array(y):
    if isinstance(y, (tuple, list)):
        raise TypeError(f"the module returns a {type(y).__name__}; the check compares one tensor")
    return y.detach().to(torch.float32).numpy()


def check_case(case_: Case, repos: Path, verbose: bool) -> Row:
    import numpy as np
    import fftconv_rt

    checkout = repos / case_.folder if case_.folder else None
    repository = f"{case_.folder}@{_commit(checkout)}" if checkout else f"torch@{torch.__version__}"
    row = Row(case_.name, case_.module, repository, long_convs=case_.long_convs, short_convs=case_.short_convs,
              stand_ins=list(case_.stand_ins))
    if checkout is not None and not checkout.is_dir():
        row.error = f"no checkout at {checkout} (fetch {case_.folder} there: see the usage at the top)"
        return row
    install_stand_ins(case_.stand_ins)
    torch.manual_seed(0)
    subject = case_.build(checkout)
    model = subject.model
    model.eval()

    lengths = (subject.traced, subject.shorter, subject.longer)
    references = {}
    with torch.no_grad():  # before the export, which may leave state behind in modules that cache by length
        for length in lengths:
            try:
                output = model(subject.make_input(length))
            except AbsentDependencyError:
                raise
            except Exception as exc:  # the module refuses this length
                references[length] = exc
                continue
            references[length] = _as_array(output)
    if isinstance(references[subject.traced], Exception):
        raise RuntimeError(f"PyTorch itself fails at the traced length {subject.traced}: "
                           f"{_one_line(references[subject.traced])}") from references[subject.traced]

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        report = fftconv_rt.export(model, (subject.make_input(subject.traced),), path)
        if verbose:
            print(report)
        row.fftconv_nodes, row.dft_nodes, row.long_conv_nodes = _count_nodes(path, case_.short_taps)
        session = fftconv_rt.make_session(path, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        all_passed = True
        for length in lengths:
            reference = references[length]
            x = subject.make_input(length).numpy()
            try:
                y = session.run(None, {input_name: x})[0]
            except Exception as exc:
                if isinstance(reference, Exception):
                    row.lengths.append([length, None, "refused by both"])
                else:
                    row.lengths.append([length, None, "ORT: " + _one_line(exc)])
                    all_passed = False
                continue
            if isinstance(reference, Exception):
                row.lengths.append([length, None, "PyTorch refuses (" + _one_line(reference) +
                                    "), ONNX Runtime ran it"])
                all_passed = False
            elif y.shape != reference.shape:
                row.lengths.append([length, None, f"ONNX shape {list(y.shape)}, PyTorch {list(reference.shape)}"])
                all_passed = False
            else:
                error = float(np.max(np.abs(y - reference)) / max(float(np.max(np.abs(reference))), 1e-30))
                row.lengths.append([length, error, ""])
                all_passed = all_passed and math.isfinite(error) and error <= TOLERANCE
    problems = []
    if row.dft_nodes:
        problems.append(f"{row.dft_nodes} DFT nodes left")
    if row.long_conv_nodes:
        problems.append(f"{row.long_conv_nodes} long Conv nodes left")
    if row.fftconv_nodes < row.long_convs:
        problems.append(f"{row.fftconv_nodes} FFTConv nodes for {row.long_convs} long convolutions")
    if problems:
        row.error = "; ".join(problems)
    row.passed = all_passed and not problems
    return row


def run_child(name: str, repos: Path, verbose: bool) -> None:
    case_ = CASES[name]
    try:
        row = check_case(case_, repos, verbose)
    except Exception as exc:
        if verbose:
            traceback.print_exc()
        checkout = repos / case_.folder if case_.folder else None
        row = Row(case_.name, case_.module, f"{case_.folder}@{_commit(checkout)}" if checkout else "torch",
                  long_convs=case_.long_convs, short_convs=case_.short_convs, error=_one_line(exc),
                  stand_ins=list(case_.stand_ins))
    sys.stdout.flush()
    print(ROW_MARKER + json.dumps(row.__dict__), flush=True)


# ---------------------------------------------------------------------------------------------------------------
# The table.

def run_case_process(name: str, repos: Path, verbose: bool) -> Row:
    case_ = CASES[name]
    command = [sys.executable, str(Path(__file__).resolve()), "--repos", str(repos), "--child", name]
    if verbose:
        command.append("--verbose")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CASE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Row(case_.name, case_.module, case_.folder, long_convs=case_.long_convs,
                   short_convs=case_.short_convs, error=f"no result within {CASE_TIMEOUT_S} s")
    rows = [line[len(ROW_MARKER):] for line in done.stdout.splitlines() if line.startswith(ROW_MARKER)]
    if verbose:
        sys.stdout.write("".join(line + "\n" for line in done.stdout.splitlines()
                                 if not line.startswith(ROW_MARKER)))
        sys.stdout.write(done.stderr)
    if not rows:
        last = (done.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
        return Row(case_.name, case_.module, case_.folder, long_convs=case_.long_convs,
                   short_convs=case_.short_convs,
                   error=f"the check's process exited with code {done.returncode}: {last}")
    return Row(**json.loads(rows[-1]))


def format_row(row: Row) -> str:
    def length_cell(entry):
        length, error, note = entry
        if error is not None:
            return f"L={length}: {error:.1e}"
        return f"L={length}: {note}"

    def count(value):
        return "-" if value is None else str(value)

    verdict = "PASS" if row.passed else "FAIL"
    cells = "; ".join(length_cell(entry) for entry in row.lengths)
    detail = "; ".join(part for part in (row.error, cells) if part)
    return (f"{verdict}  {row.name:36s} {row.repository:24s} {row.long_convs}+{row.short_convs}  "
            f"{count(row.fftconv_nodes):>3s} {count(row.dft_nodes):>3s} {count(row.long_conv_nodes):>3s}  {detail}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=Path, required=True, help="folder of the checkouts (one per repository)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="check only this module (repeatable; a name from the table, or a prefix of one)")
    parser.add_argument("--verbose", action="store_true", help="print each export's report and full tracebacks")
    parser.add_argument("--list", action="store_true", help="list the modules and what their convolutions are")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    repos = args.repos.resolve()
    if args.child:
        run_child(args.child, repos, args.verbose)
        return 0
    names = list(CASES)
    if args.list:
        for name in names:
            c = CASES[name]
            print(f"{name:34s} {c.module}\n{'':34s} long convolutions: {c.long_convs}: {c.convs}")
        return 0
    if args.only:
        chosen = [n for n in names if any(n == o or n.startswith(o) for o in args.only)]
        if not chosen:
            parser.error(f"--only {args.only}: no such module; the modules are: {', '.join(names)}")
        names = chosen
    if not repos.is_dir():
        parser.error(f"--repos {repos}: no such folder (fetch the repositories there: see the usage at the top)")
    print(f"{'':6s}{'module':36s} {'repository@commit':24s} convs FFTConv DFT Conv  errors at L (traced, shorter, "
          "longer) or why not\n"
          f"{'':6s}{'':36s} {'':24s} long+short  (nodes left in the ONNX graph)")
    rows = []
    for name in names:
        row = run_case_process(name, repos, args.verbose)
        rows.append(row)
        print(format_row(row), flush=True)
    passed = sum(row.passed for row in rows)
    repositories = sorted({row.repository for row in rows})
    print(f"\n{passed}/{len(rows)} passed (max|y - ref| / max|ref| <= {TOLERANCE:g}, fp32, ONNX Runtime CPU vs "
          "PyTorch eager; a pass needs no DFT node, no long Conv node and an FFTConv node per long convolution)")
    stand_ins = sorted({s.split(".")[0] for row in rows for s in row.stand_ins})
    if stand_ins:
        print(f"stand-ins for unused optional imports: {', '.join(stand_ins)}")
    print("repositories: " + ", ".join(repositories))
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
