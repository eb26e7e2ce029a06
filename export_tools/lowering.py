"""Target lowering: rewrite the few standard ops an edge runtime lacks into ops it has, computing the same values.

``lower_for_target(model, "mnn")`` returns a copy of ``model`` in which every node a target cannot take is
replaced by an equivalent subgraph, in the main graph, in subgraphs (``If``/``Loop`` bodies) and in ONNX
function bodies alike. The rewrites (measured on every kpx op, docs/deployment.md):

- ``IsNaN(x)`` -> ``Not(LessOrEqual(x, +inf))``: NaN compares false with everything, ``+inf`` and ``-inf``
  are ``<= +inf``, so the result is the same boolean for every float value (NaN, +-inf, +-0, subnormals).
  MNN 3.6 has no ``IsNaN`` ("These Op Not Support: ONNX::IsNaN", "Converted Failed!"), nor has ncnn.
- integer ``Mod(a, b)`` (``fmod=0``) -> ``Sub(a, Mul(Div(a, b), b))``: ONNX integer ``Div`` truncates, so
  this is ``a mod b`` wherever ``a >= 0`` and ``b > 0`` (for a negative operand the sign follows ``a``,
  not ``b``). kpx's bodies take ``Mod`` only of a flat index (``ArgMax`` or ``Range`` output, ``>= 0``) by a
  width (``> 0``). pnnx 20261020 aborts on an int64 ``Mod`` it cannot fold (``std::out_of_range``).
- ``Less(a, b)`` -> ``Greater(b, a)``: the same comparison (NaN: false both ways). MNN 3.6.1's float ``Less``
  is wrong when both operands are negative (measured: ``Less(-0.13, -1.27)`` gives true, as if it compared the
  floats' bit patterns as integers); its ``Greater`` is right.
- ``Round(x)`` -> half to even from ``Floor``: ``f = Floor(x)``, ``d = x - f`` (exact), ``f + 1`` where ``d > 0.5``,
  ``f + (f mod 2)`` where ``d == 0.5``, else ``f``; NaN and +-inf come back as they are (``d`` is NaN). The same
  values as ONNX's ``Round`` for every float; a zero may lose its sign (``Round(-0.25)``: ``+0.0``, ONNX ``-0.0``;
  ORT's own ``Where`` returns ``+0.0`` for a ``-0.0`` anyway). MNN 3.6.1's
  ``Round`` rounds halves away from zero (``Round(20.5) = 21``; ONNX: 20), which moved ``simcc_targets``'
  Gaussians by one bin (0.12 off).

Which rewrites a target gets is :data:`LOWERINGS`. The result is checked with
``onnx.checker.check_model(full_check=True)``; the model's ``kpx.lowering`` metadata records what was done.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from export_tools.graph import DEFAULT_DOMAINS, props, set_props, subgraphs

#: target -> the rewrites it needs (names of :data:`REWRITES`), each from a measurement (docs/deployment.md)
LOWERINGS: dict[str, tuple[str, ...]] = {
    "mnn": ("isnan", "less", "round"),  # MNN 3.6.1: no IsNaN; Less wrong for two negatives; Round half away
    "ncnn": ("isnan", "mod"),  # pnnx 20261020 aborts on int64 Mod; ncnn has no IsNaN layer either
    "litert": (),  # onnx2tf 1.28.8 converts every op of kpx's inline files: nothing to rewrite
}
#: rewrite name -> what it does, for messages and metadata
REWRITES = {
    "isnan": "IsNaN(x) -> Not(LessOrEqual(x, +inf))",
    "mod": "integer Mod(a, b) -> a - (a / b) * b (a >= 0, b > 0)",
    "less": "Less(a, b) -> Greater(b, a)",
    "round": "Round(x) -> half to even from Floor (f + 1 if x - f > 0.5, f + f mod 2 if == 0.5)",
}


def lower_for_target(model: Any, target: str) -> Any:
    """A copy of ``model`` (``onnx.ModelProto``) with the rewrites of :data:`LOWERINGS` ``[target]`` applied.

    Works on inline files and on files with ONNX local functions (their bodies are rewritten). A model
    that needs no rewrite comes back equal to ``model`` (a copy), with ``kpx.lowering`` recorded."""
    import onnx

    if target not in LOWERINGS:
        raise ValueError(f"target must be one of {', '.join(LOWERINGS)}; got {target!r}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return apply_rewrites(out, LOWERINGS[target], label=target)


def needed_rewrites(model: Any, target: str) -> dict[str, int]:
    """``{rewrite: number of nodes}`` that ``target`` needs and ``model`` holds (main graph, subgraphs, bodies)."""
    if target not in LOWERINGS:
        raise ValueError(f"target must be one of {', '.join(LOWERINGS)}; got {target!r}")
    counts: dict[str, int] = {}
    for node in _all_nodes(model):
        for name in LOWERINGS[target]:
            if _MATCHES[name](node):
                counts[name] = counts.get(name, 0) + 1
    return counts


def apply_rewrites(model: Any, rewrites: tuple[str, ...], *, label: str = "") -> Any:
    """Applies ``rewrites`` (names of :data:`REWRITES`) to ``model`` in place and returns it."""
    import onnx

    unknown = sorted(set(rewrites) - set(REWRITES))
    if unknown:
        raise ValueError(f"rewrites {unknown} are not known; choose from {sorted(REWRITES)}")
    types = _value_types(model)
    names = _Names(model)
    done: dict[str, int] = {}
    for graph in _graphs(model.graph):
        _rewrite_nodes(graph.node, rewrites, types, names, done)
    for function in model.functions:
        _rewrite_nodes(function.node, rewrites, {}, names, done)
        for node in function.node:
            for sub in subgraphs(node):
                for graph in _graphs(sub):
                    _rewrite_nodes(graph.node, rewrites, {}, names, done)
    record = {"target": label, "rewrites": {REWRITES[k]: v for k, v in sorted(done.items())}}
    set_props(model, {"kpx.lowering": _json(record)})
    onnx.checker.check_model(model, full_check=True)
    return model


# --- matching and rewriting -------------------------------------------------------------------------------------


def _is_default(node) -> bool:
    return node.domain in DEFAULT_DOMAINS


def _match_isnan(node) -> bool:
    return _is_default(node) and node.op_type == "IsNaN"


def _match_mod(node) -> bool:
    """``Mod`` with ``fmod=0``: integer operands (ONNX requires ``fmod=1`` for floats)."""
    if not (_is_default(node) and node.op_type == "Mod"):
        return False
    return not any(a.name == "fmod" and a.i == 1 for a in node.attribute)


def _match_less(node) -> bool:
    return _is_default(node) and node.op_type == "Less"


def _match_round(node) -> bool:
    return _is_default(node) and node.op_type == "Round"


_MATCHES: dict[str, Callable[[Any], bool]] = {"isnan": _match_isnan, "mod": _match_mod, "less": _match_less,
                                               "round": _match_round}  # fmt: skip


class _Names:
    """Fresh value and node names that collide with nothing in the model."""

    def __init__(self, model) -> None:
        self.used = set()
        for node in _all_nodes(model):
            self.used.update([*node.input, *node.output, node.name])
        for graph in _graphs(model.graph):
            self.used.update(v.name for v in [*graph.input, *graph.output, *graph.initializer])
        self.count = 0

    def __call__(self, stem: str) -> str:
        while True:
            self.count += 1
            name = f"{stem}_kpxlow{self.count}"
            if name not in self.used:
                self.used.add(name)
                return name


def _rewrite_nodes(nodes, rewrites: tuple[str, ...], types: dict[str, int], names: _Names, done: dict) -> None:
    """Replaces, in the repeated field ``nodes``, each node a rewrite matches by its equivalent nodes."""
    new = []
    for node in nodes:
        for rewrite in rewrites:
            if _MATCHES[rewrite](node):
                replacement = _BUILDERS[rewrite](node, types, names)
                for r in replacement:
                    r.metadata_props.extend(node.metadata_props)  # keeps kpx.op / torch origin tags
                new.extend(replacement)
                done[rewrite] = done.get(rewrite, 0) + 1
                break
        else:
            new.append(node)
    del nodes[:]
    nodes.extend(new)


def _isnan_nodes(node, types: dict[str, int], names: _Names) -> list:
    """``Not(LessOrEqual(x, +inf))``: +inf typed as ``x`` (or ``CastLike`` to ``x`` where its type is unknown)."""
    from onnx import TensorProto, helper

    (x,), (y,) = node.input, node.output
    stem = node.name or "isnan"
    inf, le = names(f"{stem}_inf"), names(f"{stem}_le")
    elem = types.get(x)
    out = []
    if elem in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16):
        out.append(helper.make_node("Constant", [], [inf], name=names(stem),
                                    value=helper.make_tensor(inf, elem, [], [math.inf])))  # fmt: skip
    else:  # inside a function body: the type is the caller's
        inf32 = names(f"{stem}_inf32")
        out += [
            helper.make_node("Constant", [], [inf32], name=names(stem),
                             value=helper.make_tensor(inf32, TensorProto.FLOAT, [], [math.inf])),
            helper.make_node("CastLike", [inf32, x], [inf], name=names(stem)),
        ]  # fmt: skip
    out += [
        helper.make_node("LessOrEqual", [x, inf], [le], name=names(stem)),
        helper.make_node("Not", [le], [y], name=node.name or names(stem)),
    ]
    return out


def _mod_nodes(node, types: dict[str, int], names: _Names) -> list:
    """``a - (a / b) * b`` with ONNX's truncating integer ``Div``."""
    from onnx import helper

    (a, b), (y,) = node.input, node.output
    stem = node.name or "mod"
    q, p = names(f"{stem}_div"), names(f"{stem}_mul")
    return [
        helper.make_node("Div", [a, b], [q], name=names(stem)),
        helper.make_node("Mul", [q, b], [p], name=names(stem)),
        helper.make_node("Sub", [a, p], [y], name=node.name or names(stem)),
    ]


def _less_nodes(node, types: dict[str, int], names: _Names) -> list:
    """``Greater(b, a)``."""
    from onnx import helper

    (a, b), (y,) = node.input, node.output
    return [helper.make_node("Greater", [b, a], [y], name=node.name or names("less"))]


def _round_nodes(node, types: dict[str, int], names: _Names) -> list:
    """Half to even from ``Floor``: ``Where(d > 0.5, f + 1, Where(d == 0.5, f + (f - 2 Floor(f / 2)), f))``."""
    from onnx import TensorProto, helper

    (x,), (y,) = node.input, node.output
    stem = node.name or "round"
    v = {k: names(f"{stem}_{k}") for k in ("half", "one", "two", "f", "d", "up", "tie", "f2", "ff2", "e2", "e",
                                            "fe", "fup", "inner")}  # fmt: skip
    elem = types.get(x)
    out = []
    for key, value in (("half", 0.5), ("one", 1.0), ("two", 2.0)):
        if elem in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16):
            out.append(helper.make_node("Constant", [], [v[key]], name=names(stem),
                                        value=helper.make_tensor(v[key], elem, [], [value])))  # fmt: skip
        else:  # inside a function body: the type is the caller's
            raw = names(f"{stem}_{key}32")
            out += [helper.make_node("Constant", [], [raw], name=names(stem),
                                     value=helper.make_tensor(raw, TensorProto.FLOAT, [], [value])),
                    helper.make_node("CastLike", [raw, x], [v[key]], name=names(stem))]  # fmt: skip
    n = lambda op, ins, outs: helper.make_node(op, ins, outs, name=names(stem))  # noqa: E731
    out += [
        n("Floor", [x], [v["f"]]),
        n("Sub", [x, v["f"]], [v["d"]]),  # exact: the fraction in [0, 1), NaN for NaN and +-inf
        n("Greater", [v["d"], v["half"]], [v["up"]]),
        n("Equal", [v["d"], v["half"]], [v["tie"]]),
        n("Div", [v["f"], v["two"]], [v["f2"]]),
        n("Floor", [v["f2"]], [v["ff2"]]),
        n("Mul", [v["ff2"], v["two"]], [v["e2"]]),
        n("Sub", [v["f"], v["e2"]], [v["e"]]),  # f mod 2: 0 or 1
        n("Add", [v["f"], v["e"]], [v["fe"]]),
        n("Add", [v["f"], v["one"]], [v["fup"]]),
        n("Where", [v["tie"], v["fe"], v["f"]], [v["inner"]]),
        helper.make_node("Where", [v["up"], v["fup"], v["inner"]], [y], name=node.name or names(stem)),
    ]
    return out


_BUILDERS = {"isnan": _isnan_nodes, "mod": _mod_nodes, "less": _less_nodes, "round": _round_nodes}


# --- walking ----------------------------------------------------------------------------------------------------


def _graphs(graph) -> Iterator[Any]:
    yield graph
    for node in graph.node:
        for sub in subgraphs(node):
            yield from _graphs(sub)


def _all_nodes(model) -> Iterator[Any]:
    for graph in _graphs(model.graph):
        yield from graph.node
    for function in model.functions:
        for node in function.node:
            yield node
            for sub in subgraphs(node):
                for graph in _graphs(sub):
                    yield from graph.node


def _value_types(model) -> dict[str, int]:
    """Element types of the main graph's values (shape inference where it works)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference helps; a rewrite without it falls back to CastLike
        inferred = model
    types = {}
    for graph in _graphs(inferred.graph):
        for v in [*graph.input, *graph.output, *graph.value_info]:
            if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type:
                types[v.name] = v.type.tensor_type.elem_type
        for init in graph.initializer:
            types[init.name] = init.data_type
    return types


def _json(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True)


def lowering_record(model: Any) -> dict[str, Any] | None:
    """What :func:`lower_for_target` did to ``model`` (its ``kpx.lowering`` metadata), or ``None``."""
    import json

    text = props(model).get("kpx.lowering")
    return json.loads(text) if text else None
