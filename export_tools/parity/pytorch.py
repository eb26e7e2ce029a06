"""The PyTorch side of a parity check: the user's module, run eagerly on the CPU (in eval mode; every submodule's
own mode is restored after each call), the module that corresponds to a file, and the decoder's inputs."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from export_tools.errors import UsageError, one_line
from export_tools.models import eval_mode


def flatten_outputs(outputs: Any) -> list[torch.Tensor]:
    """A model's outputs as a flat list of tensors: tuples and lists in order, a dict's (or ``ModelOutput``'s)
    tensor entries in key order (``None`` entries skipped, as torch.export does); ``TypeError`` for anything else."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, (tuple, list)):
        return [t for o in outputs for t in flatten_outputs(o)]
    if isinstance(outputs, Mapping):
        return [t for o in outputs.values() if o is not None for t in flatten_outputs(o)]
    raise TypeError(f"model outputs must be tensors, (nested) tuples or dicts of tensors; got {type(outputs).__name__}")


def _decoder_modules(module: torch.nn.Module) -> list[torch.nn.Module]:
    import custom_ops

    return [m for m in module.modules() if isinstance(m, (custom_ops.DecodeHeatmaps, custom_ops.DecodeSimCC))]


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

    def _args(self, feeds: Sequence[np.ndarray]) -> list[torch.Tensor]:
        args = [torch.from_numpy(np.ascontiguousarray(a)) for a in feeds]
        if self.dtype is not None:
            args = [a.to(self.dtype) if a.is_floating_point() else a for a in args]
        return args

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad(), eval_mode(self.module):  # a training loop that validates with kpx stays in training
            outputs = flatten_outputs(self.module(*self._args(feeds)))
        return [o.detach().cpu().numpy() for o in outputs]

    def decoder_call(
        self,
        feeds: Sequence[np.ndarray],
        *,
        inputs: Sequence[np.ndarray] | None = None,
        keypoints: np.ndarray | None = None,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] | str:
        """One run of the model, watching its one kpx decoder module (``DecodeHeatmaps``/``DecodeSimCC``): the
        decoder's inputs, the decoder's outputs and the model's outputs, or why they cannot be had. ``inputs``
        feeds the decoder those values instead (PyTorch's decoding of another runtime's decoder inputs);
        ``keypoints`` replaces the decoder's keypoints (to follow them through the model's mapping to pixels)."""
        decoders = _decoder_modules(self.module)
        if not decoders:
            return "the model has no custom_ops.DecodeHeatmaps/DecodeSimCC module"
        if len(decoders) > 1:
            return f"the model has {len(decoders)} decoder modules: which keypoints each made is not known"
        seen: list[tuple[list[np.ndarray], list[np.ndarray]]] = []

        def before(_module: torch.nn.Module, args: tuple) -> tuple | None:
            seen.append(([a.detach().cpu().numpy().copy() for a in args], []))
            if inputs is None:
                return None
            return tuple(torch.from_numpy(np.ascontiguousarray(r)).to(a.dtype) for r, a in zip(inputs, args))

        def after(_module: torch.nn.Module, _args: tuple, output: Any) -> Any:
            seen[-1][1].extend(o.detach().cpu().numpy().copy() for o in flatten_outputs(output))
            if keypoints is None:
                return None
            first = output[0]
            return (torch.from_numpy(np.ascontiguousarray(keypoints)).to(first.dtype).expand_as(first), *output[1:])

        handles = [decoders[0].register_forward_pre_hook(before), decoders[0].register_forward_hook(after)]
        try:
            outputs = self.run(feeds)
        finally:
            for handle in handles:
                handle.remove()
        if len(seen) != 1:
            return f"the decoder module ran {len(seen)} times in one call: which keypoints each made is not known"
        return seen[0][0], seen[0][1], outputs

    def describe(self) -> dict[str, str]:
        return {"runtime": self.name, "torch": torch.__version__}


def corresponding_module(module: torch.nn.Module, proto: Any, feeds: Sequence[np.ndarray]) -> torch.nn.Module:
    """The PyTorch module to judge the file ``proto`` against: ``module``, or, for a file kpx exported with a decoder
    (``kpx.pose``) and a ``module`` that is its network, the same :class:`~export_tools.decoding.PoseDecoder` around
    it. Outputs that still do not correspond to the file's (count, rank, last axis, on ``feeds``) are a
    :class:`UsageError` naming the fix, not a failed check."""
    from export_tools.decoding import PoseDecoder
    from export_tools.filemeta import POSE_KEY, read

    pose = read(proto, POSE_KEY)
    declared = [(o.name, _declared(o)) for o in proto.graph.output]
    tried: list[str] = []
    candidates = [module]
    if pose and not isinstance(module, PoseDecoder):
        try:
            candidates.append(PoseDecoder.from_settings(module, pose))
        except UsageError as exc:
            tried.append(f"the file's decoder around it: {exc}")
    for candidate in candidates:
        try:
            outputs = TorchRunner(candidate).run(feeds)
        except Exception as exc:
            tried.append(f"{type(candidate).__name__} fails on the file's inputs ({type(exc).__name__}: "
                         f"{one_line(exc)[:160]})")  # fmt: skip
            continue
        problem = _mismatch(outputs, declared)
        if problem is None:
            return candidate
        tried.append(f"{type(candidate).__name__}: {problem}")
    fix = ("give the network it was exported from (kpx rebuilds the decoder from the file's kpx.pose), or the model "
           "the file was exported from") if pose else "give the model the file was exported from"  # fmt: skip
    raise UsageError(f"the reference does not correspond to the file: {'; '.join(tried)}; {fix}")


def _declared(value: Any) -> list[int | None]:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def _mismatch(outputs: list[np.ndarray], declared: list[tuple[str, list[int | None]]]) -> str | None:
    """Why PyTorch's outputs cannot be the file's (count, rank, a fixed size of the last axis: what each row
    holds, e.g. ``(x, y)``), or ``None``. Other sizes are left to the verdict: a size baked into the file is a
    finding, not a usage error."""
    found = ", ".join("x".join(map(str, o.shape)) or "scalar" for o in outputs)
    wanted = ", ".join(f"{n}: {'x'.join('?' if d is None else str(d) for d in dims)}" for n, dims in declared)
    if len(outputs) != len(declared):
        return f"returns {len(outputs)} output(s) ({found}); the file has {len(declared)} ({wanted})"
    for out, (name, dims) in zip(outputs, declared):
        if dims and (out.ndim != len(dims) or (dims[-1] is not None and out.shape[-1] != dims[-1])):
            return f"returns {found}; the file's outputs are {wanted} ({name!r} differs)"
    return None
