"""ONNX Runtime's mobile format: the model converted to ``.ort`` and run as a minimal build would."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from export_tools.errors import RunnerUnavailableError, one_line
from export_tools.runtimes.base import Runner, register_runner
from export_tools.runtimes.ort import NO_SPINNING, import_ort, ort_session, run_session


@register_runner
class OrtFormatRunner(Runner):
    """The model converted to ``.ort`` (:func:`export_tools.mobile.to_ort_format`), on ORT's CPU provider.

    ``model`` is ONNX bytes (converted here, in a temporary directory) or the path of an ``.ort``
    file. The session loads the ORT format with graph optimizations off: it runs exactly the graph the
    conversion saved, as a minimal (mobile) build of ONNX Runtime does. (The converter itself writes
    nothing outside its output directory; see docs/deployment.md for what ORT caches.)
    """

    kind = "ort-mobile"
    install = 'pip install "kpx[cpu,mobile]"'
    summary = "ONNX Runtime mobile: the file converted to .ort (needs flatbuffers), run on the CPU provider"

    def __init__(self, model: bytes | str | os.PathLike, *, name: str = "ort-mobile", benchmark: bool = False) -> None:
        import tempfile

        from export_tools.mobile import to_ort_format

        self.name = name
        self.check_available()
        if isinstance(model, (bytes, bytearray)):
            with tempfile.TemporaryDirectory(prefix="kpx-ort-") as tmp:
                try:
                    path = to_ort_format(bytes(model), tmp)
                except ImportError as exc:  # the message names the fix
                    raise RunnerUnavailableError(str(exc)) from exc
                except RuntimeError as exc:
                    raise RunnerUnavailableError(one_line(exc)) from exc
                self.ort_bytes = path.read_bytes()
        else:
            self.ort_bytes = Path(model).read_bytes()
        try:
            self.session = ort_session(self.ort_bytes, "cpu", optimization_level="disable", ort_format=True,
                                       config=NO_SPINNING if benchmark else None)  # fmt: skip
        except Exception as exc:
            raise RunnerUnavailableError(f"ONNX Runtime could not load the .ort model: {one_line(exc)}") from exc

    @classmethod
    def check_available(cls) -> None:
        import_ort()

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        return run_session(self.session, feeds)

    def describe(self) -> dict[str, str]:
        import onnxruntime as ort

        return {
            "runtime": self.name,
            "onnxruntime": ort.__version__,
            "format": "ort",
            "providers": "CPUExecutionProvider",
        }
