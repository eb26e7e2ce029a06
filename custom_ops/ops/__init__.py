"""The op list: one file per op, one import line here. Importing this package registers them all.

Each line imports an op's functional and its ``nn.Module`` twin; :mod:`custom_ops` re-exports
them, so nothing else lists ops.
"""

from custom_ops.ops.decode_heatmaps import DecodeHeatmaps, decode_heatmaps
from custom_ops.ops.decode_simcc import DecodeSimCC, decode_simcc, simcc_visibility
from custom_ops.ops.gaussian_heatmaps import GaussianHeatmaps, gaussian_heatmaps
from custom_ops.ops.heatmap_to_image import HeatmapToImage, heatmap_to_image
from custom_ops.ops.render_gaussian2d import RenderGaussian2d, render_gaussian2d
from custom_ops.ops.simcc_targets import SimCCTargets, simcc_targets
from custom_ops.ops.spatial_expectation2d import SpatialExpectation2d, spatial_expectation2d
from custom_ops.ops.spatial_soft_argmax2d import SpatialSoftArgmax2d, spatial_soft_argmax2d
from custom_ops.ops.spatial_softmax2d import SpatialSoftmax2d, spatial_softmax2d
from custom_ops.ops.topdown_crop import TopdownCrop, topdown_crop
