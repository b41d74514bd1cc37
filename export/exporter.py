"""export(): torch.export the model, rewrite its long convolutions into
torch.ops.fftconv_rt.fftconv, and export to ONNX with each one as a single
fftconv_rt::FFTConv node. Returns a report of what was rewritten and what was left."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import operator
import re
import sys
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import fx

from fftconv_rt.onnx_translation import custom_translation_table
from fftconv_rt.spec import DOMAIN, OP_NAME
from fftconv_rt.torch_op import fftconv as _fftconv_op  # noqa: F401  (registers the op)

from .graph import (ASSERT_TARGETS, aten, is_last_dim, module_path, node_arg, only_user, real_users,
                    same_size, tensor_val)
from .channel_split import split_projections
from .patterns import CONVOLUTIONS, DEFAULT_MIN_CONV_TAPS, INVERSE_FFTS, PATTERNS, Match, Options, Skip, fft_nodes


class NoLongConvolutionError(ValueError):
    """The model has no long convolution the exporter recognises."""


class ExportError(RuntimeError):
    """The export failed for a reason its message states in one line; `detail` keeps the full
    text of what torch raised (for a verbose mode)."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


class TraceError(ExportError, ValueError):
    """torch.export cannot trace the model (data-dependent control flow, unsupported Python):
    the message names where and why in one line."""


class StrictError(ExportError, ValueError):
    """strict=True and a long convolution (or an FFT that looks like one) could not be rewritten."""


@dataclass
class Rewrite:
    pattern: str
    module: str
    u_shape: list
    k_shape: list
    fft_size: int
    skip_term: bool
    n: str
    scale: str
    gates: str = ""  # "pregate", "postgate" or both: elementwise products folded into the node
    layout: str = "BHL"  # "BLH" when the transposes of a channels-last model were folded in
    filter: str = ""  # "constant" (a parameter, or computed once and folded), "computed in the graph" or "input"
    partial_error: Optional[float] = None  # partial=N: max|y_cut - y| / max|y| of the node on the example inputs
    freq_keep: int = 0  # frequency-sparse: rfft bins of the filter kept (0: all)
    sparse_error: Optional[float] = None  # freq_keep: max|y_sparse - y| / max|y| of the node on the examples
    max_length: int = 0  # the node refuses longer inputs (its filter is stored for this length); 0: no limit
    period_scale: int = 0  # circular of period period_scale * L (a period tied to the length)
    two_sided: bool = False  # anti-causal taps in the node's k_rev input


@dataclass
class LeftFFT:
    node: str
    op: str
    module: str
    reason: str


@dataclass
class ExportReport:
    rewrites: list = field(default_factory=list)
    left: list = field(default_factory=list)
    onnx_path: Optional[str] = None
    fftconv_nodes: int = 0
    split_projections: int = 0  # projections split by the channel groups of their output (channel_split.py)
    inputs: list = field(default_factory=list)  # each input's shape, dynamic dimensions named (u.shape[2])
    notes: list = field(default_factory=list)  # what the export fixed, chose or could not keep, in words
    max_length: Optional[int] = None  # the length the length-dependent filters were stored for
    max_length_source: str = ""  # where that length came from (given, the model's l_max, the examples)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        lines = [f"rewritten long convolutions: {len(self.rewrites)}"]
        for r in self.rewrites:
            where = r.module or "<top>"
            lines.append(f"  {r.pattern:3s} {where:30s} u({', '.join(r.u_shape)}) k({', '.join(r.k_shape)}) "
                         f"n={r.n} fft_size={r.fft_size} skip={'yes' if r.skip_term else 'no'} "
                         f"gates={r.gates or 'none'} layout={r.layout} filter={r.filter or '?'} ({r.scale})"
                         + ("" if r.partial_error is None else f" cut filter: error {r.partial_error:.2e}")
                         + ("" if r.sparse_error is None else
                            f" freq_keep={r.freq_keep}: error {r.sparse_error:.2e}")
                         + (f" period={r.period_scale}L" if r.period_scale else "")
                         + (" two-sided (k_rev)" if r.two_sided else "")
                         + (f" max_length={r.max_length}" if r.max_length else ""))
        if self.split_projections:
            lines.append(f"projections split by their output's channel groups (no Split copy): "
                         f"{self.split_projections}")
        if self.inputs:
            lines.append(f"inputs: {', '.join(self.inputs)}")
        if self.max_length:
            lines.append(f"filters that depend on the length are stored for max_length = {self.max_length} "
                         f"({self.max_length_source}); longer inputs are refused at run time: export with "
                         f"max_length=N (fftconv-rt export --max-length N) to serve longer ones")
        lines.extend(f"note: {note}" for note in self.notes)
        lines.append(f"FFT uses left as they were: {len(self.left)}")
        for f in self.left:
            lines.append(f"  {f.op:22s} {f.module or '<top>':30s} {f.reason}")
        if self.onnx_path:
            lines.append(f"ONNX model: {self.onnx_path} ({self.fftconv_nodes} {OP_NAME} nodes)")
        return "\n".join(lines)


@contextlib.contextmanager
def _quiet_torch_onnx():
    """torch.onnx logs a warning per torchvision op it cannot register, and progress lines to
    stdout; neither concerns the user of this exporter."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


DYNAMIC_DIMS = ("batch+length", "length", "all", "none")


def _default_dynamic_shapes(example_inputs: Sequence[Any], dynamic_dims: str = "all"):
    """Every dimension of every tensor input left for torch.export to decide (Dim.AUTO), or
    none of them (dynamic_dims "none")."""
    return tuple({d: (torch.export.Dim.AUTO if dynamic_dims != "none" else None) for d in range(x.dim())}
                 if isinstance(x, torch.Tensor) else None for x in example_inputs)


_TORCH_DIR = str(Path(torch.__file__).parent)
_PACKAGE_DIRS = (_TORCH_DIR, str(Path(__file__).parent), str(Path(contextlib.__file__).parent))


def _user_frame(exc: BaseException) -> Optional[str]:
    """'file:line `code`' of the innermost frame of the traceback (or of torch's own record of
    the failing call) that is the model's code, not torch's or this package's."""
    found = re.search(r'The following call raised this error:\s*File "([^"]+)", line (\d+), in \S+\s*\n\s*(.+)',
                      str(exc))
    if found:
        return f"{found.group(1)}:{found.group(2)} `{found.group(3).strip()}`"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_PACKAGE_DIRS)]
    if not frames:
        return None
    f = frames[-1]
    return f"{f.filename}:{f.lineno}" + (f" `{f.line.strip()}`" if f.line else "")


def _trace_error(exc: BaseException) -> TraceError:
    """One line for a model torch.export cannot trace: where (the model's line) and why."""
    name = type(exc).__name__
    text = str(exc).strip()
    if "data-dependent" in text or name in ("GuardOnDataDependentSymNode", "DataDependentOutputException"):
        why = ("a Python condition or size read from tensor values (data-dependent control flow); "
               "use torch.where / torch.cond, or compute it outside forward")
    else:
        why = f"{name}: {text.splitlines()[0][:200] if text else 'no message'}"
    where = _user_frame(exc)
    return TraceError(f"fftconv-rt export: torch.export cannot trace the model{' at ' + where if where else ''}: "
                      f"{why}", detail="".join(traceback.format_exception(exc)))


@contextlib.contextmanager
def _traceable_einsum():
    """opt_einsum.contract plans its contraction from the operands' sizes in Python, which makes
    torch.export fix every size it reads (safari's LongConv traced at the example's batch and
    length only). While tracing, a call with an equation string and tensors goes to
    torch.einsum, the same sum; the names bound to contract in loaded modules are swapped back
    afterwards."""
    opt_einsum = sys.modules.get("opt_einsum")
    if opt_einsum is None:
        yield
        return
    original = opt_einsum.contract

    def contract(*operands, **kwargs):
        if operands and isinstance(operands[0], str) and all(isinstance(t, torch.Tensor) for t in operands[1:]) \
                and not kwargs.get("out"):
            return torch.einsum(operands[0], *operands[1:])
        return original(*operands, **kwargs)

    bound = [(module, name) for module in list(sys.modules.values()) if module is not None
             for name, value in list(getattr(module, "__dict__", {}).items()) if value is original]
    for module, name in bound:
        setattr(module, name, contract)
    try:
        yield
    finally:
        for module, name in bound:
            setattr(module, name, original)


@contextlib.contextmanager
def _quiet_tracing():
    """torch.export logs FX graph dumps and symbolic-shape warnings on a failed trace; the
    exporter turns the failure into one line (TraceError) instead."""
    loggers = [logging.getLogger(name) for name in ("torch.fx.experimental.symbolic_shapes", "torch._export",
                                                    "torch.export", "torch._dynamo", "torch._subclasses")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def _module_attributes_kept(model: torch.nn.Module):
    """Attributes a forward sets on its modules while traced (StripedHyena caches its time
    vector in self.t) would keep tensors of the trace: each module's attributes are put back as
    they were, and those the trace added removed."""
    saved = [(m, dict(m.__dict__)) for m in model.modules()]
    try:
        yield
    finally:
        for m, attributes in saved:
            for name in [n for n in m.__dict__ if n not in attributes]:
                del m.__dict__[name]
            for name, value in attributes.items():
                if m.__dict__.get(name) is not value:
                    m.__dict__[name] = value


def _trace(model: torch.nn.Module, example_inputs: tuple, dynamic_shapes) -> torch.export.ExportedProgram:
    """torch.export of the model; a model it cannot trace raises TraceError (one line)."""
    try:
        with _quiet_tracing(), _traceable_einsum(), _module_attributes_kept(model):
            return torch.export.export(model, example_inputs, dynamic_shapes=dynamic_shapes)
    except (torch._dynamo.exc.UserError, RuntimeError, TypeError, ValueError, AssertionError, NotImplementedError,
            AttributeError, IndexError, KeyError) as e:
        raise _trace_error(e) from e


@contextlib.contextmanager
def _inference_mode(model: torch.nn.Module):
    """Every submodule in inference mode (dropout off) while exporting, the caller's modes
    restored afterwards. Sets the flags directly: the module of a loaded .pt2 program refuses
    eval(), and its graph is fixed anyway."""
    modes = [(m, m.training) for m in model.modules()]
    for m, _ in modes:
        m.training = False
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _symbol(size) -> Optional[Any]:
    """The sympy symbol of a dynamic size that is a plain symbol, else None."""
    return size.node.expr if isinstance(size, torch.SymInt) and size.node.expr.is_Symbol else None


def _input_tensors(graph: fx.Graph) -> list:
    """The traced tensors of the graph's inputs, in order (None for a non-tensor input)."""
    return [tensor_val(n) for n in graph.nodes if n.op == "placeholder"]


def _dynamic_dims(graph: fx.Graph) -> list[set]:
    """For each input, the dimensions the graph keeps dynamic."""
    return [set() if t is None else {d for d, size in enumerate(t.shape) if _symbol(size) is not None}
            for t in _input_tensors(graph)]


def _length_symbols(op_nodes: list) -> set:
    """The size symbols the sequence lengths of the op nodes depend on."""
    symbols = set()
    for node in op_nodes:
        length = _op_length(node)
        if isinstance(length, torch.SymInt):
            symbols |= length.node.expr.free_symbols
    return symbols


def _wanted_dynamic_dims(graph: fx.Graph, op_nodes: list, dynamic_dims: str) -> list[set]:
    """Per input, the dimensions the policy keeps dynamic among those traced dynamic: the
    batch (dimension 0 of a tensor of rank 2 or more) and the dimensions that are the sequence
    length of a rewritten convolution."""
    if not op_nodes:  # no sequence length known: the dimensions stay as traced
        return _dynamic_dims(graph)
    lengths = _length_symbols(op_nodes)
    wanted = []
    for t in _input_tensors(graph):
        dims = set()
        for d, size in enumerate(t.shape if t is not None else ()):
            symbol = _symbol(size)
            if symbol is None:
                continue
            is_batch = dynamic_dims == "batch+length" and d == 0 and t.dim() > 1
            if dynamic_dims == "all" or symbol in lengths or is_batch:
                dims.add(d)
        wanted.append(dims)
    return wanted


def _shapes_with(example_inputs: tuple, dims: list[set]):
    """dynamic_shapes for torch.export / torch.onnx: `dims` of each input Dim.AUTO, the rest static."""
    return tuple({d: (torch.export.Dim.AUTO if d in wanted else None) for d in range(x.dim())}
                 if isinstance(x, torch.Tensor) else None for x, wanted in zip(example_inputs, dims))


def _batch_of_two(example_inputs: tuple) -> Optional[tuple]:
    """The examples with every batch of 1 repeated to 2 (torch.export fixes dimensions of size 1,
    which would fix the exported batch at 1), or None when no batch is 1."""
    if not any(isinstance(x, torch.Tensor) and x.dim() > 1 and x.shape[0] == 1 for x in example_inputs):
        return None
    return tuple(torch.cat([x, x]) if isinstance(x, torch.Tensor) and x.dim() > 1 and x.shape[0] == 1 else x
                 for x in example_inputs)


def _remove_dead_code(graph: fx.Graph) -> None:
    """Dead-code elimination that also drops the metadata assertions on dead tensors
    (DCE alone keeps them, as they count as side effects, and so keeps the tensors)."""
    changed = True
    while changed:
        graph.eliminate_dead_code()
        changed = False
        for node in list(graph.nodes):
            if node.target in ASSERT_TARGETS and isinstance(node.args[0], fx.Node) \
                    and not real_users(node.args[0]):
                graph.erase_node(node)
                changed = True


_FFTCONV_OP = torch.ops.fftconv_rt.fftconv.default
_OP_ARGUMENTS = {a.name for a in _FFTCONV_OP._schema.arguments}
# fftconv_rt::FFTConv version 2: anti-causal taps, a period tied to L, a longest length
_TWO_SIDED_OP = {"k_rev", "period_scale", "max_length"} <= _OP_ARGUMENTS


def _filter_of_match(graph: fx.Graph, m: Match, k: fx.Node) -> fx.Node:
    """The node's filter for the shifted and two-sided forms (P8, P9/P11, P12), see Match."""
    def pad_to(x: fx.Node, length: int, source: fx.Node) -> fx.Node:  # zeros after x, up to length
        return graph.call_function(aten.constant_pad_nd.default,
                                   (x, [0, length - int(tensor_val(source).shape[-1])], 0.0))

    if m.filter_delay:
        k = graph.call_function(aten.constant_pad_nd.default, (k, [m.filter_delay, 0], 0.0))
    if m.filter_period:  # only set for the plain (H, Lk) filters of the rfft forms
        k = pad_to(k, m.filter_period, m.k)
        if m.k_reverse is not None:  # k_reverse[j] at lag -j: position (n - j) mod n
            flipped = graph.call_function(aten.flip.default, (pad_to(m.k_reverse, m.filter_period, m.k_reverse), [-1]))
            k = graph.call_function(aten.add.Tensor, (k, graph.call_function(aten.roll.default, (flipped, [1], [-1]))))
        if m.filter_shift % m.filter_period:
            k = graph.call_function(aten.roll.default, (k, [m.filter_shift % m.filter_period], [-1]))
    return k


def _apply(graph: fx.Graph, m: Match) -> fx.Node:
    """Inserts the op for the match, reroutes the match's users to it; returns the op node."""
    u_dtype = tensor_val(m.u).dtype
    with graph.inserting_before(m.end):
        k = m.k
        u = m.u
        if m.heads:  # one FFTConv channel per (head, channel): u shared by the heads
            u = graph.call_function(aten.flatten.using_ints, (
                graph.call_function(aten.expand.default, (graph.call_function(aten.unsqueeze.default, (u, 1)),
                                                          [-1, m.heads, -1, -1])), 1, 2))
            k = graph.call_function(aten.flatten.using_ints, (k, 0, 1))
        if m.k_batch_of_one:
            k = graph.call_function(aten.select.int, (k, 0, 0))
        if m.k_is_conv_weight:  # Conv1d correlates: the causal filter is the weight reversed
            k = graph.call_function(aten.flip.default, (graph.call_function(aten.squeeze.dim, (k, 1)), [-1]))
        k = _filter_of_match(graph, m, k)
        if tensor_val(m.k).dtype not in (torch.float32, u_dtype):
            k = graph.call_function(aten.to.dtype, (k, torch.float32))
        D = m.D
        if D is not None and m.heads:
            D = graph.call_function(aten.flatten.using_ints, (D, 0, 1))
        elif D is not None:
            if m.D_needs_flatten:
                D = graph.call_function(aten.reshape.default, (D, [-1]))
            if tensor_val(m.D).dtype not in (torch.float32, u_dtype):
                D = graph.call_function(aten.to.dtype, (D, torch.float32))
        kwargs = {}
        if m.k_rev is not None:
            k_rev = m.k_rev
            if tensor_val(k_rev).dtype not in (torch.float32, u_dtype):
                k_rev = graph.call_function(aten.to.dtype, (k_rev, torch.float32))
            kwargs["k_rev"] = k_rev
        if m.period_scale:
            kwargs["period_scale"] = m.period_scale
        op = out = graph.call_function(_FFTCONV_OP, (u, k, D, None, None, m.fft_size, "BHL"), kwargs)
        if m.heads:  # back to (B, C, H, L)
            out = graph.call_function(aten.unflatten.int, (out, 1, [m.heads, -1]))
        if m.bias is not None:
            out = graph.call_function(aten.add.Tensor, (out, graph.call_function(aten.unsqueeze.default,
                                                                                    (m.bias, -1))))
        end_dtype = tensor_val(m.end).dtype
        if end_dtype != u_dtype:  # the model computed in a wider type and did not cast back
            out = graph.call_function(aten.to.dtype, (out, end_dtype))
    # the replacement computes the same tensor: later matches read its shape and type here
    out.meta["val"] = m.end.meta.get("val")
    op.meta["fftconv_length"] = tensor_val(m.u).shape[-1]
    if op is out:
        op.meta["val"] = m.end.meta.get("val")
    m.end.replace_all_uses_with(out)
    return op


def _constant_nodes(nodes) -> set:
    """The nodes (of a topologically ordered iterable) that depend on no input of the model."""
    constant = set()
    for n in nodes:
        if n.op == "get_attr" or (n.op == "call_function" and all(a in constant for a in n.all_input_nodes)):
            constant.add(n)
    return constant


def _evaluate(gm: fx.GraphModule, node: fx.Node, given: Optional[dict] = None) -> torch.Tensor:
    """The value of a node that depends on no input, computed by the graph's own ops; `given`
    sets the values of some nodes (the input sizes a length-dependent filter reads)."""
    given = given or {}
    needed, stack = set(), [node]
    while stack:
        n = stack.pop()
        if n not in needed:
            needed.add(n)
            if n not in given:
                stack.extend(n.all_input_nodes)
    values: dict = dict(given)
    for n in gm.graph.nodes:  # topological order
        if n in needed and n not in given:
            values[n] = operator.attrgetter(n.target)(gm) if n.op == "get_attr" else n.target(
                *fx.map_arg(n.args, values.__getitem__), **fx.map_arg(n.kwargs, values.__getitem__))
    return values[node]


def _op_length(op_node: fx.Node):
    if "fftconv_length" in op_node.meta:
        return op_node.meta["fftconv_length"]
    u, layout = op_node.args[0], op_node.args[6]
    return tensor_val(u).shape[1 if layout == "BLH" else 2]


def _linear_causal(op_node: fx.Node) -> bool:
    """fft_size automatic, no period tied to L and no kept band: the op is a linear convolution
    (causal, plus anti-causal taps k_rev), where taps past L never reach an output, so filters
    that agree on their first L taps give the same y."""
    return op_node.args[5] == 0 and not op_node.kwargs.get("freq_keep") and not op_node.kwargs.get("period_scale")


def _drop_cut_to_length(op_node: fx.Node) -> bool:
    """k = C[:, :L] with C constant and L the op's length: on a linear causal op C itself gives
    the same y, and as an initializer it has its spectrum prepared once per session instead of
    on every call. Returns whether the cut was dropped."""
    k = op_node.args[1]
    if not (_linear_causal(op_node) and isinstance(k, fx.Node) and k.target == aten.slice.Tensor):
        return False
    source = k.args[0]
    if not (isinstance(source, fx.Node) and source.op == "get_attr" and is_last_dim(source, node_arg(k, 1, "dim", 0))):
        return False
    if node_arg(k, 2, "start", None) not in (None, 0) or node_arg(k, 4, "step", 1) != 1 or \
            not same_size(node_arg(k, 3, "end", None), _op_length(op_node)):
        return False
    op_node.replace_input_with(k, source)
    return True


def _size_reads(gm: fx.GraphModule, k: fx.Node) -> Optional[list]:
    """The nodes reading an input's size (aten.sym_size.int) that k depends on, when k depends on
    the inputs through their sizes only; None when it reads an input's values."""
    constant = _constant_nodes(gm.graph.nodes)
    sizes, seen, stack = [], set(), [k]
    while stack:
        n = stack.pop()
        if n in seen or n in constant:
            continue
        seen.add(n)
        if n.op == "call_function" and n.target == aten.sym_size.int:
            sizes.append(n)
        elif n.op == "call_function":
            stack.extend(n.all_input_nodes)
        else:
            return None
    return sizes


def _filter_inputs(op_node: fx.Node) -> list[tuple[str, fx.Node]]:
    """The op's filter inputs that are nodes: ("k", node) and ("k_rev", node) when present."""
    found = [("k", op_node.args[1])]
    if op_node.kwargs.get("k_rev") is not None:
        found.append(("k_rev", op_node.kwargs["k_rev"]))
    return [(name, node) for name, node in found if isinstance(node, fx.Node)]


def _replace_filter(op_node: fx.Node, name: str, old: fx.Node, new: fx.Node) -> None:
    if name == "k":
        op_node.args = (op_node.args[0], new) + tuple(op_node.args[2:])
    else:
        op_node.kwargs = {**op_node.kwargs, name: new}


def _computes_complex(k: fx.Node) -> bool:
    """Whether a complex-valued tensor is computed on the way to k (torch.onnx converts no
    complex exp, log or pow)."""
    seen, stack = set(), [k]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        t = tensor_val(n)
        if t is not None and t.is_complex():
            return True
        stack.extend(n.all_input_nodes)
    return False


def _fold_at_length(gm: fx.GraphModule, op_node: fx.Node, limit: "_LengthLimit", index: int
                    ) -> Optional[tuple[str, int]]:
    """Filters (k, and k_rev) that depend on the input only through the op's length L and are,
    at every L, the first taps of one filter (Hyena's positional embedding cut to L, S4D's
    Vandermonde product over arange(L), a modal filter over t = arange(L)) are computed once at
    limit.value and stored; on the linear op they then give the same y for every L up to it,
    and the node refuses longer inputs (its max_length). A filter that stops growing (a
    positional table of l_max rows cut to L) is the same at every longer length: no limit then.
    The prefix property is checked on the graph's own ops at two lengths. Returns the report's
    text and the node's limit (0: none), or None when the filters are not of this kind."""
    if not _linear_causal(op_node) or limit.value is None:
        return None
    length = _op_length(op_node)
    inputs = [(name, k, _size_reads(gm, k)) for name, k in _filter_inputs(op_node)]
    if any(sizes is None or not all(same_size(x, length) for x in sizes) for _, _, sizes in inputs) or \
            not any(sizes for _, _, sizes in inputs):
        return None
    if limit.only_if_needed and not any(_computes_complex(k) for _, k, _ in inputs):
        return None
    max_length = limit.value

    def filters_at(L: int) -> list:
        return [_evaluate(gm, k, {x: L for x in sizes}).detach() if sizes else None for _, k, sizes in inputs]

    hint = length.node.hint if isinstance(length, torch.SymInt) else None
    if hint and hint > max_length:  # the stored filter would be cut short at the example's own length
        raise ValueError(f"fftconv-rt export: max_length = {max_length} is shorter than the example inputs' "
                         f"sequence length {hint}; give the longest length the model will run")
    checks = sorted({int(hint) if hint else max(1, max_length // 2), max(1, max_length // 3)})
    try:
        longest = filters_at(max_length)
        shorter = [(L, filters_at(L)) for L in checks if L < max_length]
        longer = filters_at(max_length + 1)
    except (RuntimeError, ValueError, IndexError):  # the graph's ops refuse one of the lengths
        return None

    def is_prefix(whole: torch.Tensor, part: torch.Tensor, L: int) -> bool:
        taps = min(L, whole.shape[-1])
        expected = torch.nn.functional.pad(part[..., :taps], (0, max(0, taps - part.shape[-1])))
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        return part.shape[:-1] == whole.shape[:-1] and torch.allclose(
            whole[..., :taps].double(), expected.double(), rtol=0.0, atol=1e-6 * max(scale, 1e-30))

    for L, at_L in shorter:
        if not all(whole is None or is_prefix(whole, part, L) for whole, part in zip(longest, at_L)):
            return None
    saturated = all(whole is None or (part.shape == whole.shape and torch.equal(part, whole))
                    for whole, part in zip(longest, longer))
    if not saturated and "max_length" not in _OP_ARGUMENTS:  # the op could not refuse longer inputs
        return None
    for (name, k, sizes), value in zip(inputs, longest):
        if value is None:
            continue
        buffer = f"_fftconv_{name}_{index}_at_length"
        gm.register_buffer(buffer, value.clone())
        with gm.graph.inserting_before(op_node):
            folded = gm.graph.get_attr(buffer)
        folded.meta["val"] = value
        _replace_filter(op_node, name, k, folded)
    taps = max(v.shape[-1] for v in longest if v is not None)
    if saturated:
        return f"folded whole ({taps} taps: the same filter at every longer length)", 0
    op_node.kwargs = {**op_node.kwargs, "max_length": max_length}
    return (f"folded at max_length = {max_length} ({taps} taps; its cut to L is a prefix; longer inputs "
            f"refused)", max_length)


def _fold_filter(gm: fx.GraphModule, op_node: fx.Node, fold: bool, index: int,
                 limit: Optional["_LengthLimit"] = None) -> tuple[str, int]:
    """With fold, the part of the op's filters that depends on no input of the model (an
    implicit MLP filter, an S4D Vandermonde product, a modal form: complex-valued generators
    included) is computed once here by the graph's own ops and stored as a buffer, which
    becomes an ONNX initializer (whose spectrum the runtime prepares once). A final cut of it
    to L is dropped where that changes no output (_drop_cut_to_length); a filter that depends
    on L only as a prefix is stored for the length limit (_fold_at_length). What else depends
    on the input stays in the graph. Returns how the filter reaches the node, for the report,
    and the node's length limit (0: none)."""
    inputs = _filter_inputs(op_node)
    if all(k.op == "get_attr" for _, k in inputs):
        return "constant", 0
    if not fold:
        return "computed in the graph", 0
    constant = _constant_nodes(gm.graph.nodes)
    frontier, seen, stack = [], set(), [k for _, k in inputs]
    while stack:  # the highest constant nodes on the way up from the filters
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n in constant:
            if n.op == "call_function":
                frontier.append(n)
        else:
            stack.extend(n.all_input_nodes)
    for i, n in enumerate(frontier):
        name = f"_fftconv_filter_{index}_{i}"
        gm.register_buffer(name, _evaluate(gm, n).detach().clone())
        with gm.graph.inserting_before(n):
            folded = gm.graph.get_attr(name)
        folded.meta["val"] = n.meta.get("val")
        n.replace_all_uses_with(folded)
    if all(k.op == "get_attr" for _, k in _filter_inputs(op_node)):
        return "constant", 0
    if _drop_cut_to_length(op_node) and all(k.op == "get_attr" for _, k in _filter_inputs(op_node)):
        return "constant (its cut to L dropped: taps past L reach no output)", 0
    folded_at_length = _fold_at_length(gm, op_node, limit, index) if limit is not None else None
    if folded_at_length:
        return folded_at_length
    return ("input-dependent, constant part folded" if frontier else "depends on the input or its length"), 0


class _OutputRecorder(fx.Interpreter):
    """Runs a GraphModule and keeps the outputs of the given nodes."""

    def __init__(self, gm: fx.GraphModule, nodes):
        super().__init__(gm)
        self.nodes, self.outputs = set(nodes), {}

    def run_node(self, n):
        out = super().run_node(n)
        if n in self.nodes:
            self.outputs[n] = out.detach().clone()
        return out


def _changed_outputs(gm: fx.GraphModule, op_nodes: list, example_inputs, change) -> list[float]:
    """Applies change(node) to every op node (options that change the model's function) and
    returns each node's relative error, max|y_changed - y| / max|y|, on the example inputs (all
    changes applied, as the exported model will run)."""
    gm.recompile()
    with torch.no_grad():
        before = _OutputRecorder(gm, op_nodes)
        before.run(*example_inputs)
        for node in op_nodes:
            change(node)
        gm.recompile()
        after = _OutputRecorder(gm, op_nodes)
        after.run(*example_inputs)
    errors = []
    for node in op_nodes:
        y, y_changed = before.outputs[node].double(), after.outputs[node].double()
        scale = float(y.abs().max()) if y.numel() else 0.0
        errors.append(float((y_changed - y).abs().max()) / scale if scale > 0 else 0.0)
    return errors


def _cut_filters(gm: fx.GraphModule, op_nodes: list, taps: int, example_inputs) -> list[float]:
    """Cuts the filter of every op node to its first `taps` taps (a partial convolution)."""
    if taps < 1:
        raise ValueError(f"fftconv-rt export: partial must be >= 1 taps, got {taps}")

    def cut(node):
        with gm.graph.inserting_before(node):
            short = gm.graph.call_function(aten.slice.Tensor, (node.args[1], 1, 0, taps))
        node.replace_input_with(node.args[1], short)

    return _changed_outputs(gm, op_nodes, example_inputs, cut)


def _sparse_bins(node: fx.Node, freq_keep) -> int:
    """The bins a node keeps: freq_keep itself (an int), or a fraction of the node's rfft bins
    n/2 + 1 (a float in (0, 1]), which needs the period n = fft_size or 2L to be static."""
    if isinstance(freq_keep, bool) or not isinstance(freq_keep, (int, float)) or freq_keep <= 0:
        raise ValueError(f"fftconv-rt export: freq_keep must be a number of bins >= 1 or a fraction in (0, 1], "
                         f"got {freq_keep!r}")
    if isinstance(freq_keep, int):
        return freq_keep
    if freq_keep > 1:
        raise ValueError(f"fftconv-rt export: freq_keep as a fraction must be in (0, 1], got {freq_keep}")
    u, fft_size, layout = node.args[0], node.args[5], node.args[6]
    length = tensor_val(u).shape[1 if layout == "BLH" else 2]
    if not isinstance(length, int) and not (hasattr(length, "node") and length.node.is_constant()):
        raise ValueError("fftconv-rt export: freq_keep as a fraction needs a static sequence length (the bins "
                         "kept depend on the period 2L); export with static shapes or give a number of bins")
    n = fft_size or 2 * int(length)
    return max(1, round(freq_keep * (n // 2 + 1)))


def _sparsify(gm: fx.GraphModule, op_nodes: list, freq_keep, example_inputs) -> list[tuple[int, float]]:
    """Makes every op node frequency-sparse (its filter spectrum keeps `freq_keep` bins) and
    returns each node's (bins kept, relative error on the example inputs)."""
    bins = [_sparse_bins(node, freq_keep) for node in op_nodes]
    keep = dict(zip(op_nodes, bins))

    def sparsify(node):
        node.kwargs = {**node.kwargs, "freq_keep": keep[node]}

    return list(zip(bins, _changed_outputs(gm, op_nodes, example_inputs, sparsify)))


def _same_tensor_type(a, b) -> bool:
    ta, tb = tensor_val(a), tensor_val(b)
    return (ta is not None and tb is not None and ta.dtype == tb.dtype and ta.dim() == tb.dim()
            and all(same_size(x, y) for x, y in zip(ta.shape, tb.shape)))


def _fold_gates(graph: fx.Graph, node: fx.Node) -> str:
    """Folds `(a * b)` as the op's input into u = a, pregate = b, and `op(...) * g` on its
    output into postgate = g, when the products are elementwise on same-shaped tensors of u's
    type and used by nothing else. Returns which were folded."""
    u, k, D, pre, post, fft_size, layout = node.args
    folded = []
    if pre is None and isinstance(u, fx.Node) and u.target == aten.mul.Tensor and real_users(u) == [node]:
        a, b = u.args[:2]
        if isinstance(a, fx.Node) and isinstance(b, fx.Node) and _same_tensor_type(a, u) and _same_tensor_type(b, u):
            u, pre = a, b
            folded.append("pregate")
    user = only_user(node)
    if post is None and user is not None and user.target == aten.mul.Tensor and tensor_val(node) is not None:
        g = user.args[1] if user.args[0] is node else user.args[0]
        if isinstance(g, fx.Node) and _same_tensor_type(g, node) and _same_tensor_type(user, node):
            post = g
            user.replace_all_uses_with(node)
            node.meta["val"] = user.meta.get("val")
            folded.append("postgate")
    node.args = (u, k, D, pre, post, fft_size, layout)
    return "+".join(folded)


def _swaps_last_two(node) -> bool:
    """transpose(x, 1, 2) / permute(x, [0, 2, 1]) of a rank-3 tensor."""
    if not isinstance(node, fx.Node) or tensor_val(node) is None or tensor_val(node).dim() != 3:
        return False
    if node.target == aten.transpose.int:
        return sorted(d % 3 for d in node.args[1:3]) == [1, 2]
    return node.target == aten.permute.default and [d % 3 for d in node.args[1]] == [0, 2, 1]


def _fold_layout(node: fx.Node) -> str:
    """A channels-last model: `transpose -> op -> transpose back` becomes the op with layout BLH
    (when no gate is folded, so every tensor of the op is in one layout). Returns the layout."""
    u, k, D, pre, post, fft_size, layout = node.args
    user = only_user(node)
    if pre is None and post is None and layout == "BHL" and _swaps_last_two(u) and real_users(u) == [node] \
            and tensor_val(node) is not None and _swaps_last_two(user):
        node.args = (u.args[0], k, D, pre, post, fft_size, "BLH")
        user.replace_all_uses_with(node)
        node.meta["val"] = user.meta.get("val")
        return "BLH"
    return layout


def _size_names(graph: fx.Graph):
    """A function that rewrites torch.export's size symbols (s27, ...) in a text as the input
    dimensions they stand for (tokens.shape[1], ...)."""
    names = {}
    for node in graph.nodes:
        if node.op != "placeholder":
            continue
        t = tensor_val(node)
        if t is None:
            continue
        for d, size in enumerate(t.shape):
            if isinstance(size, torch.SymInt) and size.node.expr.is_Symbol:
                names.setdefault(str(size.node.expr), f"{node.name}.shape[{d}]")
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b") if names else None
    return lambda text: pattern.sub(lambda m: names[m.group(1)], text) if pattern else text


_LENGTH_HINT_NAMES = ("l_max", "max_len", "max_length", "max_seq_len", "max_seqlen", "seq_len", "seqlen",
                      "max_position_embeddings")


def _module_length_hint(model: torch.nn.Module, paths: set) -> Optional[tuple[int, str]]:
    """The model's own longest length for the modules at `paths` and their parents: an int
    attribute (or config entry) named like l_max; (value, "module.attribute") or None."""
    found = []
    for path in paths:
        parts = path.split(".") if path else []
        for depth in range(len(parts), -1, -1):
            prefix = ".".join(parts[:depth])
            try:
                module = model.get_submodule(prefix)
            except AttributeError:
                continue
            config = getattr(module, "config", None)
            for source, owner in ((prefix, module), (f"{prefix}.config" if prefix else "config", config)):
                for name in _LENGTH_HINT_NAMES:
                    value = owner.get(name) if isinstance(owner, dict) else getattr(owner, name, None) \
                        if owner is not None and not isinstance(owner, (int, float, str)) else None
                    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                        found.append((value, f"{source + '.' if source else ''}{name}"))
    return max(found) if found else None


@dataclass
class _LengthLimit:
    """max_length for filters that depend on the length: the user's, else a default."""
    value: Optional[int]
    source: str  # "given", "the model's <attribute>", "the example inputs' length"
    given: bool
    # The example's length is a last resort: filters that ONNX can compute at every length stay in
    # the graph then; only those torch.onnx cannot convert (complex-valued) are stored for it.
    only_if_needed: bool = False


def _length_limit(model, gm: fx.GraphModule, op_nodes: list, max_length: Optional[int]) -> _LengthLimit:
    if max_length is not None:
        return _LengthLimit(max_length, "given", True)
    lengths = [_op_length(n) for n in op_nodes]
    example = max((int(L.node.hint) if isinstance(L, torch.SymInt) else int(L) for L in lengths), default=None)
    paths = {module_path(n) for n in gm.graph.nodes if n.op == "call_function"} if op_nodes else set()
    hint = _module_length_hint(model, paths) if isinstance(model, torch.nn.Module) else None
    if hint is not None and (example is None or hint[0] >= example):
        return _LengthLimit(hint[0], f"the model's {hint[1]}", False)
    return _LengthLimit(example, "the example inputs' length", False, only_if_needed=True)


def _rewrite_once(model, example_inputs: tuple, dynamic_shapes, options: Options, fold_filters: bool,
                  partial, freq_keep, max_length) -> tuple[fx.GraphModule, ExportReport, list]:
    """One trace and rewrite at the given dynamic shapes: (graph module, report, op nodes)."""
    gm = _trace(model, example_inputs, dynamic_shapes).module()
    report = ExportReport()
    report.split_projections = split_projections(gm)
    if report.split_projections:  # traced again for the shapes of the new nodes
        gm = _trace(gm, example_inputs, dynamic_shapes).module()
    graph = gm.graph
    skipped: dict[fx.Node, str] = {}
    readable = _size_names(graph)
    op_nodes: list[fx.Node] = []
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in INVERSE_FFTS | CONVOLUTIONS:
            continue
        for _, match_fn in PATTERNS:
            result = match_fn(node, options)
            if isinstance(result, Match):
                op_nodes.append(_apply(graph, result))
                d = result.details
                report.rewrites.append(Rewrite(result.pattern, d["module"], [readable(x) for x in d["u_shape"]],
                                               [readable(x) for x in d["k_shape"]], result.fft_size, d["skip"],
                                               readable(d["n"]), d["scale"], period_scale=result.period_scale,
                                               two_sided=result.k_rev is not None))
                skipped.pop(node, None)
                break
            if isinstance(result, Skip):
                skipped[node] = result.reason
    _remove_dead_code(graph)
    for rewrite, op_node in zip(report.rewrites, op_nodes):
        rewrite.gates = _fold_gates(graph, op_node)
        rewrite.layout = _fold_layout(op_node)
    if partial is not None:
        for rewrite, error in zip(report.rewrites, _cut_filters(gm, op_nodes, partial, example_inputs)):
            rewrite.partial_error = error
    if freq_keep is not None:
        for rewrite, (bins, error) in zip(report.rewrites, _sparsify(gm, op_nodes, freq_keep, example_inputs)):
            rewrite.freq_keep, rewrite.sparse_error = bins, error
    limit = _length_limit(model, gm, op_nodes, max_length)
    for index, (rewrite, op_node) in enumerate(zip(report.rewrites, op_nodes)):
        rewrite.filter, rewrite.max_length = _fold_filter(gm, op_node, fold_filters, index, limit)
    if any(r.max_length for r in report.rewrites):
        report.max_length, report.max_length_source = limit.value, limit.source
    _remove_dead_code(graph)
    gm.recompile()

    for node in fft_nodes(graph):
        reason = skipped.get(node)
        if reason is None:
            consumer = next((a for a, _ in skipped.items() if node in a.args[0].all_input_nodes or
                             any(node in x.all_input_nodes for x in a.args[0].all_input_nodes)), None)
            if consumer:
                reason = f"feeds an inverse FFT that was not rewritten: {skipped[consumer]}"
            elif node.target in INVERSE_FFTS:
                reason = "not a convolution: its input is not the product of two spectra (u's and a filter's)"
            else:
                reason = "not a convolution: its spectrum is not multiplied by a filter's spectrum"
        report.left.append(LeftFFT(node.name, str(node.target).replace("aten.", ""), module_path(node), reason))
    return gm, report, op_nodes


def _describe_dims(gm: fx.GraphModule, op_nodes: list, dynamic_dims: Optional[str], report: ExportReport) -> None:
    """The report's account of the inputs' dynamic dimensions, and a note for each batch or
    sequence length that the policy wanted dynamic but the model's code fixed."""
    readable = _size_names(gm.graph)
    names = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    for name, t, dims in zip(names, _input_tensors(gm.graph), _dynamic_dims(gm.graph)):
        if t is not None:
            sizes = [readable(str(size)) if d in dims else str(int(size)) for d, size in enumerate(t.shape)]
            report.inputs.append(f"{name}({', '.join(sizes)})")
            if dynamic_dims == "batch+length" and t.dim() > 1 and 0 not in dims:
                report.notes.append(f"{name}.shape[0] (the batch) is fixed at {int(t.shape[0])}: torch.export "
                                    "specialised it while tracing the model's code")
    if dynamic_dims in ("batch+length", "length", "all"):
        for rewrite, node in zip(report.rewrites, op_nodes):
            length = _op_length(node)
            if not isinstance(length, torch.SymInt) or length.node.expr.is_number:
                report.notes.append(f"the sequence length of {rewrite.module or '<top>'} is fixed at {int(length)}: "
                                    "torch.export specialised it while tracing the model's code (a length read "
                                    "as a Python number); the ONNX model accepts only that length")


def _rewrite(model, example_inputs: tuple, dynamic_shapes, dynamic_dims: str, settings: tuple):
    """rewrite_long_convolutions, also returning the examples it traced with (a batch of 1
    is traced as 2)."""
    if dynamic_dims not in DYNAMIC_DIMS:
        raise ValueError(f"fftconv-rt export: dynamic_dims must be one of {', '.join(DYNAMIC_DIMS)}, "
                         f"got {dynamic_dims!r}")
    if dynamic_shapes is not None:
        gm, report, op_nodes = _rewrite_once(model, example_inputs, dynamic_shapes, *settings)
        _describe_dims(gm, op_nodes, None, report)
        return gm, report, example_inputs
    traced = example_inputs
    if dynamic_dims in ("batch+length", "all") and _batch_of_two(example_inputs) is not None:
        traced = _batch_of_two(example_inputs)  # a batch of 1 would be fixed at 1
    try:
        gm, report, op_nodes = _rewrite_once(model, traced, _default_dynamic_shapes(traced, dynamic_dims), *settings)
    except TraceError:
        if traced is example_inputs:
            raise
        traced = example_inputs
        gm, report, op_nodes = _rewrite_once(model, traced, _default_dynamic_shapes(traced, dynamic_dims), *settings)
    wanted = _wanted_dynamic_dims(gm.graph, op_nodes, dynamic_dims)
    if wanted != _dynamic_dims(gm.graph):  # traced again with only the wanted dimensions dynamic
        gm, report, op_nodes = _rewrite_once(model, traced, _shapes_with(traced, wanted), *settings)
    if traced is not example_inputs:
        report.notes.append("traced with the example's batch of 1 repeated to 2, so that the batch stays dynamic")
    _describe_dims(gm, op_nodes, dynamic_dims, report)
    return gm, report, traced


def rewrite_long_convolutions(model: torch.nn.Module, example_inputs: Sequence[Any],
                              dynamic_shapes=None, min_conv_taps: int = DEFAULT_MIN_CONV_TAPS,
                              fold_filters: bool = True, partial: Optional[int] = None,
                              freq_keep=None, max_length: Optional[int] = None,
                              dynamic_dims: str = "batch+length") -> tuple[fx.GraphModule, ExportReport]:
    """The model as a GraphModule with every recognised long convolution replaced by the op.
    Without dynamic_shapes, the inputs' dimensions that dynamic_dims names stay dynamic (where
    the model's code allows it) and the others are fixed at the example's sizes."""
    settings = (Options(min_conv_taps=min_conv_taps, two_sided_op=_TWO_SIDED_OP), fold_filters, partial, freq_keep,
                max_length)
    gm, report, _ = _rewrite(model, tuple(example_inputs), dynamic_shapes, dynamic_dims, settings)
    return gm, report


def export(model, example_inputs: Optional[Sequence[Any]], path: str | Path, *,
           dynamic_shapes=None, opset_version: Optional[int] = None, input_names: Optional[list] = None,
           output_names: Optional[list] = None, require_rewrite: bool = True,
           min_conv_taps: int = DEFAULT_MIN_CONV_TAPS, fold_filters: bool = True, tensorrt: bool = False,
           partial: Optional[int] = None, freq_keep=None, max_length: Optional[int] = None,
           dynamic_dims: str = "batch+length", strict: bool = False) -> ExportReport:
    """Exports model to ONNX at path with its long convolutions as fftconv_rt::FFTConv nodes.

    model: a torch.nn.Module, or a torch.export.ExportedProgram (as torch.export.load returns
    from a .pt2 file; example_inputs may then be None: the program's own are used). The
    model's train/eval modes are left as they were (it is exported in inference mode).
    dynamic_dims: which input dimensions stay dynamic (default "batch+length": dimension 0 of
    every input of rank 2 or more, and every dimension that is the sequence length of a
    rewritten convolution; "length": the lengths only; "all": every dimension the model's
    code allows; "none": every dimension fixed at the example's size). A batch of 1 in the
    example is traced as 2 so that it stays dynamic. Dimensions the model's code fixes while
    being traced are fixed in the ONNX model too (never a dynamic input over a fixed graph),
    and the report's notes say which.
    dynamic_shapes: as for torch.export, overriding dynamic_dims.
    strict: raise StrictError when an FFT convolution is left unrewritten (default: it stays as
    standard ONNX ops, with the reason in the report, and the rest is exported).
    opset_version: the ONNX opset; by default 20 (GELU is one op there, which ONNX Runtime fuses
    with its bias), or 18 when FFTs are left in the graph (ONNX Runtime 1.31-1.32 fails on some
    opset-20 DFT nodes: "Shape mismatch attempting to re-use buffer").
    require_rewrite: raise NoLongConvolutionError when nothing was rewritten.
    min_conv_taps: depthwise causal Conv1d layers with at least this many taps become FFTConv
    nodes too (pattern P13; default 2: Hyena's 3-tap short filters too, which ORT's CUDA Conv runs
    very slowly at long lengths); shorter ones stay ONNX Conv.
    fold_filters: a filter computed by the model from its parameters alone (implicit MLP
    filters, S4D Vandermonde, modal forms; not one that depends on the input or its length)
    is computed once at export and stored as an initializer; False keeps its ops in the graph
    (and turns off the ONNX optimizer, which would fold them anyway).
    tensorrt: stamp the FFTConv nodes for TensorRT's ONNX parser (plugin_version, plugin_namespace
    and the optional inputs present; ONNX Runtime ignores them).
    partial: cut every long filter to its first `partial` taps (FlashFFTConv's partial
    convolution: this changes the model's function; the report gives each node's error on the
    example inputs). Short filters then run on the block/tensor-core paths.
    freq_keep: make every FFTConv frequency-sparse (FlashFFTConv's frequency-sparse
    convolution, also a change of function): its filter spectrum keeps the lowest freq_keep rfft
    bins (an int), or that fraction of them (a float in (0, 1], static lengths only). The period
    n (fft_size, or 2L) must be a power of two; the report gives each node's error.
    max_length: the longest sequence the exported model will run. A filter that depends on the
    input only through its length, as the first L taps of one filter (Hyena's positional
    embedding cut to L, then its MLP), is then computed once for max_length and stored, so that
    the runtime prepares its spectrum once per session and length instead of running the filter's
    ops and transform on every call (checked at two lengths; the report says which were folded).
    It costs H * max_length floats per node in the model file.
    """
    import onnx

    if isinstance(model, torch.export.ExportedProgram):
        if example_inputs is None:
            args, kwargs = model.example_inputs or ((), {})
            if kwargs:
                raise TypeError("fftconv-rt export: the program has keyword example inputs; only positional "
                                "ones are supported")
            example_inputs = tuple(args)
        model = model.module()
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)):
        raise TypeError(f"fftconv-rt export: example_inputs must be a tuple of the model's positional inputs, "
                        f"got {type(example_inputs).__name__}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"fftconv-rt export: model must be a torch.nn.Module, got {type(model).__name__}")
    example_inputs = tuple(example_inputs)
    for i, x in enumerate(example_inputs):
        if isinstance(x, torch.Tensor) and x.numel() == 0:
            raise ValueError(f"fftconv-rt export: example input {i} has shape {tuple(x.shape)}; the model is traced "
                             "on the examples, so every dimension must be at least 1 (2 or more to stay dynamic)")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"fftconv-rt export: max_length must be a sequence length >= 1, got {max_length!r}")
    settings = (Options(min_conv_taps=min_conv_taps, two_sided_op=_TWO_SIDED_OP), fold_filters, partial, freq_keep,
                max_length)
    with _inference_mode(model), torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")
        gm, report, traced = _rewrite(model, example_inputs, dynamic_shapes, dynamic_dims, settings)
        _check_rewrites(report, require_rewrite, strict)
        try:
            program = _to_onnx(gm, traced, opset_version, input_names, output_names, fold_filters, report)
        except ExportError as e:
            if dynamic_shapes is not None or not any(_dynamic_dims(gm.graph)) or not report.rewrites:
                raise
            # torch.onnx cannot convert an op at a dynamic length (a complex-valued filter generator
            # that is no prefix of one filter): at fixed lengths the filters fold to constants
            fixed = [dims & ({0} if dynamic_dims in ("batch+length", "all") and t is not None and t.dim() > 1
                             else set()) for t, dims in zip(_input_tensors(gm.graph), _dynamic_dims(gm.graph))]
            gm, report, _ = _rewrite(model, traced, _shapes_with(traced, fixed), dynamic_dims, settings)
            _check_rewrites(report, require_rewrite, strict)
            program = _to_onnx(gm, traced, opset_version, input_names, output_names, fold_filters, report)
            report.notes.append(f"exported at the example's sequence length only: {e} at a dynamic length")
    path = Path(path)
    program.save(str(path))
    model_proto = onnx.load(str(path), load_external_data=False)
    report.onnx_path = str(path)
    report.fftconv_nodes = sum(1 for n in model_proto.graph.node if n.domain == DOMAIN and n.op_type == OP_NAME)
    if tensorrt:
        from fftconv_rt.trt import stamp_for_tensorrt

        stamp_for_tensorrt(path)
    if report.fftconv_nodes != len(report.rewrites):
        raise RuntimeError(f"fftconv-rt export: {len(report.rewrites)} convolutions rewritten but the ONNX "
                           f"model has {report.fftconv_nodes} {OP_NAME} nodes")
    return report


def _check_rewrites(report: ExportReport, require_rewrite: bool, strict: bool) -> None:
    if require_rewrite and not report.rewrites:
        raise NoLongConvolutionError(
            "fftconv-rt export: no long convolution found in the model (expected the pattern "
            "rfft(u, n) * rfft(k, n) -> irfft(n) -> [..., :L], optionally + u * D).\n" + str(report))
    unrewritten = [f for f in report.left if not f.reason.startswith("not a convolution")]
    if strict and unrewritten:
        raise StrictError(f"fftconv-rt export: strict: {len(unrewritten)} FFT convolution use(s) not rewritten; "
                          f"first: {unrewritten[0].op} in {unrewritten[0].module or '<top>'}: {unrewritten[0].reason}",
                          detail=str(report))


def _to_onnx(gm: fx.GraphModule, example_inputs: tuple, opset_version, input_names, output_names,
             fold_filters: bool, report: ExportReport):
    """torch.onnx (dynamo) of the rewritten graph, its inputs dynamic exactly where the graph's
    are; a failure raises ExportError naming the op torch.onnx could not convert."""
    if opset_version is None:
        opset_version = 18 if report.left else 20
    try:
        with warnings.catch_warnings(), _quiet_torch_onnx(), _quiet_tracing():
            # ep.module() refuses eval() and is always "training"; the model itself is in inference mode.
            warnings.filterwarnings("ignore", message="Exporting a model while it is in training mode")
            return torch.onnx.export(gm, example_inputs, dynamo=True,
                                     dynamic_shapes=_shapes_with(example_inputs, _dynamic_dims(gm.graph)),
                                     custom_translation_table=custom_translation_table(),
                                     opset_version=opset_version, input_names=input_names,
                                     output_names=output_names, verbose=False, optimize=fold_filters)
    except Exception as e:  # torch.onnx raises its own ConversionError, or whatever a translation raised
        raise ExportError(f"torch.onnx cannot convert the rewritten model: {_conversion_reason(e)}",
                          detail="".join(traceback.format_exception(e))) from e


def _conversion_reason(exc: BaseException) -> str:
    """The one line of a torch.onnx failure that names the op (or the first line)."""
    text = "\n".join(str(e) for e in (exc, exc.__cause__) if e is not None)
    found = re.search(r"(No decompositions registered for[^\n]*|[^\n]*aten\.[a-z_0-9]+\.[a-zA-Z_]+[^\n]*)", text)
    line = found.group(1) if found else (text.strip().splitlines() or [type(exc).__name__])[0]
    return line.strip()[:240]
