"""Splits a projection by the channel groups its output is split into.

Hyena-style operators (Hyena, HyenaDNA, Monarch Mixer, StripedHyena) project the input once to
all the streams of the operator, run the short depthwise filter over all of them, and only then
split the channels into the gates and the value:

    z = linear(x).transpose(1, 2); z = conv1d(z, w, b, groups=C)[..., :L]; x1, x2, v = z.split(d, 1)

In ONNX that split is a copy of the whole tensor. Every op before it works channel by channel,
so each group can be computed on its own from the rows of the weights that make it: three
projections, transposes and short filters on d channels each, the same arithmetic and no
split. (The short filters then become three FFTConv nodes.)
"""

from __future__ import annotations

import operator
from typing import Optional

from torch import fx

from .graph import aten, node_arg, only_user, tensor_val

_SPLITS = {aten.chunk.default, aten.split.Tensor, aten.split_with_sizes.default}


def _sizes(split: fx.Node, channels: int) -> Optional[list]:
    """The channel counts of the groups of a split along dim 1 (None: another dim, or unknown)."""
    if node_arg(split, 2, "dim", 0) % 3 != 1:
        return None
    if split.target == aten.split_with_sizes.default:
        sizes = list(node_arg(split, 1, "split_sizes"))
    else:
        size = node_arg(split, 1, "split_size")
        if split.target == aten.chunk.default:  # torch.chunk: ceil(C / chunks) per group
            size = -(-channels // node_arg(split, 1, "chunks"))
        if not isinstance(size, int) or size < 1:
            return None
        sizes = [min(size, channels - start) for start in range(0, channels, size)]
    return sizes if all(isinstance(s, int) and s > 0 for s in sizes) and sum(sizes) == channels else None


def _chain(split: fx.Node) -> Optional[tuple]:
    """(linear, transpose, conv1d, cut, channels) ending at the split, each the only user of the
    one before; cut is the causal slice along the time axis (or None)."""
    node = split.args[0]
    cut = None
    if node.target == aten.slice.Tensor:
        if node_arg(node, 1, "dim", 0) not in (2, -1) or node_arg(node, 2, "start", None) not in (None, 0) \
                or node_arg(node, 4, "step", 1) != 1:
            return None
        cut, node = node, node.args[0]
    if node.target != aten.conv1d.default:
        return None
    conv = node
    transpose = conv.args[0]
    if not (isinstance(transpose, fx.Node) and transpose.target == aten.transpose.int
            and sorted(d % 3 for d in transpose.args[1:3]) == [1, 2]):
        return None
    linear = transpose.args[0]
    if not (isinstance(linear, fx.Node) and linear.target == aten.linear.default):
        return None
    for before, after in ((linear, transpose), (transpose, conv), (conv, cut or split), (cut, split)):
        if before is not None and only_user(before) is not after:
            return None
    weight, bias = linear.args[1], node_arg(linear, 2, "bias")
    conv_weight, conv_bias = conv.args[1], node_arg(conv, 2, "bias")
    channels = tensor_val(conv_weight).shape[0] if tensor_val(conv_weight) is not None else None
    if node_arg(conv, 6, "groups", 1) != channels or any(
            p is not None and (not isinstance(p, fx.Node) or p.op != "get_attr")
            for p in (weight, bias, conv_weight, conv_bias)):
        return None
    return linear, transpose, conv, cut, channels


def split_projections(gm: fx.GraphModule) -> int:
    """Rewrites every `linear -> transpose -> depthwise conv1d -> [cut] -> split` of the graph
    into one such chain per group (see the module's docstring). Returns how many splits went.
    The rewritten nodes carry no shape metadata: re-export the module before matching."""
    graph = gm.graph
    count = 0
    for split in [n for n in graph.nodes if n.op == "call_function" and n.target in _SPLITS]:
        chain = _chain(split)
        if chain is None:
            continue
        linear, transpose, conv, cut, channels = chain
        sizes = _sizes(split, channels)
        pieces = [u for u in split.users if u.target is operator.getitem]
        if sizes is None or len(pieces) != len(split.users):
            continue

        def rows(param: Optional[fx.Node], start: int, stop: int, piece: int) -> Optional[fx.Node]:
            if param is None:
                return None
            name = f"_split_{count}_{piece}_{param.target.replace('.', '_')}"
            gm.register_buffer(name, operator.attrgetter(param.target)(gm).detach()[start:stop].clone())
            with graph.inserting_before(split):
                return graph.get_attr(name)

        start = 0
        outputs = []
        for piece, size in enumerate(sizes):
            stop = start + size
            with graph.inserting_before(split):
                lin = graph.call_function(aten.linear.default, (linear.args[0], rows(linear.args[1], start, stop, piece),
                                                                rows(node_arg(linear, 2, "bias"), start, stop, piece)))
                tr = graph.call_function(aten.transpose.int, (lin, *transpose.args[1:]))
                out = new_conv = graph.call_function(aten.conv1d.default, (
                    tr, rows(conv.args[1], start, stop, piece), rows(node_arg(conv, 2, "bias"), start, stop, piece),
                    node_arg(conv, 3, "stride", [1]), node_arg(conv, 4, "padding", [0]),
                    node_arg(conv, 5, "dilation", [1]), size))
                if cut is not None:
                    out = graph.call_function(aten.slice.Tensor, (out, *cut.args[1:]))
            # where the nodes came from, for the report's module paths after the re-trace
            for made, source in ((lin, linear), (tr, transpose), (new_conv, conv), (out, cut or conv)):
                made.meta.update({k: source.meta[k] for k in ("nn_module_stack", "stack_trace") if k in source.meta})
            outputs.append(out)
            start = stop
        for getitem in pieces:
            getitem.replace_all_uses_with(outputs[getitem.args[1]])
        for node in (*pieces, split, cut, conv, transpose, linear):
            if node is not None:
                graph.erase_node(node)
        count += 1
    if count:
        graph.lint()
        gm.recompile()
    return count
