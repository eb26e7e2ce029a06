"""kpx ops: one exact definition per keypoint op, export-safe and ONNX-ready.

Each op is a functional and an ``nn.Module`` twin, a torch custom op
``kpx::<name>`` and an ONNX function in domain ``kpx`` (see :mod:`custom_ops.registry`).
"""

from custom_ops._version import __version__
from custom_ops.ops.decode_heatmaps import DecodeHeatmaps, decode_heatmaps
from custom_ops.ops.gaussian_heatmaps import GaussianHeatmaps, gaussian_heatmaps
from custom_ops.ops.heatmap_to_image import HeatmapToImage, heatmap_to_image
from custom_ops.ops.render_gaussian2d import RenderGaussian2d, render_gaussian2d
from custom_ops.ops.spatial_expectation2d import SpatialExpectation2d, spatial_expectation2d
from custom_ops.ops.spatial_soft_argmax2d import SpatialSoftArgmax2d, spatial_soft_argmax2d
from custom_ops.ops.spatial_softmax2d import SpatialSoftmax2d, spatial_softmax2d
from custom_ops.registry import DOMAIN, DOMAIN_VERSION, OpSpec, get_op, list_ops, translation_table

__all__ = [
    "DOMAIN",
    "DOMAIN_VERSION",
    "DecodeHeatmaps",
    "GaussianHeatmaps",
    "HeatmapToImage",
    "OpSpec",
    "RenderGaussian2d",
    "SpatialExpectation2d",
    "SpatialSoftArgmax2d",
    "SpatialSoftmax2d",
    "__version__",
    "decode_heatmaps",
    "gaussian_heatmaps",
    "get_op",
    "heatmap_to_image",
    "list_ops",
    "render_gaussian2d",
    "spatial_expectation2d",
    "spatial_soft_argmax2d",
    "spatial_softmax2d",
    "translation_table",
]
