"""kpx ops: one exact definition per keypoint op, export-safe and ONNX-ready.

Each op is a functional and an ``nn.Module`` twin, a torch custom op
``kpx::<name>`` and an ONNX function in domain ``kpx`` (see :mod:`custom_ops.registry`).
The op list is :mod:`custom_ops.ops`; its functionals and modules are re-exported here.
"""

from custom_ops._version import __version__
from custom_ops.ops import *  # noqa: F403  (every op's functional and nn.Module, listed once in custom_ops.ops)
from custom_ops.registry import DOMAIN, DOMAIN_VERSION, OpSpec, get_op, kpx_export, list_ops, translation_table

__all__ = [
    "DOMAIN",
    "DOMAIN_VERSION",
    "OpSpec",
    "__version__",
    "get_op",
    "kpx_export",
    "list_ops",
    "simcc_visibility",  # noqa: F405 (from custom_ops.ops: a plain-torch helper, not a registered op)
    "translation_table",
]
__all__ += sorted(name for spec in list_ops() for name in (spec.name, spec.onnx_op_type))
