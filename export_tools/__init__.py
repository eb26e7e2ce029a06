"""kpx export tools: the exporter (and, later, parity harness and CLI)."""

from export_tools.exporter import EMIT_MODES, ExportError, export, kpx_nodes, to_onnx

__all__ = ["EMIT_MODES", "ExportError", "export", "kpx_nodes", "to_onnx"]
