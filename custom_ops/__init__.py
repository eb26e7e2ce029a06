"""kpx ops: one exact definition per keypoint op, export-safe and ONNX-ready."""

from custom_ops._version import __version__
from custom_ops.ops.spatial_softmax2d import SpatialSoftmax2d, spatial_softmax2d
from custom_ops.registry import DOMAIN, DOMAIN_VERSION, OpSpec, get_op, list_ops, translation_table

__all__ = [
    "DOMAIN",
    "DOMAIN_VERSION",
    "OpSpec",
    "SpatialSoftmax2d",
    "__version__",
    "get_op",
    "list_ops",
    "spatial_softmax2d",
    "translation_table",
]
