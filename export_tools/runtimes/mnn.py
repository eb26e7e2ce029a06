"""MNN (Alibaba), the ``mnn`` extra: the ONNX file converted by MNN's own converter, run on its CPU backend.

The converter is MNN's C++ ``mnnconvert`` called as a function (``_tools.mnnconvert``) in a subprocess, offline:
never the ``mnnconvert`` script, which pip-installs a logging SDK with the global pip and sends usage logs
(``MNN/tools/utils/log.py``). MNN's converter prints "Converted Failed!" and still returns success for an op it
lacks: kpx reads what it printed and whether it wrote the file.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from export_tools.errors import RunnerUnavailableError
from export_tools.runtimes._converted import (
    ConversionFailedError,
    ShapeCache,
    ShapeKey,
    example_shapes,
    fit_output,
    last_line,
    output_dtypes,
    output_shapes,
    private_dir,
    quiet_stdout,
    refuse_local_functions,
    run_converter,
    static_copy,
)
from export_tools.runtimes.base import Runner, register_runner

INSTALL_HINT = 'pip install "kpx[mnn]"'
#: the converter, run as ``python -c`` in a subprocess: MNN's C++ converter only, no logging SDK
_CONVERT = "import sys, MNN, _tools; sys.exit(0 if _tools.mnnconvert(sys.argv[1:]) else 1)"


def mnn_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("MNN")


@register_runner
class MnnRunner(Runner):
    """MNN's CPU backend at ``precision="high"`` (float32), ``threads`` threads (default 1).

    Each input-shape signature gets its own conversion of a private static-shape copy (cached); the first at
    load, at the sizes kpx recorded. Outputs come back in the ONNX graph's order, by name, converted back to
    NCHW where MNN keeps its packed NC4HW4 layout. Function-mode files raise
    :class:`~export_tools.errors.LocalFunctionsUnsupportedError` (MNN reads no ONNX local functions:
    "Not Support: ONNX::DecodeHeatmaps"); an op MNN lacks is a :class:`ConversionFailedError` naming it.
    """

    kind = "mnn"
    install = INSTALL_HINT
    summary = "MNN CPU backend, high (fp32) precision: the file converted by MNN's converter (inline files)"

    def __init__(self, model: bytes, *, name: str = "", threads: int = 1, benchmark: bool = False) -> None:
        import onnx

        self.check_available()
        self.name = name or "mnn-cpu"
        self.threads = int(threads)
        self.version = mnn_version()
        self.proto = onnx.load_from_string(bytes(model))
        refuse_local_functions(self.proto, "MNN", self.version)
        self._inputs = [i.name for i in self.proto.graph.input]
        self._outputs = [o.name for o in self.proto.graph.output]
        self.conversions = 0
        self._cache = ShapeCache(self._load)
        shapes = example_shapes(self.proto)
        if shapes is not None:
            self._cache.shapes(shapes)

    @classmethod
    def check_available(cls) -> None:
        """Finds the package without importing it (importing MNN prints to stdout)."""
        import importlib.util

        if importlib.util.find_spec("MNN") is None:
            raise RunnerUnavailableError(f"MNN is not installed; fix: {INSTALL_HINT}")

    def _load(self, shapes: ShapeKey) -> tuple[Any, list, list]:
        with quiet_stdout():
            import MNN.nn as nn

        static = static_copy(self.proto, shapes)
        with private_dir("kpx-mnn-") as tmp:
            src, dst = Path(tmp) / "model.onnx", Path(tmp) / "model.mnn"
            src.write_bytes(static.SerializeToString())
            args = ["mnnconvert", "-f", "ONNX", "--modelFile", str(src), "--MNNModel", str(dst), "--bizCode", "kpx"]
            text = run_converter([sys.executable, "-c", _CONVERT, *args], self.name, f"MNN {self.version}", cwd=tmp)
            self.conversions += 1
            if "Converted Failed" in text or "Converted Success" not in text or not dst.is_file():
                detail = last_line(text, lambda ln: "Not Support" in ln) if "Not Support" in text else last_line(
                    text, lambda ln: "rror" in ln or "ailed" in ln)  # fmt: skip
                raise ConversionFailedError(self.name, "converter failed", f"MNN {self.version}", detail)
            config = {"backend": "CPU", "precision": "high", "numThread": self.threads}
            with quiet_stdout():
                runtime = nn.create_runtime_manager((config,))
                module = nn.load_module_from_file(str(dst), self._inputs, self._outputs, runtime_manager=runtime)
        return module, output_shapes(static), output_dtypes(static)

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        import MNN.expr as F

        empty = [i for i, f in enumerate(feeds) if 0 in np.shape(f)]
        if empty:  # measured: MNN 3.6.1 returns no output, or one whose read() fails, for a zero-size input
            names = ", ".join(self._inputs[i] for i in empty)
            raise RuntimeError(f"MNN {self.version} cannot run zero-size inputs ({names} has a dim of 0); skip the "
                               "call when a batch or keypoint count is 0")  # fmt: skip
        module, shapes, dtypes = self._cache.get(feeds)
        values = []
        for a in feeds:
            a = np.ascontiguousarray(a)
            if a.dtype == np.float64:
                a = a.astype(np.float32)  # MNN computes in float32
            values.append(F.const(a, list(a.shape), F.NCHW))
        outputs = module.forward(values)
        result = []
        for name, value, shape, dtype in zip(self._outputs, outputs, shapes, dtypes, strict=True):
            if value.data_format == F.NC4HW4:
                value = F.convert(value, F.NCHW)
            result.append(fit_output(name, np.array(value.read(), copy=True), shape, dtype, self.name))
        return result

    def describe(self) -> dict[str, str]:
        return {"runtime": self.name, "MNN": self.version, "precision": "high", "threads": str(self.threads)}
