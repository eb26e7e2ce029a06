"""OpenVINO's CPU plugin (the optional ``openvino`` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from export_tools.errors import LocalFunctionsUnsupportedError, RunnerUnavailableError
from export_tools.runtimes.base import Runner, register_runner

OPENVINO_READS_LOCAL_FUNCTIONS = False
"""Whether OpenVINO's ONNX frontend reads ONNX model-local functions (``ModelProto.functions``).

Measured ``False`` with openvino 2026.4.1: ``Core.read_model`` of any model whose graph calls a local
function fails with "No conversion rule found for operations: <domain>.<name>", even for a one-``Relu``
body in any domain, so every ``emit="function"`` kpx export is unreadable there; ``emit="inline"`` exports
read and run. ``tests/test_edge_runtimes.py`` re-measures this and fails when it stops being true.
"""


@register_runner
class OpenVinoRunner(Runner):
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

    kind = "openvino"
    install = 'pip install "kpx[openvino]"'
    summary = "OpenVINO CPU plugin, f32 inference precision (emit='inline' files: it reads no ONNX functions)"

    def __init__(
        self,
        model: bytes,
        device: str = "CPU",
        *,
        name: str = "",
        config: dict[str, Any] | None = None,
        benchmark: bool = False,
    ) -> None:
        """``config``: extra compile properties, e.g. ``{"INFERENCE_NUM_THREADS": 1}``; precision is always f32."""
        self.model, self.device, self.config = model, device, dict(config or {})
        self.name = name or f"openvino-{self.device.lower()}"
        self.check_available()
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

    @classmethod
    def check_available(cls) -> None:
        try:
            import openvino  # noqa: F401
        except ImportError:
            raise RunnerUnavailableError('openvino is not installed; fix: pip install "kpx[openvino]"') from None

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
