"""Lowering an exported graph from opset 18 to 15-17, before the kpx functions are attached.

torch.onnx (dynamo) writes opset 18 or newer only. Asked for less, torch 2.13 exports at 18 and
runs the onnx C API version converter, which has no 18 -> 17 adapter for ``Split`` or ``Pad`` and
none for ``Identity`` 16 -> 15; when it fails, torch keeps opset 18 with a warning. kpx therefore
exports at 18 and lowers the graph itself (the kpx nodes have no body yet, so nothing inside a
function needs converting; the bodies are authored at the target opset by the registry).

What changed between opset 15 and 18, and what this module does about it (ops not listed kept
their signature since opset 15 and are left alone):

- opset 18: ``Reduce{Max,Min,Mean,Prod,L1,L2,LogSum,LogSumExp,SumSquare}`` take ``axes`` as an
  input; lowered to the ``axes`` attribute (the input must be a constant). ``Split`` gained
  ``num_outputs``; lowered to equal splits or a constant ``split`` input (the axis must be static
  when the split is uneven). ``Pad`` gained an ``axes`` input; lowered to full-rank ``pads``.
  ``Resize`` gained ``antialias``, ``axes``, ``keep_aspect_ratio_policy``: dropped at their
  defaults. ``ScatterElements``/``ScatterND`` gained ``reduction`` max/min, ``LpPool``
  ``ceil_mode``: accepted when unused. ``Mish`` is new: written as ``x * tanh(softplus(x))``.
- opset 17: ``LayerNormalization`` is new: written out with ``ReduceMean`` (only its first output).
- opset 16: ``Identity``, ``If``, ``Loop``, ``Scan``, ``Where``, ``GreaterOrEqual``,
  ``LessOrEqual``, ``LeakyRelu``, ``PRelu`` only gained types (bfloat16, optionals): kept.
  ``ScatterElements``/``ScatterND`` gained ``reduction`` add/mul: accepted when ``none``.
  ``RoiAlign`` gained ``coordinate_transformation_mode``: accepted as ``output_half_pixel``.

Anything else newer than the target (``GridSample``, ``DFT``, ``Col2Im``, bitwise ops, ...) is an
:class:`OpsetConversionError` naming the op and the fix.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from custom_ops.registry import MIN_OPSET
from export_tools.errors import OpsetConversionError
from export_tools.graph import DEFAULT_DOMAINS, default_opset, iter_graphs, subgraphs

EXPORT_OPSET = 18
"""The opset torch.onnx writes; lower targets are reached by :func:`downgrade`."""

_REDUCE_18 = (
    "ReduceMax",
    "ReduceMin",
    "ReduceMean",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
)
#: ops whose newer versions only added types (bfloat16, optional): same attributes and inputs
_TYPES_ONLY = ("Identity", "If", "Loop", "Scan", "Where", "GreaterOrEqual", "LessOrEqual", "LeakyRelu", "PRelu")


def downgrade(model, target: int):
    """Returns ``model`` lowered from its opset (<= 18) to ``target`` (15-17); the input is not modified.

    The model must hold no local functions (attach kpx functions afterwards, authored at ``target``).

    Raises:
        OpsetConversionError: an op has no equivalent at ``target``; the message names it.
    """
    import onnx

    source = default_opset(model)
    if target >= source:
        return model
    if target < MIN_OPSET or source > EXPORT_OPSET:
        raise ValueError(f"downgrade lowers opset <= {EXPORT_OPSET} to >= {MIN_OPSET}; got {source} -> {target}")
    if len(model.functions):
        raise ValueError("downgrade works on graphs without local functions; attach functions after it")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _Lowering(out, source, target).run()
    for o in out.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = target
    return out


def lower_ir_version(model) -> None:
    """Sets ``model.ir_version`` to the lowest that its opsets and functions need (never raises it).

    Old runtimes refuse newer IR versions outright (ONNX Runtime before 1.16 reads IR <= 9, before
    1.15 IR <= 8), so a model meant for them should not claim IR 10 for nothing. IR 9 is kept when a
    local function declares attribute defaults (``FunctionProto.attribute_proto``, IR 9). Below IR
    10, the ``metadata_props`` that IR 10 added to nodes, graphs, values and functions (torch writes
    its debugging names there) are removed.
    """
    from onnx import helper

    default = [helper.make_opsetid("", o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")]
    needed = helper.find_min_ir_version_for(default)
    if any(len(f.attribute_proto) for f in model.functions):
        needed = max(needed, 9)
    if needed >= model.ir_version:
        return
    model.ir_version = needed
    if needed < 10:
        _strip_metadata(model.graph)
        for f in model.functions:
            del f.metadata_props[:]
            for v in f.value_info:
                del v.metadata_props[:]
            for n in f.node:
                del n.metadata_props[:]
                for sub in subgraphs(n):
                    _strip_metadata(sub)


def _strip_metadata(graph) -> None:
    for g in iter_graphs(graph):
        del g.metadata_props[:]
        for value in itertools.chain(g.input, g.output, g.value_info, g.initializer):
            del value.metadata_props[:]
        for node in g.node:
            del node.metadata_props[:]


class _Lowering:
    """One pass over the graph (and its subgraphs), node by node."""

    def __init__(self, model, source: int, target: int) -> None:
        import onnx

        self.source, self.target = source, target
        self.constants: dict[str, Any] = {}  # value name -> numpy array (initializers, Constant nodes)
        self.shapes: dict[str, list[int | None]] = {}  # value name -> dims (None: unknown), rank known
        self.used_names: set[str] = set()
        self.dropped: set[str] = set()  # constant inputs no longer read by the lowered node
        self.model = model
        try:  # shapes where torch wrote none (kpx nodes have no schema: their outputs stay as torch typed them)
            inferred = onnx.shape_inference.infer_shapes(model).graph
        except Exception:  # inference is a help here, not a requirement
            inferred = model.graph
        for graph in (model.graph, inferred):
            for g in iter_graphs(graph):
                self._collect(g)

    # --- facts about values ---------------------------------------------------------------------

    def _collect(self, graph) -> None:
        from onnx import numpy_helper

        for init in graph.initializer:
            self.constants[init.name] = numpy_helper.to_array(init)
            self.shapes.setdefault(init.name, list(init.dims))
            self.used_names.add(init.name)
        for value in itertools.chain(graph.input, graph.output, graph.value_info):
            self.used_names.add(value.name)
            t = value.type.tensor_type
            if value.type.HasField("tensor_type") and t.HasField("shape"):
                dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
                self.shapes.setdefault(value.name, dims)
        for node in graph.node:
            self.used_names.update(node.output)
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1:
                attr = node.attribute[0]
                if attr.name == "value":
                    self.constants[node.output[0]] = numpy_helper.to_array(attr.t)
                elif attr.name == "value_ints":
                    self.constants[node.output[0]] = list(attr.ints)

    def constant_ints(self, node, index: int, what: str) -> list[int]:
        name = node.input[index]
        if name not in self.constants:
            raise self.error(node, f"its {what} must be a constant at opset {self.target}; {name!r} is computed")
        self.dropped.add(name)
        return [int(v) for v in _flat(self.constants[name])]

    def rank(self, name: str, node) -> int:
        if name not in self.shapes:
            raise self.error(node, f"the rank of {name!r} is unknown")
        return len(self.shapes[name])

    def fresh(self, base: str) -> str:
        for i in itertools.count():
            name = f"{base}_opset{self.target}_{i}"
            if name not in self.used_names:
                self.used_names.add(name)
                return name
        raise AssertionError("unreachable")

    def error(self, node, why: str) -> OpsetConversionError:
        return OpsetConversionError(
            f"cannot lower {node.op_type} (node {node.name!r}) from opset {self.source} to {self.target}: {why}. "
            f"Export at opset {EXPORT_OPSET} or newer, or change the model so that it does not need this op."
        )

    # --- the pass ---------------------------------------------------------------------------------

    def run(self) -> None:
        self._graph(self.model.graph)
        self._remove_dead_constants()

    def _graph(self, graph) -> None:
        nodes = []
        for node in graph.node:
            for sub in subgraphs(node):  # inner graphs first: rebuilding this graph copies its nodes
                self._graph(sub)
            nodes.extend(self._node(node))
        del graph.node[:]
        graph.node.extend(nodes)

    def _node(self, node) -> list:
        import onnx.defs

        if node.domain not in DEFAULT_DOMAINS:
            return [node]  # kpx nodes (bodies come later, authored at the target) and other domains
        try:
            since = onnx.defs.get_schema(node.op_type, self.source, "").since_version
        except onnx.defs.SchemaError:
            raise self.error(node, "it is not a standard op") from None
        if since <= self.target or node.op_type in _TYPES_ONLY:
            return [node]
        handler = _HANDLERS.get(node.op_type)
        if handler is None:
            raise self.error(node, f"it was introduced or changed in opset {since} and has no earlier equivalent")
        return handler(self, node)

    def _remove_dead_constants(self) -> None:
        if not self.dropped:
            return
        read: set[str] = set()
        _reads(self.model.graph, read)
        dead = self.dropped - read
        _drop_constants(self.model.graph, dead)


# --- handlers: one per changed op; each returns the replacement nodes ---------------------------------


def _attrs(node, *drop: str) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name not in drop}


def _attr(node, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _make(node, op_type: str, inputs: list[str], outputs: list[str], suffix: str = "", **attrs: Any):
    from onnx import helper

    return helper.make_node(op_type, inputs, outputs, name=node.name + suffix, **attrs)


def _const_ints(lower: _Lowering, node, base: str, values: list[int]):
    from onnx import helper

    name = lower.fresh(base)
    tensor = helper.make_tensor(name, 7, [len(values)], values)  # INT64
    return name, _make(node, "Constant", [], [name], f"_{base}", value=tensor)


def _reduce(lower: _Lowering, node) -> list:
    """Reduce*-18 -> Reduce*-13/11: constant ``axes`` input -> ``axes`` attribute."""
    attrs = _attrs(node, "noop_with_empty_axes")
    has_axes = len(node.input) > 1 and node.input[1] != ""
    axes = lower.constant_ints(node, 1, "axes") if has_axes else []
    if not axes and _attr(node, "noop_with_empty_axes", 0):
        return [_make(node, "Identity", [node.input[0]], list(node.output))]
    if axes:
        attrs["axes"] = axes
    return [_make(node, node.op_type, [node.input[0]], list(node.output), **attrs)]


def _split(lower: _Lowering, node) -> list:
    """Split-18 -> Split-13: ``num_outputs`` -> equal split or a constant ``split`` input."""
    attrs = _attrs(node, "num_outputs")
    if len(node.input) > 1 and node.input[1] != "":
        return [_make(node, "Split", list(node.input), list(node.output), **attrs)]
    parts = len(node.output)
    dims = lower.shapes.get(node.input[0])
    axis = int(attrs.get("axis", 0))
    size = dims[axis] if dims is not None and -len(dims) <= axis < len(dims) else None
    if size is None:
        raise lower.error(node, "num_outputs on an axis whose size is not static")
    if size % parts == 0:  # Split-13 splits evenly by default
        return [_make(node, "Split", [node.input[0]], list(node.output), **attrs)]
    chunk = -(-size // parts)  # Split-18: ceil-sized chunks, the last one smaller
    sizes = [min(chunk, max(size - i * chunk, 0)) for i in range(parts)]
    name, const = _const_ints(lower, node, "split", sizes)
    return [const, _make(node, "Split", [node.input[0], name], list(node.output), **attrs)]


def _pad(lower: _Lowering, node) -> list:
    """Pad-18 -> Pad-13: an ``axes`` input folded into full-rank ``pads``."""
    attrs = _attrs(node)
    inputs = list(node.input[:3])
    if len(node.input) > 3 and node.input[3] != "":
        rank = lower.rank(node.input[0], node)
        axes = [a % rank for a in lower.constant_ints(node, 3, "axes")]
        pads = lower.constant_ints(node, 1, "pads")
        full = [0] * (2 * rank)
        for i, a in enumerate(axes):
            full[a], full[a + rank] = pads[i], pads[i + len(axes)]
        name, const = _const_ints(lower, node, "pads", full)
        inputs[1] = name
        return [const, _make(node, "Pad", _trim(inputs), list(node.output), **attrs)]
    return [_make(node, "Pad", _trim(inputs), list(node.output), **attrs)]


def _resize(lower: _Lowering, node) -> list:
    """Resize-18 -> Resize-13: the three new attributes, only at their defaults."""
    if _attr(node, "antialias", 0):
        raise lower.error(node, "antialias=1 is new in opset 18")
    if _attr(node, "axes") is not None:
        raise lower.error(node, "the axes attribute is new in opset 18")
    if _attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
        raise lower.error(node, "keep_aspect_ratio_policy is new in opset 18")
    attrs = _attrs(node, "antialias", "axes", "keep_aspect_ratio_policy")
    return [_make(node, "Resize", list(node.input), list(node.output), **attrs)]


def _scatter(lower: _Lowering, node) -> list:
    """Scatter{Elements,ND}-18 -> 16 (no max/min reduction) or 13 (no reduction at all)."""
    reduction = _attr(node, "reduction", "none")
    allowed = ("none", "add", "mul") if lower.target >= 16 else ("none",)
    if reduction not in allowed:
        raise lower.error(node, f"reduction={reduction!r} needs a newer opset")
    drop = () if lower.target >= 16 else ("reduction",)
    return [_make(node, node.op_type, list(node.input), list(node.output), **_attrs(node, *drop))]


def _lp_pool(lower: _Lowering, node) -> list:
    """LpPool-18 -> LpPool-11: ``ceil_mode`` only at its default."""
    if _attr(node, "ceil_mode", 0):
        raise lower.error(node, "ceil_mode=1 is new in opset 18")
    return [_make(node, "LpPool", list(node.input), list(node.output), **_attrs(node, "ceil_mode"))]


def _roi_align(lower: _Lowering, node) -> list:
    """RoiAlign-16 -> RoiAlign-10, whose only mode is ``output_half_pixel`` (16's default is ``half_pixel``)."""
    if _attr(node, "coordinate_transformation_mode", "half_pixel") != "output_half_pixel":
        raise lower.error(node, "coordinate_transformation_mode='half_pixel' (aligned=True) is new in opset 16")
    attrs = _attrs(node, "coordinate_transformation_mode")
    return [_make(node, "RoiAlign", list(node.input), list(node.output), **attrs)]


def _mish(lower: _Lowering, node) -> list:
    """Mish-18 -> ``x * tanh(softplus(x))``."""
    softplus, tanh = lower.fresh("mish_softplus"), lower.fresh("mish_tanh")
    return [
        _make(node, "Softplus", [node.input[0]], [softplus], "_softplus"),
        _make(node, "Tanh", [softplus], [tanh], "_tanh"),
        _make(node, "Mul", [node.input[0], tanh], list(node.output), "_mul"),
    ]


def _layer_norm(lower: _Lowering, node) -> list:
    """LayerNormalization-17 -> ``(x - mean) / sqrt(var + eps) * scale + bias`` over axes ``axis..-1``.

    ``stash_type=1`` (the default) computes mean and variance in float32 for half inputs, as the op does.
    """
    if any(name for name in node.output[1:]):
        raise lower.error(node, "its Mean / InvStdDev outputs are used")
    x = node.input[0]
    rank = lower.rank(x, node)
    axis = int(_attr(node, "axis", -1)) % rank
    axes = list(range(axis, rank))
    eps = float(_attr(node, "epsilon", 1e-5))
    stash = int(_attr(node, "stash_type", 1))
    n = lower.fresh
    out, nodes = node.output[0], []
    src = x
    if stash == 1:
        src = n("ln_x32")
        from onnx import TensorProto

        nodes.append(_make(node, "Cast", [x], [src], "_cast", to=TensorProto.FLOAT))
    mean, centred, square, var = n("ln_mean"), n("ln_centred"), n("ln_square"), n("ln_var")
    eps_name, var_eps, std, normed = n("ln_eps"), n("ln_var_eps"), n("ln_std"), n("ln_normed")
    from onnx import helper

    nodes += [
        _make(node, "ReduceMean", [src], [mean], "_mean", axes=axes, keepdims=1),
        _make(node, "Sub", [src, mean], [centred], "_sub"),
        _make(node, "Mul", [centred, centred], [square], "_square"),
        _make(node, "ReduceMean", [square], [var], "_var", axes=axes, keepdims=1),
        _make(node, "Constant", [], [eps_name], "_eps", value=helper.make_tensor(eps_name, 1, [], [eps])),
        _make(node, "CastLike", [eps_name, var], [eps_name + "_like"], "_eps_like"),
        _make(node, "Add", [var, eps_name + "_like"], [var_eps], "_add_eps"),
        _make(node, "Sqrt", [var_eps], [std], "_sqrt"),
        _make(node, "Div", [centred, std], [normed], "_div"),
    ]
    if stash == 1:
        cast_back = n("ln_normed_like")
        nodes.append(_make(node, "CastLike", [normed, x], [cast_back], "_cast_back"))
        normed = cast_back
    has_bias = len(node.input) > 2 and node.input[2] != ""
    scaled = n("ln_scaled") if has_bias else out
    nodes.append(_make(node, "Mul", [normed, node.input[1]], [scaled], "_scale"))
    if has_bias:
        nodes.append(_make(node, "Add", [scaled, node.input[2]], [out], "_bias"))
    return nodes


_HANDLERS: dict[str, Callable[[_Lowering, Any], list]] = {
    **dict.fromkeys(_REDUCE_18, _reduce),
    "Split": _split,
    "Pad": _pad,
    "Resize": _resize,
    "ScatterElements": _scatter,
    "ScatterND": _scatter,
    "LpPool": _lp_pool,
    "RoiAlign": _roi_align,
    "Mish": _mish,
    "LayerNormalization": _layer_norm,
}


# --- small helpers ----------------------------------------------------------------------------------


def _flat(value: Any) -> list:
    import numpy as np

    return np.asarray(value).reshape(-1).tolist()


def _trim(inputs: list[str]) -> list[str]:
    """Drops trailing empty (omitted optional) inputs."""
    while inputs and inputs[-1] == "":
        inputs.pop()
    return inputs


def _reads(graph, read: set[str]) -> None:
    for g in iter_graphs(graph):
        read.update(o.name for o in g.output)
        for node in g.node:
            read.update(node.input)


def _drop_constants(graph, dead: set[str]) -> None:
    for node in graph.node:  # inner graphs first: rebuilding this graph's node list copies its nodes
        for sub in subgraphs(node):
            _drop_constants(sub, dead)
    keep = [n for n in graph.node if not (n.op_type == "Constant" and n.output[0] in dead)]
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)
    inits = [i for i in graph.initializer if i.name not in dead]
    if len(inits) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(inits)
    values = [v for v in graph.value_info if v.name not in dead]
    if len(values) != len(graph.value_info):
        del graph.value_info[:]
        graph.value_info.extend(values)
