"""Record a packed call once as a graph of plain aten ops and replay it (docs/PACKED.md).

``vmap`` + ``functional_call`` re-derive the batched ops of the ordinary modules on every call,
which on a CPU (a small GAN's step is mostly per-op overhead) costs more than the ops. ``record``
traces the vmapped call once (``make_fx``) and tidies the graph with generic passes that keep the
values: bitwise, except that a fused Linear bias rounds as the solo ``F.linear`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.fx import GraphModule, Node
from torch.fx.experimental.proxy_tensor import make_fx

_aten = torch.ops.aten
_VIEWS = {_aten.view.default, _aten._unsafe_view.default, _aten.expand.default, _aten.transpose.int,
          _aten.permute.default, _aten.unsqueeze.default, _aten.squeeze.dim, _aten.squeeze.dims}  # fmt: skip


def record(fn: Callable[..., Any], args: Sequence[Any], state: Sequence[Tensor]) -> GraphModule:
    """``fn`` traced on ``args`` as a tidied aten graph; call it with arguments shaped like ``args``.

    Python control flow is fixed at the values seen now (e.g. which branch a cache takes), so
    record in a state that repeats. Tracing runs ``fn`` once: ``state`` (the tensors ``fn``
    writes in place) is put back afterwards, so recording leaves no trace but the graph.
    """
    saved = [t.clone() for t in state]
    try:
        gm = make_fx(fn)(*args)
    finally:
        with torch.no_grad():
            for t, old in zip(state, saved, strict=True):
                t.copy_(old)
    return _tidy(gm)


def _meta(n: Any) -> tuple | None:
    """(shape, stride, offset, dtype) of a node's value, or None for non-tensors."""
    v = n.meta.get("val") if isinstance(n, Node) else None
    return (tuple(v.shape), v.stride(), v.storage_offset(), v.dtype) if isinstance(v, Tensor) else None


def _writes(n: Node) -> bool:
    return n.op == "call_function" and getattr(getattr(n.target, "_schema", None), "is_mutable", False)


def _drop(n: Node, by: Any) -> None:
    n.replace_all_uses_with(by)
    n.graph.erase_node(n)


def _is(n: Any, op: Any) -> bool:
    return isinstance(n, Node) and n.op == "call_function" and n.target is op


def _no_op_view(n: Node) -> Node | None:
    """The closest view ancestor with ``n``'s exact layout (then ``n`` is a no-op), else None."""
    me, up = _meta(n), n.args[0]
    while me is not None and isinstance(up, Node):
        if _meta(up) == me:
            return up
        if up.op != "call_function" or up.target not in _VIEWS:
            return None
        up = up.args[0]
    return None


def _fuse_bias(g: Any, add: Node) -> None:
    """``add(bmm(x, w), b)`` -> ``baddbmm(b, x, w)``: the batched Linear vmap makes, bias fused as in
    ``F.linear`` (the same fusion for the grouped convolutions measured no faster, and is not done)."""
    for y, b in (add.args, add.args[::-1]):
        if _is(y, _aten.bmm.default) and len(y.users) == 1:
            (k, n, o), bias = _meta(y)[0], _meta(b)  # type: ignore[index]
            if bias is not None and bias[0] == (k, 1, o) and _meta(add)[0] == (k, n, o):  # type: ignore[index]
                with g.inserting_before(add):
                    fused = g.call_function(_aten.baddbmm.default, (b, *y.args))
                fused.meta = dict(add.meta)
                _drop(add, fused)
                g.erase_node(y)
                return


def _tidy(gm: GraphModule) -> GraphModule:
    g = gm.graph
    for n in list(g.nodes):
        if n.op != "call_function":
            continue
        # make_fx (below autograd) records detach() as alias, the packed step's only source of alias;
        # one from elsewhere would cut a gradient, which the float64 replay tests would show
        if n.target is _aten.alias.default:
            n.target = _aten.detach.default
        elif n.target in _VIEWS and not any(_writes(u) for u in n.users) and (up := _no_op_view(n)) is not None:
            _drop(n, up)
        elif n.target is _aten.mul.Scalar and n.args[1] == 1 and not any(_writes(u) for u in n.users):
            _drop(n, n.args[0])
        elif n.target is _aten.add.Tensor:
            _fuse_bias(g, n)
        elif n.target is _aten._to_copy.default and not any(isinstance(a, Node) for a in n.args):
            name = f"_constant{len(gm._buffers)}"  # a scalar made a tensor on every call: once
            gm.register_buffer(name, n.target(*n.args, **n.kwargs))
            with g.inserting_before(n):
                _drop(n, g.get_attr(name))
    # native_batch_norm writes its running statistics without declaring it in its schema
    g.eliminate_dead_code(lambda n: n.is_impure() or n.target is _aten.native_batch_norm.default)
    gm.recompile()
    return gm
