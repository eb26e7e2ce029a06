"""Module helpers: one-op models built from registry samples (tests, parity runs, trying kpx out), outputs picked
from a dict, and eval mode that puts every submodule back as it was."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence
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

    def kpx_metadata(self) -> dict[str, Any]:
        """What each input holds (``kpx.inputs``), so that checks of the file generate inputs that test the op
        (peaked maps for decoders, frames and boxes in the sample's format for the crop)."""
        kinds = _INPUT_KINDS.get(self.spec.name, {})
        names = self.input_names()
        inputs = []
        for name in names:
            kind = kinds.get(name)
            if kind is None:
                inputs.append(None)
                continue
            entry: dict[str, Any] = {"kind": kind}
            if kind == "boxes":
                default = inspect.signature(self.spec.functional).parameters["box_format"].default
                entry["format"] = self.kwargs.get("box_format", default)
            if kind in ("boxes", "batch_index") and "images" in names:
                entry["frames"] = names.index("images")
            if kind == "frames":
                entry["layout"] = "NHWC" if self.kwargs.get("channels_last") else "NCHW"
            inputs.append(entry)
        return {"inputs": inputs}

    def dynamic_shapes(self, sample: Sample) -> Any:
        """``dynamic_shapes`` for ``torch.onnx.export`` (varargs forward: one nested tuple)."""
        if sample.dynamic is None:
            return None
        dims = list(sample.dynamic) + [None] * (len(self.slots) - len(sample.dynamic))
        return (tuple(dims),)


#: what the inputs of the ops that need realistic values hold (see ``OpModel.kpx_metadata``)
_INPUT_KINDS = {
    "decode_heatmaps": {"heatmaps": "heatmaps"},
    "decode_simcc": {"simcc_x": "simcc", "simcc_y": "simcc"},
    "topdown_crop": {"images": "frames", "boxes": "boxes", "batch_index": "batch_index"},
    "heatmap_to_image": {"boxes": "boxes"},
}


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module`` in eval mode; on exit every submodule gets back its own mode (``module.train(was)`` would put an
    eval-mode network inside a training-mode wrapper into training mode: batch-norm statistics would change)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


class SelectOutputs(torch.nn.Module):
    """``net`` whose dict (or ``ModelOutput``) output is reduced to the entries ``keys``, returned as a tuple in that
    order (``kpx export --output-key heatmaps``); the file's outputs are named after the keys."""

    def __init__(self, net: torch.nn.Module, keys: Sequence[str]) -> None:
        super().__init__()
        if isinstance(keys, str) or not keys or not all(isinstance(k, str) and k for k in keys):
            raise ValueError(f"keys must be a list of output keys, e.g. ['heatmaps']; got {keys!r}")
        self.net, self.keys = net, list(keys)
        self.output_names = list(keys)

    def forward(self, *inputs: Any) -> tuple[torch.Tensor, ...]:
        return pick_outputs(self.net(*inputs), self.keys)


def pick_outputs(outputs: Any, keys: Sequence[str]) -> tuple[Any, ...]:
    """The entries ``keys`` of a dict output; ``ValueError`` naming the keys there are otherwise."""
    from collections.abc import Mapping

    if not isinstance(outputs, Mapping):
        raise ValueError(f"output keys {list(keys)} pick entries of a dict output; the model returns "
                         f"{type(outputs).__name__}: drop --output-key")  # fmt: skip
    missing = [k for k in keys if outputs.get(k) is None]
    if missing:
        present = [k for k, v in outputs.items() if v is not None]
        raise ValueError(f"the model's output has no entry {missing[0]!r}; its entries are {present}")
    return tuple(outputs[k] for k in keys)
