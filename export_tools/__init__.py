"""kpx export tools: the exporter, the parity harness (:mod:`export_tools.parity`), the runtimes
(:mod:`export_tools.runtimes`) and the ``kpx`` command line (:mod:`export_tools.cli`).

The names below load on first use, so that the runtime workers (``export_tools.runtimes.isolation``)
start without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from export_tools.errors import ExportError
    from export_tools.exporter import EMIT_MODES, export, to_onnx
    from export_tools.graph import kpx_nodes

_NAMES = {
    "EMIT_MODES": "export_tools.exporter",
    "ExportError": "export_tools.errors",
    "export": "export_tools.exporter",
    "kpx_nodes": "export_tools.graph",
    "to_onnx": "export_tools.exporter",
}
__all__ = ["EMIT_MODES", "ExportError", "export", "kpx_nodes", "to_onnx"]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'export_tools' has no attribute {name!r}")
