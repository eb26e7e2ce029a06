"""LiteRT (TensorFlow Lite), through onnx2tf, in a separate environment: tensorflow cannot share kpx's.

onnx2tf pins older numpy/onnx/onnxruntime than kpx's and tensorflow-cpu is a 274 MB wheel (2.4 GB installed),
so LiteRT lives in its own virtual environment, made by one command::

    python -m export_tools.runtimes._litert_env --create-env [DIR]

(default ``$KPX_LITERT_ENV``, else ``~/.cache/kpx/litert-env``). The runner starts that environment's Python on
``_litert_server.py`` (no kpx import there) and talks to it over a pipe. Each input-shape signature gets one
onnx2tf conversion of a private static-shape copy in a temporary directory (onnx2tf rewrites its input in place
and, for NHWC image inputs, would download a calibration file: a local file of zeros stands in), offline
(proxies pointed at a closed port), inputs kept in their ONNX layout (``keep_ncw_or_nchw_or_ncdhw_input_names``).
The float32 ``.tflite`` runs on LiteRT's interpreter. LiteRT names outputs ``Identity_N`` and may transpose them
(``(B, K, 2)`` -> ``(B, 2, K)``): they are taken in ``N`` order and transposed back where the shape is an
unambiguous permutation of the ONNX output's.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
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
    offline_env,
    output_dtypes,
    output_shapes,
    refuse_local_functions,
    static_copy,
)
from export_tools.runtimes._litert_env import CREATE_COMMAND
from export_tools.runtimes.base import Runner, register_runner

SERVER = Path(__file__).with_name("_litert_server.py")


@register_runner
class LiteRtRunner(Runner):
    """The file converted by onnx2tf to a float32 ``.tflite`` and run on LiteRT's interpreter (separate env)."""

    kind = "litert"
    summary = "LiteRT (TFLite) via onnx2tf, fp32, in its own environment (python -m export_tools.runtimes._litert_env)"
    install = CREATE_COMMAND

    def __init__(self, model: bytes, *, name: str = "", threads: int = 1, benchmark: bool = False,
                 timeout: float = 600.0) -> None:  # fmt: skip
        import tempfile

        import onnx

        self.check_available()
        self.name = name or "litert-cpu"
        self.threads, self.timeout = int(threads), float(timeout)
        self.proto = onnx.load_from_string(bytes(model))
        self._tmp = tempfile.TemporaryDirectory(prefix="kpx-litert-")
        self._log = open(Path(self._tmp.name) / "server.log", "wb")  # noqa: SIM115  (closed in close())
        read, write = os.pipe()
        # the server runs from a copy in the private directory, without kpx's PYTHONPATH: the directory of this
        # file holds modules named like runtimes (litert.py, executorch.py) that would shadow the real ones
        from export_tools.runtimes._litert_env import env_python

        server = shutil.copy(SERVER, Path(self._tmp.name) / SERVER.name)
        env = offline_env()
        env.pop("PYTHONPATH", None)
        self._server = subprocess.Popen([str(env_python()), "-s", server, str(write)], pass_fds=(write,),
                                        stdin=subprocess.PIPE, stdout=self._log, stderr=self._log, env=env,
                                        cwd=self._tmp.name)  # fmt: skip
        os.close(write)
        self._replies = os.fdopen(read, "r")
        self.versions = self._request({"op": "versions"})["versions"]
        self.version = ", ".join(f"{k} {v}" for k, v in self.versions.items())
        refuse_local_functions(self.proto, "LiteRT (onnx2tf)", self.version)
        self._outputs = [o.name for o in self.proto.graph.output]
        self.conversions = 0
        self._count = 0
        self._cache = ShapeCache(self._convert)
        shapes = example_shapes(self.proto)
        if shapes is not None:
            self._cache.shapes(shapes)

    @classmethod
    def check_available(cls) -> None:
        """The environment exists and holds onnx2tf and ai-edge-litert (checked on disk: importing tensorflow takes
        seconds)."""
        from export_tools.runtimes._litert_env import CREATE_COMMAND, env_dir, missing

        directory = env_dir()
        fix = f"fix: {CREATE_COMMAND} (or set KPX_LITERT_ENV to an environment made that way)"
        lacks = missing(directory)
        if lacks == ["python"]:
            raise RunnerUnavailableError(f"no LiteRT environment at {directory}; {fix}")
        if lacks:
            raise RunnerUnavailableError(f"the LiteRT environment at {directory} lacks {', '.join(lacks)}; {fix}")

    def _request(self, message: dict) -> dict:
        if self._server.poll() is not None:
            raise RuntimeError(f"the LiteRT server exited with code {self._server.returncode}: {self._log_tail()}")
        self._server.stdin.write((json.dumps(message) + "\n").encode())
        self._server.stdin.flush()
        line = self._replies.readline()
        if not line:
            code = self._server.wait()
            raise RuntimeError(f"the LiteRT server died (exit code {code}): {self._log_tail()}")
        return json.loads(line)

    def _log_tail(self) -> str:
        from export_tools.runtimes._converted import last_line

        self._log.flush()
        return last_line((Path(self._tmp.name) / "server.log").read_text(errors="replace"))

    def _convert(self, shapes: ShapeKey) -> tuple[str, list, list]:
        static = static_copy(self.proto, shapes)
        self._count += 1
        folder = Path(self._tmp.name) / f"c{self._count}"
        folder.mkdir()
        src = folder / "model.onnx"  # private: onnx2tf rewrites it in place
        src.write_bytes(static.SerializeToString())
        reply = self._request(
            {
                "op": "convert",
                "onnx": str(src),
                "out": str(folder / "tflite"),
                "keep_nchw": [i.name for i, s in zip(static.graph.input, shapes) if 3 <= len(s) <= 5],
            }
        )  # fmt: skip  (onnx2tf keeps ranks 3-5 only)
        self.conversions += 1
        if not reply["ok"]:
            raise ConversionFailedError(self.name, "onnx2tf failed", self.version, reply["error"])
        return reply["tflite"], output_shapes(static), output_dtypes(static)

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        path, shapes, dtypes = self._cache.get(feeds)
        folder = Path(self._tmp.name)
        np.savez(folder / "in.npz", **{f"in{i}": np.ascontiguousarray(f) for i, f in enumerate(feeds)})
        reply = self._request({"op": "run", "tflite": path, "inputs": str(folder / "in.npz"),
                               "outputs": str(folder / "out.npz"), "threads": self.threads})  # fmt: skip
        if not reply["ok"]:
            raise RuntimeError(f"LiteRT failed to run the model: {reply['error']}")
        with np.load(folder / "out.npz") as data:
            arrays = [data[f"out{i}"] for i in range(len(reply["names"]))]
        if len(arrays) != len(self._outputs):
            raise RuntimeError(f"LiteRT returned {len(arrays)} outputs; the ONNX file has {len(self._outputs)}")
        return [fit_output(n, untranspose(a, s), s, d, self.name)
                for n, a, s, d in zip(self._outputs, arrays, shapes, dtypes)]  # fmt: skip

    def describe(self) -> dict[str, Any]:
        from export_tools.runtimes._litert_env import env_dir

        return {"runtime": self.name, **self.versions, "precision": "fp32", "environment": str(env_dir())}

    def close(self) -> None:
        if self._server.poll() is None:
            self._server.kill()
            self._server.wait()
        self._replies.close()
        self._log.close()
        self._tmp.cleanup()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown
            self.close()


def untranspose(array: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    """``array`` transposed to ``shape`` when its shape is a permutation of ``shape``: the transposition that moves
    the fewest axes, when only one does (``(B, 2, K)`` -> ``(B, K, 2)`` also for ``B == 2``); otherwise as it is."""
    import itertools

    if shape is None or array.shape == tuple(shape) or sorted(array.shape) != sorted(shape):
        return array
    fits = [p for p in itertools.permutations(range(array.ndim)) if tuple(array.shape[i] for i in p) == tuple(shape)]
    moved = [sum(i != j for i, j in enumerate(p)) for p in fits]
    best = [p for p, m in zip(fits, moved) if m == min(moved)]
    return array.transpose(best[0]) if len(best) == 1 else array
