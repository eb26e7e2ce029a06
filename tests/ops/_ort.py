"""Export a tiny module with ``export_tools.to_onnx`` and run it on ONNX Runtime CPU.

Exports cost about a second each, so tests build one :class:`OrtModel` per
module-scoped fixture (with dynamic dims) and feed it many inputs. A model that is
already exported (one trace finalized in both emit modes) loads with
:meth:`OrtModel.from_proto`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from export_tools import to_onnx
from tests.conftest import ort_session


class OrtModel:
    """``module`` exported (``emit="function"`` unless told) and loaded in an ORT CPU session.

    Calling it with torch tensors returns the outputs as a list of torch tensors.
    Inputs are handed over as they are (a non-contiguous tensor stays a strided
    numpy view), so the binding's own copy is exercised too.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        args: tuple,
        *,
        dynamic_shapes: Any = None,
        dtype: Any = None,
        emit: str = "function",
    ):
        self._load(to_onnx(module, args, dynamic_shapes=dynamic_shapes, emit=emit, dtype=dtype))

    @classmethod
    def from_proto(cls, proto) -> OrtModel:
        """An ORT CPU session for an exported ``onnx.ModelProto``."""
        model = cls.__new__(cls)
        model._load(proto)
        return model

    def _load(self, proto) -> None:
        self.proto = proto
        self.session = ort_session(proto)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        feeds = {name: np.asarray(t.detach().numpy()) for name, t in zip(self.input_names, inputs, strict=True)}
        return [torch.from_numpy(np.array(o)) for o in self.session.run(None, feeds)]
