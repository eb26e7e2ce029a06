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

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from export_tools.graph import feeds_to_float64, promote_to_float64
from export_tools.parity.compare import compare_output

#: ``(rtol, atol)`` by the runtime value's dtype. float32: a few roundings (unit roundoff 6e-8) plus
#: the accumulation error of sums over up to ~1e5 terms; float16: unit roundoff 4.9e-4, so about eight
#: roundings before a value is flagged. Integers and booleans must be exact.
LOCALIZE_TOLERANCES = {"float64": (1e-9, 1e-12), "float32": (1e-4, 1e-5), "float16": (4e-3, 1e-3)}


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


def first_divergence(
    model: bytes,
    feeds: Sequence[np.ndarray],
    runtime: str = "cpu",
    *,
    tolerances: dict[str, tuple[float, float]] | None = None,
    open_runner: Callable[[bytes], Any] | None = None,
) -> Divergence | None:
    """Runs the inlined ``model`` with every intermediate exposed on ``runtime`` (a name from the runtime table)
    and a float64 copy of it on the reference evaluator; returns the first diverging node, or ``None`` if every
    value agrees.

    ``tolerances`` overrides :data:`LOCALIZE_TOLERANCES` by dtype name; ``open_runner(model_bytes)`` opens the
    exposed graph on the runtime (default: ``make_runner(runtime, ...)`` in this process)."""
    import onnx
    import onnx.inliner

    from export_tools.runtimes import make_runner
    from export_tools.runtimes.reference import evaluator

    table = {**LOCALIZE_TOLERANCES, **(tolerances or {})}
    inlined = onnx.inliner.inline_local_functions(onnx.load_from_string(model))
    exposed = onnx.ModelProto()
    exposed.CopyFrom(inlined)
    known = {o.name for o in exposed.graph.output}
    values = [out for node in inlined.graph.node for out in node.output if out]
    exposed.graph.output.extend(onnx.helper.make_empty_tensor_value_info(v) for v in values if v not in known)
    runner = (open_runner or (lambda model: make_runner(runtime, model)))(exposed.SerializeToString())
    names = [o.name for o in exposed.graph.output]
    try:
        actual = dict(zip(names, runner.run(feeds), strict=True))
    finally:
        if hasattr(runner, "close"):
            runner.close()
    inputs = [i.name for i in inlined.graph.input]
    with np.errstate(all="ignore"):  # NaN and inf are values here, not accidents
        expected = evaluator(promote_to_float64(inlined)).run(
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
