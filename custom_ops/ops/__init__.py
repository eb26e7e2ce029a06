"""One file per op; importing this package registers them all."""

from custom_ops.ops import (  # noqa: F401
    decode_heatmaps,
    gaussian_heatmaps,
    heatmap_to_image,
    render_gaussian2d,
    spatial_expectation2d,
    spatial_soft_argmax2d,
    spatial_softmax2d,
)
