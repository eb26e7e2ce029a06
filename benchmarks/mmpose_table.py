"""mmpose 1.3.2 / rtmlib 0.0.16 functions and the kpx calls that reproduce them, with the measured max |difference|.

Run: ``python benchmarks/mmpose_table.py`` (about 2 minutes on 2 CPU cores). Prints the versions, the date and a
markdown table (docs/mmpose.md). The comparisons are the ``measure_*`` functions of tests/test_mmpose_oracle.py,
which also asserts their bounds; the oracles are the installed mmpose and rtmlib files, loaded by path
(``pip install --no-deps mmpose==1.3.2 rtmlib==0.0.16``).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import pytest
import torch

try:
    from tests import test_mmpose_oracle as oracle_tests
except pytest.skip.Exception as skipped:  # the oracle files are missing
    raise SystemExit(f"mmpose_table: {skipped}") from None


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def measurements(o) -> list:
    """Every row of the table, in the order of docs/mmpose.md."""
    t = oracle_tests
    rows = []
    for size in t.HEATMAP_SIZES:
        for kind, sigma in t.TARGETS:
            rows.append(t.measure_heatmap_targets(o, kind, sigma, size))
    for size in t.HEATMAP_SIZES:
        rows.append(t.measure_get_heatmap_maximum(o, size))
    for refine, regions in (
        ("quarter", ("interior", "border")),
        ("dark", ("interior", "border")),
        ("dark_udp", ("all",)),
    ):
        for size in t.HEATMAP_SIZES:
            for noise in (0.0, 0.02):
                for region in regions:
                    rows.append(t.measure_refine(o, refine, size, noise, region))
    rows.append(t.measure_codec_decode(o, "msra"))
    rows.append(t.measure_codec_decode(o, "udp"))
    for keys in t.SIMCC_KEYS:
        rows.append(t.measure_simcc_maximum(o, "mmpose", keys))
    for keys in t.SIMCC_KEYS:
        rows.append(t.measure_simcc_maximum(o, "rtmlib", keys))
    for keys in t.SIMCC_KEYS:
        rows.append(t.measure_rtmpose_postprocess(o, keys))
    for keys in t.SIMCC_KEYS:
        rows.append(t.measure_simcc_decode(o, keys))
    for keys in t.SIMCC_KEYS:
        for noise in (0.0, 0.02):
            for region in ("interior", "border"):
                rows.append(t.measure_simcc_dark(o, keys, noise, region))
    for keys in t.SIMCC_KEYS:
        rows.append(t.measure_simcc_visibility(o, keys))
    for keys in t.SIMCC_KEYS:
        for normalize in (False, True):
            rows.append(t.measure_simcc_encode(o, keys, normalize))
    rows.append(t.measure_bbox_cs(o))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def main() -> None:
    versions = ", ".join(
        f"{name} {version}"
        for name, version in (
            ("python", platform.python_version()),
            ("torch", torch.__version__),
            ("numpy", np.__version__),
            ("cv2", cv2.__version__),
            ("mmpose", _version("mmpose")),
            ("rtmlib", _version("rtmlib")),
        )
    )
    rows = measurements(oracle_tests.load_oracles())
    print(f"# kpx vs mmpose/rtmlib, {datetime.date.today().isoformat()}, {platform.machine()} CPU")
    print(f"# {versions}")
    print("# command: python benchmarks/mmpose_table.py")
    print()
    print("| mmpose/rtmlib function | kpx call | inputs | n | max \\|difference\\| (measured) | notes |")
    print("|---|---|---|---:|---:|---|")
    for row in rows:
        cells = (row.oracle, row.kpx, row.inputs, str(row.count), f"{row.max_diff:.3g}", row.notes)
        print("| " + " | ".join(_cell(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
