"""One runtime's part of a parity run: open it (isolated by default), run each input set, survive its failures.

A lane turns what a runtime does wrong into results: a crash, a hang or an exhausted memory limit while
loading or running is recorded (:class:`~export_tools.runtimes.isolation.RunFailedError`) and the lane
goes on with the next input set in a fresh worker. When the runtime *crashed* and its runner class
offers safer options (``Runner.fallback_options``: ONNX Runtime's lower graph optimisation levels), the
lane retries with them and reports both: the crash at the first options, and the run at the ones that
worked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from export_tools.errors import KpxError, RunFailedError, one_line
from export_tools.runtimes import Runner, get_runner, make_runner
from export_tools.runtimes.isolation import IsolatedRunner


def open_runner(kind: str, model: bytes, options: Mapping[str, Any], isolation: Mapping[str, Any] | None) -> Runner:
    """Runtime ``kind`` on ``model``: in a worker process with ``isolation`` (``timeout``, ``memory_limit_mb``),
    in this process with ``None``."""
    get_runner(kind).check_available()  # a missing runtime is an environment error, before any worker starts
    if isolation is None:
        return make_runner(kind, model, **options)
    return IsolatedRunner(kind, model, **isolation, **options)


class Lane:
    """Runtime ``kind`` over the input sets of one parity run; failures go to ``record``.

    A runtime whose runner is built from the PyTorch model (``Runner.source == "pytorch"``: ExecuTorch) gets
    ``module`` instead of the ONNX file: per input shape, its class converts the module at those inputs
    (``from_pytorch``, in this process) and the program runs in the worker like any other; a conversion that fails
    is a failed case (``phase`` "convert")."""

    def __init__(
        self,
        kind: str,
        model: bytes,
        options: Mapping[str, Any],
        isolation: Mapping[str, Any] | None,
        record: Callable[[str, str, RunFailedError], None],
        module: Any = None,
    ) -> None:
        self.kind, self.model, self.isolation, self.record = kind, model, isolation, record
        self.module, self.programs = module, {}
        self.from_pytorch = get_runner(kind).source == "pytorch"
        self.attempts = [dict(options), *get_runner(kind).fallback_options(options)]
        self.attempt = 0
        self.runner: Runner | None = None
        self.unloadable = False
        self.name = kind
        self.description: dict[str, str] | None = None

    @property
    def options(self) -> dict[str, Any]:
        return self.attempts[self.attempt]

    def _open(self) -> Runner | None:
        """The runner for the current options, moving on to safer ones while it crashes at load; ``None``
        once loading has failed for good (recorded once: the remaining sets are not tried again)."""
        while self.runner is None and not self.unloadable:
            try:
                self.runner = open_runner(self.kind, self.model, self.options, self.isolation)
            except RunFailedError as failure:
                self.record("(load)", failure.runtime, failure)
                self.unloadable = not (failure.crashed and self._next())
            else:
                self.name, self.description = self.runner.name, self.runner.describe()
        return self.runner

    def _next(self) -> bool:
        if self.attempt + 1 < len(self.attempts):
            self.attempt += 1
            return True
        return False

    def run(
        self, feeds: Sequence[np.ndarray], set_name: str, torch_feeds: Sequence[np.ndarray] | None = None
    ) -> list[np.ndarray] | None:
        """The outputs for one input set, or ``None`` when the runtime failed on it (recorded). A runtime built from
        the PyTorch model runs on ``torch_feeds`` (the module's own dtypes)."""
        if self.from_pytorch:
            feeds = list(torch_feeds if torch_feeds is not None else feeds)
            if not self._program(feeds, set_name):
                return None
        while (runner := self._open()) is not None:
            try:
                return runner.run(feeds)
            except RunFailedError as failure:
                self.record(set_name, runner.name, failure)
                if failure.crashed or failure.what.startswith("timed out"):
                    self.runner = None  # its worker was killed: the next set starts a fresh one
                    if failure.crashed and self._next():
                        continue  # this set again, with safer options
                return None  # a runtime that raised keeps its model for the next set
            except KpxError:
                raise
            except Exception as exc:  # in-process runtimes raise their own types
                self.record(set_name, runner.name, RunFailedError(runner.name, "run", f"raised {type(exc).__name__}",
                                                                  detail=one_line(exc)[:300]))  # fmt: skip
                return None
        return None

    def _program(self, feeds: Sequence[np.ndarray], set_name: str) -> bool:
        """Converts the module at these input shapes (once per shape) and makes it this lane's model."""
        import torch

        from export_tools.errors import ExportError

        signature = tuple((np.shape(f), np.asarray(f).dtype.str) for f in feeds)
        if signature not in self.programs:
            try:
                example = tuple(torch.from_numpy(np.ascontiguousarray(f)) for f in feeds)
                self.programs[signature] = get_runner(self.kind).from_pytorch(self.module, example)
            except ExportError as exc:
                self.programs[signature] = None
                self.record(set_name, self.kind, RunFailedError(self.kind, "convert", "failed to convert the model",
                                                                detail=one_line(exc)[:300]))  # fmt: skip
        program = self.programs[signature]
        if program is None:
            return False
        if program is not self.model:
            self.close()
            self.model, self.unloadable = program, False
        return True

    def close(self) -> None:
        """Frees the model in the worker (the worker itself stays for the next check)."""
        if self.runner is not None and hasattr(self.runner, "close"):
            self.runner.close()
        self.runner = None

    def opener(self) -> Callable[[bytes], Runner]:
        """Opens another model (localisation's exposed graph) the way this lane runs, with the options that worked."""
        return lambda model: open_runner(self.kind, model, self.options, self.isolation)
