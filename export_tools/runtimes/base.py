"""The runner contract and the one table of runtimes, keyed by name.

A runner runs one ONNX model on one runtime. Every runner class declares:

- ``kind``: its name in this table, on the command line (``--providers cpu,openvino``) and in the API
  (``check_parity(..., runtimes=["cpu"])``);
- ``summary``: one line for ``--help`` and ``kpx doctor``; ``install``: the command that installs it;
- ``source``: ``"onnx"`` (constructed from ONNX bytes) or ``"pytorch"`` (from bytes its class builds out of the
  PyTorch model with ``from_pytorch``: ExecuTorch's ``.pte``);
- ``check_available()``: a cheap check (no model) that raises :class:`RunnerUnavailableError` with the
  install hint when the runtime cannot be used here;
- ``run(feeds)``: inputs in the graph's input order -> outputs in the graph's output order (numpy);
- ``describe()``: versions and settings for reports; ``label(options)``: the name of its rows in reports;
- ``fallback_options(options)``: safer options to retry with after a crash (ONNX Runtime: its lower graph
  optimisation levels), used by the parity harness.

Runners are constructed with the model bytes and keyword options they understand (``benchmark=True``
asks for the runtime's latency settings). The CLI choices and help, ``kpx doctor``, ``kpx bench`` and
the parity harness all read :data:`RUNNERS`: adding a runtime is one class in one file of this package
(decorated with :func:`register_runner`), one import line in ``runtimes/__init__.py``, and its test.
"""

from __future__ import annotations

import inspect
import pickle
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from export_tools.errors import RunnerUnavailableError


class Runner(ABC):
    """One ONNX model loaded on one runtime."""

    kind: ClassVar[str]
    summary: ClassVar[str]
    #: what the runner is constructed from: ``"onnx"`` (ONNX model bytes, every runner of the table but one) or
    #: ``"pytorch"`` (the runner's own format built from the PyTorch model, e.g. ExecuTorch's ``.pte``: see
    #: ``from_pytorch`` on such a class); the parity harness gives each runner the bytes it takes
    source: ClassVar[str] = "onnx"
    #: how to install it (the README's runtime table and ``kpx doctor`` read it; "" when it comes with kpx)
    install: ClassVar[str] = ""
    #: the label of this runner's rows in parity reports (e.g. ``"ort-cpu"``); instances may refine it
    name: str = ""

    @classmethod
    @abstractmethod
    def check_available(cls) -> None:
        """Raises :class:`RunnerUnavailableError` naming the fix unless this runtime can be used here."""

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """``ValueError`` naming the option unless ``cls(model, **options)`` takes it (and, for a worker process,
        it can be pickled)."""
        params = inspect.signature(cls.__init__).parameters
        accepted = [n for n, p in params.items() if n not in ("self", "model") and p.kind == p.KEYWORD_ONLY]
        unknown = sorted(set(options) - set(params) - {"self", "model"})
        if unknown and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            raise ValueError(f"runtime {cls.kind!r} takes no option(s) {unknown}; its options are {accepted}")
        try:
            pickle.dumps(options)
        except Exception as exc:
            raise ValueError(f"the options of runtime {cls.kind!r} must be plain values (picklable): {exc}") from None

    @classmethod
    def label(cls, options: dict[str, Any]) -> str:
        """The name of this runtime's rows in reports for ``options`` (known before loading: a crash at load
        is reported under it)."""
        return options.get("name") or cls.kind

    @classmethod
    def fallback_options(cls, options: dict[str, Any]) -> list[dict[str, Any]]:
        """Safer options to retry with, in order, after this runtime *crashed* with ``options`` (default none)."""
        return []

    @abstractmethod
    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Outputs for ``feeds`` (one array per graph input, in order), in graph output order."""

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """Runtime name, versions and settings, for reports."""


RUNNERS: dict[str, type[Runner]] = {}
"""Every runtime kpx can run a model on, by ``kind``."""


def register_runner(cls: type[Runner]) -> type[Runner]:
    """Class decorator: adds ``cls`` to :data:`RUNNERS` under ``cls.kind`` (unique)."""
    if cls.kind in RUNNERS:
        raise ValueError(f"runtime {cls.kind!r} is already registered by {RUNNERS[cls.kind].__name__}")
    RUNNERS[cls.kind] = cls
    return cls


def runtime_names() -> tuple[str, ...]:
    """The registered runtime kinds, in registration order."""
    return tuple(RUNNERS)


def get_runner(kind: str) -> type[Runner]:
    """The runner class for ``kind``; ``ValueError`` naming the choices otherwise."""
    if not isinstance(kind, str) or kind not in RUNNERS:
        raise ValueError(f"runtime must be one of {', '.join(map(repr, RUNNERS))}; got {kind!r}")
    return RUNNERS[kind]


def check_available(kind: str) -> None:
    """Raises :class:`RunnerUnavailableError` with the fix unless runtime ``kind`` can be used here."""
    get_runner(kind).check_available()


def availability(kind: str) -> str:
    """``"available"``, or why not (the error's message, with its fix)."""
    try:
        check_available(kind)
    except RunnerUnavailableError as exc:
        return str(exc)
    return "available"


def make_runner(kind: str, model: bytes, **options: Any) -> Runner:
    """Loads ``model`` on runtime ``kind``; raises :class:`RunnerUnavailableError` when it cannot run here."""
    cls = get_runner(kind)
    cls.check_available()
    return cls(model, **options)


def help_text() -> str:
    """``kind: summary`` of every runtime, for command-line help."""
    return "; ".join(f"{kind}: {cls.summary}" for kind, cls in RUNNERS.items())
