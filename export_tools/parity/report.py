"""Parity reports: a JSON document with a schema version, and a readable table."""

from __future__ import annotations

import datetime
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from export_tools.parity.compare import OutputStats

SCHEMA = "kpx.parity/4"
"""Version 2 added ``Case.failure`` (a runtime that crashed, hung or ran out of memory), ``Case.localisation``
(why a failed case could not be localised) and the report's ``notes``. Version 3 added ``Case.where``: for a
failed case judged against PyTorch, the first module whose output departs (:mod:`export_tools.parity.where`).
Version 4 judges outputs against their scale (each output's ``scale`` and ``scale_tol``) and keypoint outputs in
pixels (``max_abs_px`` and ``keypoints``: displacements, ambiguous peaks, drift, departures), records how each
generated input was made (``inputs[].generated``), and ``where`` says ``unpaired`` for module outputs it could not
prove to be the ONNX value it would compare (status ``upstream`` when a module's input already departs)."""


@dataclass
class Case:
    """One input set run on one runtime, compared with the reference runtime."""

    inputs: str
    runtime: str
    reference: str
    outputs: list[OutputStats]
    divergence: Any = None  # a localize.Divergence when the case failed and was localised
    #: the runtime (or reference) crashed, hung, ran out of memory or raised: ``RunFailedError.as_dict()``
    failure: dict[str, str] | None = None
    #: why a failed case has no divergence ("localisation unavailable: ...")
    localisation: str | None = None
    #: a failed case against PyTorch: the first module whose output departs (a where.ModuleDivergence)
    where: Any = None

    @property
    def passed(self) -> bool:
        return self.failure is None and all(o.passed for o in self.outputs)


@dataclass
class ParityReport:
    """Everything a parity run compared, and the verdict."""

    model: str
    inputs: list[dict[str, Any]] = field(default_factory=list)
    runtimes: list[dict[str, str]] = field(default_factory=list)
    cases: list[Case] = field(default_factory=list)
    #: what the run could not do and why (e.g. a resized input set that PyTorch rejects)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": {"python": platform.python_version(), "machine": platform.machine()},
            "model": self.model,
            "inputs": self.inputs,
            "runtimes": self.runtimes,
            "cases": [self._case(c) for c in self.cases],
            "notes": self.notes,
            "verdict": "pass" if self.passed else "fail",
        }

    @staticmethod
    def _case(case: Case) -> dict[str, Any]:
        return {
            "inputs": case.inputs,
            "runtime": case.runtime,
            "reference": case.reference,
            "passed": case.passed,
            "outputs": [o.as_dict() for o in case.outputs],
            "divergence": case.divergence.as_dict() if case.divergence else None,
            "failure": case.failure,
            "localisation": case.localisation,
            "where": case.where.as_dict() if case.where else None,
        }

    def write_json(self, path: str | Path, *, overwrite: bool = True) -> Path:
        """Writes the JSON report atomically (:func:`export_tools.files.write_atomic`)."""
        from export_tools.files import write_atomic

        data = (json.dumps(self.as_dict(), indent=2, allow_nan=True) + "\n").encode()
        return write_atomic(path, data, overwrite=overwrite)

    def table(self) -> str:
        """One line per (input set, runtime, output)."""
        head = (
            f"{'inputs':<24} {'runtime':<20} {'vs':<16} {'output':<22} {'max abs':>9} {'max rel':>9} "
            f"{'p99 abs':>9} {'max px':>8} nan/inf  ok"
        )
        lines = [head, "-" * len(head)]
        for case in self.cases:
            if case.failure is not None:
                f = case.failure
                what = f"FAILED: {f['what']} during {f['phase']}" + (f" ({f['version']})" if f["version"] else "")
                lines.append(f"{case.inputs[:24]:<24} {case.runtime[:20]:<20} {case.reference[:16]:<16} {what}")
                if f["detail"]:
                    lines.append(f"{'':<24} {'':<20} {'':<16}   {f['detail'][:160]}")
            for o in case.outputs:
                pattern = ("=" if o.nan_pattern_equal else "!") + ("=" if o.inf_pattern_equal else "!")
                px = f"{o.max_abs_px:>8.1e}" if o.max_abs_px is not None else f"{'-':>8}"
                lines.append(
                    f"{case.inputs[:24]:<24} {case.runtime[:20]:<20} {case.reference[:16]:<16} {o.name[:22]:<22} "
                    f"{o.max_abs:>9.2e} {o.max_rel:>9.2e} {o.p99_abs:>9.2e} {px} {pattern:^7}  "
                    f"{'yes' if o.passed else 'NO'}"
                )
        lines += [f"{c.inputs} on {c.runtime}: {o.name}: {o.keypoints.summary()}" for c in self.cases
                  for o in c.outputs if o.keypoints is not None]  # fmt: skip
        lines += [f"{c.inputs} on {c.runtime}: {c.where}" for c in self.cases if c.where]
        lines += [f"{c.inputs} on {c.runtime}: {c.divergence}" for c in self.cases if c.divergence]
        lines += [f"{c.inputs} on {c.runtime}: {c.localisation}" for c in self.cases if c.localisation]
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"verdict: {'PASS' if self.passed else 'FAIL'} ({len(self.cases)} cases)")
        return "\n".join(lines)
