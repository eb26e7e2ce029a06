"""``onnx.reference``: the ONNX project's own numpy implementation of every op (slow, but exact in float64).

kpx replaces the evaluator's kernels that cannot run at the sizes people deploy (through its ``new_ops``
hook): ``GatherElements`` uses ``numpy.choose``, limited to 64 choices, so every ``DecodeHeatmaps`` file
with maps of 8x8 or more failed. The replacement is ``numpy.take_along_axis``, the same gather by
definition (tests compare both where the original runs, and kpx files at 64x48 and 256x192 against
PyTorch in float64).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from export_tools.graph import feeds_to_float64, promote_to_float64
from export_tools.runtimes.base import Runner, register_runner


def reference_kernels() -> list[type]:
    """The ``onnx.reference`` kernels kpx replaces (pass as ``new_ops``)."""
    from onnx.reference.op_run import OpRun

    class GatherElements(OpRun):
        op_domain = ""

        def _run(self, data, indices, axis=None):
            return (np.take_along_axis(data, indices.astype(np.int64), axis=0 if axis is None else axis),)

    return [GatherElements]


def evaluator(proto: Any, **kwargs: Any):
    """An ``onnx.reference.ReferenceEvaluator`` with kpx's replacement kernels."""
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(proto, new_ops=reference_kernels(), **kwargs)


@register_runner
class ReferenceRunner(Runner):
    """``onnx.reference.ReferenceEvaluator`` on the model as written.

    ``float64=True`` evaluates an inlined float64 copy of the graph (the truth when no PyTorch model
    is at hand; see :func:`export_tools.graph.promote_to_float64`)."""

    kind = "reference"
    summary = "onnx.reference, the ONNX project's numpy evaluator (slow)"

    def __init__(self, model: bytes, *, name: str = "", float64: bool = False, benchmark: bool = False) -> None:
        import onnx
        import onnx.inliner

        self.float64 = float64
        self.name = name or ("onnx-ref-float64" if float64 else "onnx-reference")
        proto = onnx.load_from_string(model)
        if float64:
            proto = promote_to_float64(onnx.inliner.inline_local_functions(proto))
        self._inputs = [i.name for i in proto.graph.input]
        self._evaluator = evaluator(proto)

    @classmethod
    def check_available(cls) -> None:
        """onnx is a dependency of kpx: always available."""

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self.float64:
            feeds = feeds_to_float64(feeds)
        with np.errstate(all="ignore"):  # NaN and inf are values here (docs/spec.md's bad inputs), not accidents
            return list(self._evaluator.run(None, dict(zip(self._inputs, feeds, strict=True))))

    def describe(self) -> dict[str, str]:
        import onnx

        return {"runtime": self.name, "onnx": onnx.__version__}
