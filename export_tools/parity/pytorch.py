"""The PyTorch side of a parity check: the user's module, run eagerly on the CPU (in eval mode; the module's
own mode is restored after each call)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def flatten_outputs(outputs: Any) -> list[torch.Tensor]:
    """A model's outputs as a flat list of tensors; ``TypeError`` for anything else (dicts, None)."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, (tuple, list)):
        return [t for o in outputs for t in flatten_outputs(o)]
    raise TypeError(f"model outputs must be tensors or (nested) tuples of tensors; got {type(outputs).__name__}")


class TorchRunner:
    """PyTorch eager on CPU. ``float64=True`` is the "truth": model and floating inputs in float64.

    ``dtype`` runs the module as given but casts floating inputs to ``dtype`` first (an fp16 export
    judged against the float32 model: ``dtype=torch.float32``). Not in the runtime table: it runs a
    module, not an ONNX file, and always in this process."""

    def __init__(
        self, module: torch.nn.Module, *, float64: bool = False, name: str = "", dtype: torch.dtype | None = None
    ) -> None:
        self.module, self.float64, self.dtype = module, float64, dtype
        self.name = name or ("torch-float64" if float64 else "torch")
        if float64:  # a float64 copy, made once; the caller's module is left alone
            self.module = copy.deepcopy(module).double()
            self.dtype = torch.float64

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(a)) for a in feeds]
        if self.dtype is not None:
            args = [a.to(self.dtype) if a.is_floating_point() else a for a in args]
        was_training = self.module.training
        try:
            with torch.no_grad():
                outputs = flatten_outputs(self.module.eval()(*args))
        finally:
            self.module.train(was_training)  # a training loop that validates with kpx stays in training mode
        return [o.detach().cpu().numpy() for o in outputs]

    def describe(self) -> dict[str, str]:
        return {"runtime": self.name, "torch": torch.__version__}
