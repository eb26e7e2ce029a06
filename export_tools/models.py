"""One-op models built from registry samples (tests, parity runs, trying kpx out)."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from custom_ops.registry import OpSpec, Sample


class OpModel(torch.nn.Module):
    """Calls ``spec.functional`` with the sample's tensors as model inputs.

    Tensor arguments of the sample (positional first, then keyword) become the
    model's inputs, in that order; every other argument is fixed at construction.
    ``sample.dynamic`` gives the dynamic dims of each of these inputs, in the same order.
    """

    def __init__(self, spec: OpSpec, sample: Sample) -> None:
        super().__init__()
        self.spec = spec
        self.args = list(sample.args)
        self.kwargs = dict(sample.kwargs)
        self.slots: list[int | str] = [i for i, a in enumerate(self.args) if isinstance(a, torch.Tensor)]
        self.slots += [k for k, v in self.kwargs.items() if isinstance(v, torch.Tensor)]

    def forward(self, *inputs: torch.Tensor) -> Any:
        args, kwargs = list(self.args), dict(self.kwargs)
        for slot, value in zip(self.slots, inputs):
            if isinstance(slot, int):
                args[slot] = value
            else:
                kwargs[slot] = value
        return self.spec.functional(*args, **kwargs)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return tuple(self.args[s] if isinstance(s, int) else self.kwargs[s] for s in self.slots)

    def input_names(self) -> list[str]:
        """The functional's parameter names of the input tensors."""
        params = list(inspect.signature(self.spec.functional).parameters)
        return [s if isinstance(s, str) else params[s] for s in self.slots]

    def dynamic_shapes(self, sample: Sample) -> Any:
        """``dynamic_shapes`` for ``torch.onnx.export`` (varargs forward: one nested tuple)."""
        if sample.dynamic is None:
            return None
        dims = list(sample.dynamic) + [None] * (len(self.slots) - len(sample.dynamic))
        return (tuple(dims),)
