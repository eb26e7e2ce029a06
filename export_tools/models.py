"""One-op models built from registry samples (tests, parity runs, trying kpx out)."""

from __future__ import annotations

from typing import Any

import torch

from custom_ops.registry import OpSpec, Sample


class OpModel(torch.nn.Module):
    """Calls ``spec.functional`` with the sample's tensors as model inputs.

    Tensor positional arguments of the sample become the model's inputs, in
    order; every other argument is fixed at construction.
    """

    def __init__(self, spec: OpSpec, sample: Sample) -> None:
        super().__init__()
        self.spec = spec
        self.tensor_slots = [i for i, a in enumerate(sample.args) if isinstance(a, torch.Tensor)]
        self.fixed = list(sample.args)
        self.kwargs = dict(sample.kwargs)

    def forward(self, *inputs: torch.Tensor) -> Any:
        args = list(self.fixed)
        for slot, value in zip(self.tensor_slots, inputs):
            args[slot] = value
        return self.spec.functional(*args, **self.kwargs)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return tuple(self.fixed[i] for i in self.tensor_slots)

    def input_names(self) -> list[str]:
        return [self.spec.inputs[i].name if i < len(self.spec.inputs) else f"arg{i}" for i in self.tensor_slots]

    def dynamic_shapes(self, sample: Sample) -> Any:
        """``dynamic_shapes`` for ``torch.onnx.export`` (varargs forward: one nested tuple)."""
        if sample.dynamic is None:
            return None
        dims = list(sample.dynamic) + [None] * (len(self.tensor_slots) - len(sample.dynamic))
        return (tuple(dims),)
