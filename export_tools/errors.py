"""Every error kpx raises on purpose, and the exit code the ``kpx`` command maps it to.

| error | meaning | exit code |
|---|---|---|
| :class:`UsageError` | the user's input is wrong (message: what, and the fix) | 2 |
| :class:`ExportError` | the model could not be exported; nothing was written | 2 |
| :class:`OpsetConversionError` | an op has no form at the requested opset | 2 |
| :class:`ModelLoadError` | ONNX Runtime CPU refuses the file itself | 2 |
| :class:`LocalFunctionsUnsupportedError` | the runtime reads no ONNX functions: re-export inline | 2 |
| :class:`VerificationError` | a transformed file (``kpx simplify``, ``kpx repair``) computes something else | 1 |
| :class:`RunFailedError` | a runtime crashed, hung, ran out of memory or raised on the model | 1 |
| :class:`RunnerUnavailableError` | a requested runtime or package is missing here (fix: install) | 3 |
| anything else | a kpx bug: "please report it", traceback with ``-v`` | 4 |

Parity and check failures are results, not errors: exit 1.
"""

from __future__ import annotations

import re

OK, CHECK_FAILED, USAGE, ENVIRONMENT, INTERNAL = 0, 1, 2, 3, 4
"""Exit codes of the ``kpx`` command (130 on Ctrl-C)."""


class KpxError(Exception):
    """Base of every error kpx raises on purpose."""


class UsageError(KpxError, ValueError):
    """Bad input from the user; the message names the problem and the fix."""


class ExportError(KpxError, RuntimeError):
    """The model could not be exported; no file was written."""


class OpsetConversionError(KpxError, ValueError):
    """The graph uses an op (or an op option) that has no form at the target opset."""


class ModelLoadError(KpxError, ValueError):
    """ONNX Runtime CPU refused the model itself (the file, not the machine, is at fault)."""


class RunFailedError(KpxError, RuntimeError):
    """A runtime crashed, hung, ran out of memory or raised while loading or running a model: a finding about
    the file on that runtime, which the parity harness reports as a failed case (exit 1), not a bug."""

    def __init__(self, runtime: str, phase: str, what: str, version: str = "", detail: str = "") -> None:
        self.runtime, self.phase, self.what, self.version, self.detail = runtime, phase, what, version, detail
        text = f"{runtime} {what} during {phase}" + (f" ({version})" if version else "")
        super().__init__(text + (f": {detail}" if detail else ""))

    def as_dict(self) -> dict[str, str]:
        return {"runtime": self.runtime, "phase": self.phase, "what": self.what, "version": self.version,
                "detail": self.detail}  # fmt: skip

    @property
    def crashed(self) -> bool:
        """The process died by a signal (not a time or memory limit): worth retrying with safer options."""
        return self.what.startswith("crashed")


class VerificationError(KpxError, RuntimeError):
    """A transformed file (simplified, repaired) does not compute what the original did; it was not written."""


class RunnerUnavailableError(KpxError, RuntimeError):
    """A requested runtime (or a package it needs) cannot run here; the message says how to fix it."""


class LocalFunctionsUnsupportedError(RunnerUnavailableError):
    """The runtime cannot read ONNX local functions (kpx ``emit="function"`` exports); re-export inline."""


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences (torch colours some of its messages)."""
    return _ANSI.sub("", text)


def one_line(exc: BaseException, *, last: bool = False, every: bool = False) -> str:
    """An exception's message without terminal escapes: its first line, its last, or ``every`` line joined."""
    lines = [ln.strip() for ln in strip_ansi(str(exc)).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if every:
        return " ".join(lines)
    return lines[-1] if last else lines[0]


def root_cause(exc: BaseException, limit: int = 500) -> str:
    """The innermost cause of an exception, on one line (torch's exporter wraps the useful message)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return " ".join(one_line(exc, every=True).split())[:limit]
