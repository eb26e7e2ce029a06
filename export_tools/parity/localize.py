"""Localisation: the first node whose output departs from onnx.reference.

The model's functions are inlined, every intermediate value is exposed as a
graph output, and the runtime's values are compared node by node, in graph
order, with ``onnx.reference.ReferenceEvaluator`` run on the same inputs (an
independent, numpy implementation of every ONNX op at the graph's own
precision). The first node with an output outside tolerance, or with NaN/Inf at
other places, is named with its op type and error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from export_tools.parity.compare import compare_output


@dataclass
class Divergence:
    """The first node whose output departs from the reference evaluator."""

    index: int
    node: str
    op_type: str
    output: str
    max_abs: float
    max_rel: float
    nan_pattern_equal: bool
    inf_pattern_equal: bool

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        pattern = "" if self.nan_pattern_equal and self.inf_pattern_equal else ", NaN/Inf at other places"
        return (f"first diverging node #{self.index} {self.node!r} ({self.op_type}) output {self.output!r}: "
                f"max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}{pattern}")  # fmt: skip


def first_divergence(
    model: bytes, feeds: Sequence[np.ndarray], provider: str = "cpu", *, rtol: float = 1e-4, atol: float = 1e-5
) -> Divergence | None:
    """Runs the inlined ``model`` with every intermediate exposed on ORT (``provider``) and on the
    reference evaluator; returns the first diverging node, or ``None`` if every value agrees."""
    import onnx
    import onnx.inliner
    from onnx.reference import ReferenceEvaluator

    from export_tools.parity.runners import OrtRunner

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
    expected = ReferenceEvaluator(inlined).run(None, dict(zip(inputs, feeds, strict=True)), intermediate=True)
    for index, node in enumerate(inlined.graph.node):
        for out in (o for o in node.output if o and o in expected and o in actual):
            e, a = np.asarray(expected[out]), np.asarray(actual[out])
            if e.dtype.kind not in "fiub":  # sequences, strings: not compared
                continue
            stats = compare_output(out, e, a, rtol, atol)
            if not stats.passed:
                return Divergence(index, node.name, node.op_type, out, stats.max_abs, stats.max_rel,
                                  stats.nan_pattern_equal, stats.inf_pattern_equal)  # fmt: skip
    return None
