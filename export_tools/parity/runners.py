"""Runners: one small interface over PyTorch eager, ONNX Runtime (CPU, CUDA) and onnx.reference.

A runner that was asked for and cannot run raises :class:`RunnerUnavailableError`
with a one-line fix; there is no silent skip or fallback. ORT sessions are
created with CPU fallback disabled where another provider was asked for, and
their providers are asserted.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class RunnerUnavailableError(RuntimeError):
    """A requested runtime cannot run here; the message says how to fix it."""


def _flatten(outputs: Any) -> list[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, (tuple, list)):
        return [t for o in outputs for t in _flatten(o)]
    raise TypeError(f"model outputs must be tensors or (nested) tuples of tensors; got {type(outputs).__name__}")


@dataclass
class TorchRunner:
    """PyTorch eager on CPU. ``float64=True`` is the "truth": model and floating inputs in float64.

    ``dtype`` runs the module as given but casts floating inputs to ``dtype`` first (an fp16 export
    judged against the float32 model: ``dtype=torch.float32``)."""

    module: torch.nn.Module
    float64: bool = False
    name: str = field(default="")
    dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        self.name = self.name or ("torch-float64" if self.float64 else "torch")
        if self.float64:  # a float64 copy, made once; the caller's module is left alone
            self.module = copy.deepcopy(self.module).double()
            self.dtype = torch.float64

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        module = self.module
        args = [torch.from_numpy(np.ascontiguousarray(a)) for a in feeds]
        if self.dtype is not None:
            args = [a.to(self.dtype) if a.is_floating_point() else a for a in args]
        with torch.no_grad():
            outputs = _flatten(module.eval()(*args))
        return [o.detach().cpu().numpy() for o in outputs]

    def describe(self) -> dict[str, str]:
        return {"runtime": self.name, "torch": torch.__version__}


@dataclass
class OrtRunner:
    """ONNX Runtime with exactly the requested provider (``"cpu"`` or ``"cuda"``)."""

    model: bytes
    provider: str = "cpu"
    name: str = field(default="")
    #: extra session config entries, e.g. ``{"session.intra_op.allow_spinning": "0"}`` for benchmarks
    config: dict[str, str] = field(default_factory=dict)
    session: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {sorted(PROVIDERS)}; got {self.provider!r}")
        self.name = self.name or f"ort-{self.provider}"
        try:
            import onnxruntime as ort
        except ImportError:
            raise RunnerUnavailableError(
                'onnxruntime is not installed; fix: pip install "kpx[cpu]" (or "kpx[gpu]" for CUDA, never both)'
            ) from None
        wanted = PROVIDERS[self.provider]
        if hasattr(ort, "preload_dlls") and self.provider == "cuda":
            ort.preload_dlls()
        if wanted not in ort.get_available_providers():
            raise RunnerUnavailableError(
                f"{wanted} is not available in this onnxruntime ({ort.__version__}); fix: "
                "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"
            )
        options = ort.SessionOptions()
        options.log_severity_level = 3
        for key, value in self.config.items():
            options.add_session_config_entry(key, value)
        if self.provider != "cpu":  # fail instead of silently placing nodes on the CPU
            options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        try:
            self.session = ort.InferenceSession(self.model, options, providers=[wanted])
        except Exception as exc:  # ORT raises its own exception types
            raise RunnerUnavailableError(f"{wanted} could not run this model: {exc}".splitlines()[0]) from exc
        if self.session.get_providers()[0] != wanted:
            raise RunnerUnavailableError(
                f"ORT placed the session on {self.session.get_providers()}, not {wanted}; fix: check the CUDA "
                "libraries with `python -c 'import onnxruntime as o; o.preload_dlls(); print(o.get_device())'`"
            )

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        names = [i.name for i in self.session.get_inputs()]
        return list(self.session.run(None, dict(zip(names, feeds, strict=True))))

    def describe(self) -> dict[str, str]:
        import onnxruntime as ort

        providers = ",".join(self.session.get_providers())
        return {"runtime": self.name, "onnxruntime": ort.__version__, "providers": providers}


@dataclass
class ReferenceRunner:
    """``onnx.reference.ReferenceEvaluator``: slow, pure numpy; for small inputs.

    ``float64=True`` evaluates an inlined float64 copy of the graph (the truth when no PyTorch model
    is at hand; see :func:`export_tools.parity.localize.promote_to_float64`)."""

    model: bytes
    name: str = ""
    float64: bool = False

    def __post_init__(self) -> None:
        self.name = self.name or ("onnx-ref-float64" if self.float64 else "onnx-reference")

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        import onnx
        import onnx.inliner
        from onnx.reference import ReferenceEvaluator

        proto = onnx.load_from_string(self.model)
        if self.float64:
            from export_tools.parity.localize import promote_to_float64

            proto = promote_to_float64(onnx.inliner.inline_local_functions(proto))
            feeds = [np.asarray(f).astype(np.float64) if np.asarray(f).dtype.kind == "f" else f for f in feeds]
        evaluator = ReferenceEvaluator(proto)
        names = [i.name for i in proto.graph.input]
        return list(evaluator.run(None, dict(zip(names, feeds, strict=True))))

    def describe(self) -> dict[str, str]:
        import onnx

        return {"runtime": self.name, "onnx": onnx.__version__}
