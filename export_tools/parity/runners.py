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


class ModelLoadError(ValueError):
    """ONNX Runtime CPU refused the model itself (the file, not the machine, is at fault)."""


def flatten_outputs(outputs: Any) -> list[torch.Tensor]:
    """A model's outputs as a flat list of tensors; ``TypeError`` for anything else (dicts, None)."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, (tuple, list)):
        return [t for o in outputs for t in flatten_outputs(o)]
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
            outputs = flatten_outputs(module.eval()(*args))
        return [o.detach().cpu().numpy() for o in outputs]

    def describe(self) -> dict[str, str]:
        return {"runtime": self.name, "torch": torch.__version__}


def require_runtime(kind: str) -> None:
    """Raises :class:`RunnerUnavailableError` with the fix unless runtime ``kind`` (``"cpu"``, ``"cuda"``,
    ``"ort-mobile"``, ``"openvino"``) can be used here. Cheap: no model is loaded."""
    if kind == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError:
            raise RunnerUnavailableError('openvino is not installed; fix: pip install "kpx[openvino]"') from None
        return
    try:
        import onnxruntime as ort
    except ImportError:
        raise RunnerUnavailableError(
            'onnxruntime is not installed; fix: pip install "kpx[cpu]" (or "kpx[gpu]" for CUDA, never both)'
        ) from None
    wanted = PROVIDERS.get(kind)
    if wanted is None:
        return  # ort-mobile runs on the CPU provider
    if hasattr(ort, "preload_dlls") and kind == "cuda":
        ort.preload_dlls()
    if wanted not in ort.get_available_providers():
        raise RunnerUnavailableError(
            f"{wanted} is not available in this onnxruntime ({ort.__version__}); fix: "
            "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"
        )


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
        require_runtime(self.provider)
        import onnxruntime as ort

        wanted = PROVIDERS[self.provider]
        options = ort.SessionOptions()
        options.log_severity_level = 4  # errors come back as exceptions; no coloured log lines
        for key, value in self.config.items():
            options.add_session_config_entry(key, value)
        if self.provider != "cpu":  # fail instead of silently placing nodes on the CPU
            options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        try:
            self.session = ort.InferenceSession(self.model, options, providers=[wanted])
        except Exception as exc:  # ORT raises its own exception types
            if self.provider == "cpu":
                raise ModelLoadError(f"onnxruntime cannot load this model: {exc}".splitlines()[0]) from exc
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
            from export_tools.parity.localize import feeds_to_float64, promote_to_float64

            proto = promote_to_float64(onnx.inliner.inline_local_functions(proto))
            feeds = feeds_to_float64(feeds)
        evaluator = ReferenceEvaluator(proto)
        names = [i.name for i in proto.graph.input]
        return list(evaluator.run(None, dict(zip(names, feeds, strict=True))))

    def describe(self) -> dict[str, str]:
        import onnx

        return {"runtime": self.name, "onnx": onnx.__version__}


OPENVINO_READS_LOCAL_FUNCTIONS = False
"""Whether OpenVINO's ONNX frontend reads ONNX model-local functions (``ModelProto.functions``).

Measured ``False`` with openvino 2026.4.1: ``Core.read_model`` of any model whose graph calls a local
function fails with "No conversion rule found for operations: <domain>.<name>", even for a one-``Relu``
body in any domain, so every ``emit="function"`` kpx export is unreadable there; ``emit="inline"`` exports
read and run. ``tests/test_edge_runtimes.py`` re-measures this and fails when it stops being true.
"""


class LocalFunctionsUnsupportedError(RunnerUnavailableError):
    """The runtime cannot read ONNX local functions (kpx ``emit="function"`` exports); re-export inline."""


@dataclass
class OpenVinoRunner:
    """OpenVINO (``openvino`` package, an optional extra) on ``device`` (default the CPU plugin).

    Compiled with ``INFERENCE_PRECISION_HINT=f32`` for every model, and the compiled model is checked
    to report f32: the CPU plugin's default is bf16 on CPUs with AVX512-BF16/AMX and f16 on ARM,
    which would silently run a float32 model (and the float32 math inside kpx bodies of a float16
    model) in lower precision. (On a CPU without them a requested f16/bf16 hint is ignored: the
    compiled model reports f32.)

    Float16 models, measured with openvino 2026.4.1 on an x86 AVX2 CPU: inputs and outputs stay
    float16, every op in between runs in float32 (runtime model: f16 ``Input``, f32 ``Eltwise``/
    ``Subgraph`` nodes, a conversion to f16 before the ``Output``; an fp16 ``Exp -> Log`` chain gives
    ``log(exp(12)) = 12``, no float16 overflow), and ``Cast`` pairs float32 -> float16 -> float32 are
    removed (``Cast(Cast(0.1, f16), f32)`` gives 0.1, not 0.0999756). kpx bodies compute in float32 and
    cast back once at their outputs, so outputs still carry the final rounding to float16; a body that
    rounds to half on purpose in between (``gaussian_heatmaps``' per-axis factors) comes out closer to
    the float32 reference on OpenVINO than on ORT.

    OpenVINO reads no ONNX local functions (:data:`OPENVINO_READS_LOCAL_FUNCTIONS`): a kpx
    ``emit="function"`` export raises :class:`LocalFunctionsUnsupportedError`, whose message says to
    re-export with ``emit="inline"``. Inputs are fed and outputs returned in the ONNX graph's order,
    matched by name.
    """

    model: bytes
    device: str = "CPU"
    name: str = field(default="")
    #: extra compile properties, e.g. ``{"INFERENCE_NUM_THREADS": 1}``; precision is always f32
    config: dict[str, Any] = field(default_factory=dict)
    compiled: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.name = self.name or f"openvino-{self.device.lower()}"
        require_runtime("openvino")
        import onnx
        import openvino as ov
        import openvino.properties.hint as hints

        core = ov.Core()
        if self.device not in core.available_devices:
            raise RunnerUnavailableError(
                f"OpenVINO device {self.device!r} is not available (devices: {core.available_devices}); "
                "fix: pass device='CPU'"
            )
        proto = onnx.load_from_string(self.model)
        self._inputs = [i.name for i in proto.graph.input]
        self._outputs = [o.name for o in proto.graph.output]
        try:
            read = core.read_model(self.model, b"")
        except Exception as exc:  # OpenVINO raises RuntimeError / OpConversionFailure
            functions = sorted({f"{f.domain}.{f.name}" for f in proto.functions})
            if any(f in str(exc) for f in functions):  # "No conversion rule found for operations: kpx.X"
                raise LocalFunctionsUnsupportedError(
                    f"OpenVINO {ov.__version__} cannot read ONNX local functions ({', '.join(functions)}); "
                    'fix: re-export with emit="inline" (CLI: --emit inline)'
                ) from exc
            summary = str(exc).split("Summary:")[-1].strip().splitlines()
            raise RunnerUnavailableError(
                f"OpenVINO could not read this model: {summary[0] if summary else exc}"
            ) from exc
        properties = {hints.inference_precision: ov.Type.f32, **self.config}
        try:
            self.compiled = core.compile_model(read, self.device, properties)
        except Exception as exc:
            raise RunnerUnavailableError(f"OpenVINO {self.device} could not compile this model: {exc}") from exc
        precision = self.compiled.get_property(hints.inference_precision())
        if precision != ov.Type.f32:
            raise RunnerUnavailableError(
                f"OpenVINO {self.device} compiled at inference precision {precision.get_type_name()}, not f32; "
                "fix: use a device that runs float32 (device='CPU')"
            )

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        inputs = {name: np.ascontiguousarray(a) for name, a in zip(self._inputs, feeds, strict=True)}
        results = self.compiled(inputs, share_inputs=False, share_outputs=False)
        return [np.array(results[self.compiled.output(name)]) for name in self._outputs]

    def describe(self) -> dict[str, str]:
        import openvino as ov
        import openvino.properties.hint as hints

        return {
            "runtime": self.name,
            "openvino": ov.__version__,
            "device": ov.Core().get_property(self.device, "FULL_DEVICE_NAME"),
            "inference_precision": self.compiled.get_property(hints.inference_precision()).get_type_name(),
        }


@dataclass
class OrtFormatRunner:
    """ONNX Runtime's mobile format: the model converted to ``.ort`` (:func:`export_tools.mobile.to_ort_format`).

    ``model`` is ONNX bytes (converted here, in a temporary directory) or the path of an ``.ort``
    file. The session loads the ORT format on the CPU provider with graph optimizations off: it runs
    exactly the graph the conversion saved, as a minimal (mobile) build of ONNX Runtime does.
    """

    model: Any  # bytes (ONNX) | str | os.PathLike (.ort)
    name: str = field(default="ort-mobile")
    session: Any = field(default=None, init=False, repr=False)
    ort_bytes: bytes = field(default=b"", init=False, repr=False)

    def __post_init__(self) -> None:
        import tempfile
        from pathlib import Path

        try:
            import onnxruntime as ort
        except ImportError:
            raise RunnerUnavailableError('onnxruntime is not installed; fix: pip install "kpx[cpu,mobile]"') from None
        from export_tools.mobile import to_ort_format

        if isinstance(self.model, (bytes, bytearray)):
            with tempfile.TemporaryDirectory(prefix="kpx-ort-") as tmp:
                try:
                    path = to_ort_format(bytes(self.model), tmp)
                except ImportError as exc:  # the message names the fix
                    raise RunnerUnavailableError(str(exc)) from exc
                except RuntimeError as exc:
                    raise RunnerUnavailableError(str(exc).splitlines()[0]) from exc
                self.ort_bytes = path.read_bytes()
        else:
            self.ort_bytes = Path(self.model).read_bytes()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.add_session_config_entry("session.load_model_format", "ORT")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            self.session = ort.InferenceSession(self.ort_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise RunnerUnavailableError(f"ONNX Runtime could not load the .ort model: {exc}".splitlines()[0]) from exc

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        names = [i.name for i in self.session.get_inputs()]
        return list(self.session.run(None, dict(zip(names, feeds, strict=True))))

    def describe(self) -> dict[str, str]:
        import onnxruntime as ort

        return {
            "runtime": self.name,
            "onnxruntime": ort.__version__,
            "format": "ort",
            "providers": "CPUExecutionProvider",
        }
