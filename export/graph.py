"""Helpers over torch.export FX graphs: symbolic sizes, casts, users."""

from __future__ import annotations

from typing import Any, Optional

import sympy
import torch
from torch import fx

aten = torch.ops.aten

# Ops that only change the dtype (or nothing): the matcher looks through them.
CAST_TARGETS = {aten.to.dtype, aten._to_copy.default, aten.to.dtype_layout, aten.type_as.default}
# Pure checks that torch.export leaves in the graph; they never carry data.
ASSERT_TARGETS = {aten._assert_tensor_metadata.default}


def meta_val(node: Any):
    return node.meta.get("val") if isinstance(node, fx.Node) else node


def expr(value: Any) -> Optional[sympy.Expr]:
    """A sympy expression for a number, a sympy expression, a SymInt/SymFloat or a node producing one; else None."""
    value = meta_val(value)
    if isinstance(value, sympy.Basic):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return sympy.Integer(value)
    if isinstance(value, float):
        return sympy.nsimplify(value, rational=True)
    if isinstance(value, (torch.SymInt, torch.SymFloat)):
        return value.node.expr
    return None


def node_arg(node: fx.Node, index: int, name: str, default=None):
    """Argument `index` (keyword `name`) of a call node."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def is_last_dim(node: fx.Node, dim) -> bool:
    t = tensor_val(node)
    return t is not None and dim in (-1, t.dim() - 1)


def is_scalar(value: Any) -> bool:
    return expr(value) is not None


def tensor_val(node: Any) -> Optional[torch.Tensor]:
    v = meta_val(node)
    return v if isinstance(v, torch.Tensor) else None


def shape_exprs(node: Any) -> Optional[list]:
    t = tensor_val(node)
    return None if t is None else [expr(d) for d in t.shape]


def same_size(a: Any, b: Any) -> bool:
    """True when two sizes are provably equal."""
    ea, eb = expr(a), expr(b)
    return ea is not None and eb is not None and sympy.simplify(ea - eb) == 0


def shape_env(node: Any):
    """The ShapeEnv behind a node's symbolic sizes (None for static shapes)."""
    t = tensor_val(node)
    if t is None:
        return None
    for d in t.shape:
        if isinstance(d, torch.SymInt):
            return d.node.shape_env
    return None


def provably_nonnegative(e: sympy.Expr, env) -> bool:
    """e >= 0 for every value the export allows (its dims' ranges)."""
    e = sympy.simplify(e)
    if e.is_number:
        return bool(e >= 0)
    if e.is_nonnegative:
        return True
    if env is not None:
        try:
            return bool(env.bound_sympy(e).lower >= 0)
        except Exception:  # bound_sympy refuses some expressions: then it is not provable
            return False
    return False


def strip_casts(node: Any) -> Any:
    """The node before any chain of dtype casts."""
    while isinstance(node, fx.Node) and node.op == "call_function" and node.target in CAST_TARGETS:
        node = node.args[0]
    return node


def real_users(node: fx.Node) -> list:
    """Users of a node, ignoring the metadata assertions torch.export inserts."""
    return [u for u in node.users if u.target not in ASSERT_TARGETS]


def only_user(node: fx.Node) -> Optional[fx.Node]:
    users = real_users(node)
    return users[0] if len(users) == 1 else None


def module_path(node: fx.Node) -> str:
    """Dotted path of the module whose forward created the node ("" for the top)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, _ = list(stack.values())[-1]
    return path.replace("L['self'].", "").replace("L__self__.", "")
