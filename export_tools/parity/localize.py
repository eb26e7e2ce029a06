"""Localisation: the first node whose output departs from a float64 evaluation of the same graph.

The model's functions are inlined and every intermediate value is exposed as a graph output. The
runtime (ORT) runs that graph as exported; ``onnx.reference.ReferenceEvaluator`` (an independent numpy
implementation of every ONNX op) runs a float64 copy of it: float inputs, initializers, constants and
``Cast`` targets promoted to float64, integer and boolean values untouched. Values are compared node by
node in graph order, with a tolerance chosen by the runtime value's dtype; the first node with an output
outside tolerance, or with NaN/Inf at other places, is named with its op type and error.

The float64 evaluation is the "truth": a graph that is correct but loses precision in float32 or float16
(cancellation, an overflowing intermediate) is localised to the node where the loss first shows, not
only graphs where the runtime disagrees with another float32 implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from export_tools.parity.compare import compare_output

#: ``(rtol, atol)`` by the runtime value's dtype. float32: a few roundings (unit roundoff 6e-8) plus
#: the accumulation error of sums over up to ~1e5 terms; float16: unit roundoff 4.9e-4, so about eight
#: roundings before a value is flagged. Integers and booleans must be exact.
LOCALIZE_TOLERANCES = {"float64": (1e-9, 1e-12), "float32": (1e-4, 1e-5), "float16": (4e-3, 1e-3)}

_FLOAT_TYPES = (1, 10, 16)  # FLOAT, FLOAT16, BFLOAT16


@dataclass
class Divergence:
    """The first node whose output departs from the float64 reference evaluation."""

    index: int
    node: str
    op_type: str
    output: str
    max_abs: float
    max_rel: float
    nan_pattern_equal: bool
    inf_pattern_equal: bool
    dtype: str = "float32"  # the runtime value's dtype; the reference is float64

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        pattern = "" if self.nan_pattern_equal and self.inf_pattern_equal else ", NaN/Inf at other places"
        return (f"first diverging node #{self.index} {self.node!r} ({self.op_type}) output {self.output!r} "
                f"({self.dtype} vs float64 reference): max abs {self.max_abs:.3g}, "
                f"max rel {self.max_rel:.3g}{pattern}")  # fmt: skip


def promote_to_float64(model):
    """A copy of an (inlined) ``ModelProto`` that computes every float value in float64.

    Graph inputs and outputs, initializers, ``Constant``/``ConstantOfShape`` values and ``Cast`` targets of
    float16/bfloat16/float32 become float64 (subgraphs of ``If``/``Loop``/``Scan`` included); value infos
    are dropped so that shapes and types are inferred again. Raises ``ValueError`` if the graph still holds
    local functions (inline them first)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if model.functions:
        raise ValueError("promote_to_float64 needs an inlined model; call onnx.inliner.inline_local_functions first.")
    out = onnx.ModelProto()
    out.CopyFrom(model)

    def tensor64(t):
        if t.data_type not in _FLOAT_TYPES:
            return t
        return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name)

    def graph64(g):
        for vi in list(g.input) + list(g.output):
            if vi.type.tensor_type.elem_type in _FLOAT_TYPES:
                vi.type.tensor_type.elem_type = TensorProto.DOUBLE
        del g.value_info[:]
        for i, t in enumerate(g.initializer):
            g.initializer[i].CopyFrom(tensor64(t))
        for node in g.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    graph64(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        graph64(sub)
                elif attr.type == onnx.AttributeProto.TENSOR and node.op_type in ("Constant", "ConstantOfShape"):
                    attr.t.CopyFrom(tensor64(attr.t))
                elif node.op_type == "Cast" and attr.name == "to" and attr.i in _FLOAT_TYPES:
                    attr.i = TensorProto.DOUBLE
            if node.op_type == "Constant":  # value_float(s) would make float32 tensors
                for attr in list(node.attribute):
                    if attr.name in ("value_float", "value_floats"):
                        values = np.asarray(attr.f if attr.name == "value_float" else list(attr.floats), np.float64)
                        node.attribute.remove(attr)
                        node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(values)))

    graph64(out.graph)
    return out


def feeds_to_float64(feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Float inputs as float64 (for a :func:`promote_to_float64` graph); others unchanged."""
    return [np.asarray(f).astype(np.float64) if np.asarray(f).dtype.kind == "f" else np.asarray(f) for f in feeds]


def first_divergence(
    model: bytes,
    feeds: Sequence[np.ndarray],
    provider: str = "cpu",
    *,
    tolerances: dict[str, tuple[float, float]] | None = None,
) -> Divergence | None:
    """Runs the inlined ``model`` with every intermediate exposed on ORT (``provider``) and a float64 copy
    of it on the reference evaluator; returns the first diverging node, or ``None`` if every value agrees.

    ``tolerances`` overrides :data:`LOCALIZE_TOLERANCES` by dtype name."""
    import onnx
    import onnx.inliner
    from onnx.reference import ReferenceEvaluator

    from export_tools.parity.runners import OrtRunner

    table = {**LOCALIZE_TOLERANCES, **(tolerances or {})}
    inlined = onnx.inliner.inline_local_functions(onnx.load_from_string(model))
    exposed = onnx.ModelProto()
    exposed.CopyFrom(inlined)
    known = {o.name for o in exposed.graph.output}
    values = [out for node in inlined.graph.node for out in node.output if out]
    exposed.graph.output.extend(onnx.helper.make_empty_tensor_value_info(v) for v in values if v not in known)
    runner = OrtRunner(exposed.SerializeToString(), provider)
    names = [o.name for o in runner.session.get_outputs()]
    actual = dict(zip(names, runner.run(feeds), strict=True))
    inputs = [i.name for i in inlined.graph.input]
    expected = ReferenceEvaluator(promote_to_float64(inlined)).run(
        None, dict(zip(inputs, feeds_to_float64(feeds), strict=True)), intermediate=True
    )
    for index, node in enumerate(inlined.graph.node):
        for out in (o for o in node.output if o and o in expected and o in actual):
            e, a = np.asarray(expected[out]), np.asarray(actual[out])
            if e.dtype.kind not in "fiub":  # sequences, strings: not compared
                continue
            rtol, atol = table.get(str(a.dtype), (0.0, 0.0))  # integers and booleans: exact
            stats = compare_output(out, e, a, rtol, atol)
            if not stats.passed:
                return Divergence(index, node.name, node.op_type, out, stats.max_abs, stats.max_rel,
                                  stats.nan_pattern_equal, stats.inf_pattern_equal, str(a.dtype))  # fmt: skip
    return None
