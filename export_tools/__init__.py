"""kpx export tools: the exporter, the parity harness (:mod:`export_tools.parity`), the runtimes
(:mod:`export_tools.runtimes`) and the ``kpx`` command line (:mod:`export_tools.cli`)."""

from export_tools.errors import ExportError
from export_tools.exporter import EMIT_MODES, export, to_onnx
from export_tools.graph import kpx_nodes

__all__ = ["EMIT_MODES", "ExportError", "export", "kpx_nodes", "to_onnx"]
