"""ONNX Runtime: the CPU and CUDA execution providers, and the one helper that builds ORT sessions.

Sessions log nothing (errors come back as exceptions). Where another provider than the CPU was
asked for, CPU fallback is disabled and the session's provider is asserted: a node silently placed on
the CPU would make a CUDA parity run meaningless.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from export_tools.errors import ModelLoadError, RunnerUnavailableError, one_line
from export_tools.runtimes.base import Runner, register_runner

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
"""ORT graph optimisation levels, lowest first (``all`` is ORT's default)."""

#: ORT worker threads spin after a call by default and steal the cores from whatever runs next
#: (measured here: PyTorch eager 10x slower in the calls after an ORT run); latency runs turn that off.
NO_SPINNING = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}
INSTALL_HINT = 'pip install "kpx[cpu]" (or "kpx[gpu]" for CUDA, never both)'


def import_ort():
    """``onnxruntime``, or :class:`RunnerUnavailableError` with the install command."""
    try:
        import onnxruntime
    except ImportError:
        raise RunnerUnavailableError(f"onnxruntime is not installed; fix: {INSTALL_HINT}") from None
    return onnxruntime


def ort_session(
    model: bytes | str,
    provider: str = "cpu",
    *,
    config: Mapping[str, str] | None = None,
    optimization_level: str | None = None,
    threads: int | None = None,
    ort_format: bool = False,
):
    """An ``onnxruntime.InferenceSession`` on exactly ``provider`` (``"cpu"`` or ``"cuda"``).

    Args:
        model: ONNX (or ``.ort`` with ``ort_format``) bytes, or a file path.
        config: extra session config entries (e.g. :data:`NO_SPINNING`).
        optimization_level: one of :data:`OPTIMIZATION_LEVELS` (default: ORT's, ``all``).
        threads: intra-op threads (default: ORT's, one per core).
        ort_format: load ONNX Runtime's mobile format.

    ORT's own exceptions pass through; callers decide what a load failure means.
    """
    ort = import_ort()
    options = ort.SessionOptions()
    options.log_severity_level = 4  # errors come back as exceptions; no coloured log lines
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    if optimization_level is not None:
        if optimization_level not in OPTIMIZATION_LEVELS:
            raise ValueError(f"optimization_level must be one of {OPTIMIZATION_LEVELS}; got {optimization_level!r}")
        level = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                 "all": "ORT_ENABLE_ALL"}[optimization_level]  # fmt: skip
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if threads is not None:
        options.intra_op_num_threads = threads
    if ort_format:
        options.add_session_config_entry("session.load_model_format", "ORT")
    if provider != "cpu":  # fail instead of silently placing nodes on the CPU
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    return ort.InferenceSession(model, options, providers=[PROVIDERS[provider]])


def run_session(session, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Runs ``session`` on ``feeds`` given in input order."""
    names = [i.name for i in session.get_inputs()]
    return list(session.run(None, dict(zip(names, feeds, strict=True))))


@register_runner
class OrtRunner(Runner):
    """ONNX Runtime with exactly the requested provider (``"cpu"`` or ``"cuda"``)."""

    kind = "cpu"
    install = 'pip install "kpx[cpu]" (or "kpx[gpu]" for CUDA, never both)'
    summary = "ONNX Runtime, CPU execution provider"
    provider = "cpu"

    def __init__(
        self,
        model: bytes,
        provider: str | None = None,
        *,
        name: str = "",
        config: Mapping[str, str] | None = None,
        optimization_level: str | None = None,
        benchmark: bool = False,
    ) -> None:
        self.provider = provider or self.provider
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {sorted(PROVIDERS)}; got {self.provider!r}")
        self.name = name or self.label({"optimization_level": optimization_level, "provider": self.provider})
        self.optimization_level = optimization_level
        get_ort_runner(self.provider).check_available()
        wanted = PROVIDERS[self.provider]
        config = {**(NO_SPINNING if benchmark else {}), **(config or {})}
        try:
            self.session = ort_session(model, self.provider, config=config, optimization_level=optimization_level)
        except Exception as exc:  # ORT raises its own exception types
            if self.provider == "cpu":
                raise ModelLoadError(f"onnxruntime cannot load this model: {one_line(exc)}") from exc
            raise RunnerUnavailableError(f"{wanted} could not run this model: {one_line(exc)}") from exc
        if self.session.get_providers()[0] != wanted:
            raise RunnerUnavailableError(
                f"ORT placed the session on {self.session.get_providers()}, not {wanted}; fix: check the CUDA "
                "libraries with `python -c 'import onnxruntime as o; o.preload_dlls(); print(o.get_device())'`"
            )

    @classmethod
    def check_available(cls) -> None:
        import_ort()

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        super().check_options(options)
        level = options.get("optimization_level")
        if level is not None and level not in OPTIMIZATION_LEVELS:
            raise ValueError(f"optimization_level must be one of {OPTIMIZATION_LEVELS}; got {level!r}")

    @classmethod
    def label(cls, options: dict[str, Any]) -> str:
        """``ort-cpu``, or ``ort-cpu[extended]`` at a lower optimisation level than ORT's default."""
        level = options.get("optimization_level")
        suffix = "" if level in (None, "all") else f"[{level}]"
        return options.get("name") or f"ort-{options.get('provider') or cls.provider}{suffix}"

    @classmethod
    def fallback_options(cls, options: dict[str, Any]) -> list[dict[str, Any]]:
        """The lower graph optimisation levels, one by one (ORT 1.32 segfaults loading some fp16 transformer
        exports at ``all`` and runs them at ``extended``)."""
        level = options.get("optimization_level") or "all"
        lower = OPTIMIZATION_LEVELS[: OPTIMIZATION_LEVELS.index(level)][::-1]
        return [{**options, "optimization_level": lvl} for lvl in lower]

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        return run_session(self.session, feeds)

    def describe(self) -> dict[str, str]:
        import onnxruntime as ort

        info = {
            "runtime": self.name,
            "onnxruntime": ort.__version__,
            "providers": ",".join(self.session.get_providers()),
        }
        if self.optimization_level:
            info["optimization_level"] = self.optimization_level
        return info


@register_runner
class OrtCudaRunner(OrtRunner):
    """ONNX Runtime on the CUDA execution provider (``onnxruntime-gpu``), CPU fallback disabled."""

    kind = "cuda"
    install = 'pip install "kpx[gpu]" (never with kpx[cpu])'
    summary = "ONNX Runtime, CUDA execution provider (onnxruntime-gpu)"
    provider = "cuda"

    @classmethod
    def check_available(cls) -> None:
        ort = import_ort()
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        if PROVIDERS["cuda"] not in ort.get_available_providers():
            raise RunnerUnavailableError(
                f"CUDAExecutionProvider is not available in this onnxruntime ({ort.__version__}); fix: "
                "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"
            )

    @classmethod
    def probe(cls) -> str:
        """Runs a one-node model on the CUDA EP with CPU fallback disabled: "works", "not listed" or the error."""
        from onnx import TensorProto, helper

        ort = import_ort()
        if hasattr(ort, "preload_dlls"):
            try:
                ort.preload_dlls()
            except Exception as exc:
                return f"preload_dlls failed: {one_line(exc)}"
        if PROVIDERS["cuda"] not in ort.get_available_providers():
            return "not listed"
        graph = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])], "probe",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
        try:
            session = ort_session(model.SerializeToString(), "cuda")
            session.run(None, {"x": np.ones(2, np.float32)})
        except Exception as exc:
            return one_line(exc)[:300]
        if session.get_providers()[0] != PROVIDERS["cuda"]:
            return f"session placed on {session.get_providers()}"
        return "works"


def get_ort_runner(provider: str) -> type[OrtRunner]:
    """The runner class of an ORT provider name."""
    return OrtCudaRunner if provider == "cuda" else OrtRunner
