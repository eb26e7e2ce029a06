"""``onnx.reference``: the ONNX project's own numpy implementation of every op (slow; for small inputs)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from export_tools.graph import feeds_to_float64, promote_to_float64
from export_tools.runtimes.base import Runner, register_runner


@register_runner
class ReferenceRunner(Runner):
    """``onnx.reference.ReferenceEvaluator`` on the model as written.

    ``float64=True`` evaluates an inlined float64 copy of the graph (the truth when no PyTorch model
    is at hand; see :func:`export_tools.graph.promote_to_float64`)."""

    kind = "reference"
    summary = "onnx.reference, the ONNX project's numpy evaluator (slow; small inputs)"

    def __init__(self, model: bytes, *, name: str = "", float64: bool = False, benchmark: bool = False) -> None:
        import onnx
        import onnx.inliner
        from onnx.reference import ReferenceEvaluator

        self.float64 = float64
        self.name = name or ("onnx-ref-float64" if float64 else "onnx-reference")
        proto = onnx.load_from_string(model)
        if float64:
            proto = promote_to_float64(onnx.inliner.inline_local_functions(proto))
        self._inputs = [i.name for i in proto.graph.input]
        self._evaluator = ReferenceEvaluator(proto)

    @classmethod
    def check_available(cls) -> None:
        """onnx is a dependency of kpx: always available."""

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self.float64:
            feeds = feeds_to_float64(feeds)
        return list(self._evaluator.run(None, dict(zip(self._inputs, feeds, strict=True))))

    def describe(self) -> dict[str, str]:
        import onnx

        return {"runtime": self.name, "onnx": onnx.__version__}
