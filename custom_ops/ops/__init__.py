"""One file per op; importing this package registers them all."""

from custom_ops.ops import spatial_softmax2d  # noqa: F401
