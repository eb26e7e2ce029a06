"""heatmap_to_image against mmpose's and HRNet's mappings (numpy), box formats, bad input, ONNX, a full pipeline.

The generic contract (module twin, dtypes, half precision rounded once, non-contiguous and empty inputs, wrong
rank and last axis, non-float input, one kpx node per call) is tests/test_op_contract.py, for every op from its
registry record.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

from custom_ops import HeatmapToImage, decode_heatmaps, gaussian_heatmaps, heatmap_to_image
from export_tools import kpx_nodes

from ._ort import OrtModel

HEATMAP = (64, 48)  # (H, W) of a 256x192 top-down model's heatmaps
DYNAMIC = ({0: "B", 1: "K"}, {0: "B"})
MODES = ("msra", "udp")
FORMATS = ("xywh", "xyxy", "cs")


# --- oracles: numpy float64, written from the references' formulas -----------------------------------------------


def transform_preds(coords, center, scale, output_size, use_udp):
    """mmpose 0.x ``transform_preds`` for one instance: ``coords (K, 2)`` heatmap pixels, ``center (2,)``,
    ``scale (2,)`` in pixels (0.x passes ``scale / 200`` and multiplies by 200 first), ``output_size (W, H)``."""
    out_w, out_h = output_size
    if use_udp:
        sx, sy = scale[0] / (out_w - 1.0), scale[1] / (out_h - 1.0)
    else:
        sx, sy = scale[0] / out_w, scale[1] / out_h
    return np.stack(
        [coords[:, 0] * sx + center[0] - scale[0] * 0.5, coords[:, 1] * sy + center[1] - scale[1] * 0.5], -1
    )


def mmpose1(coords, center, scale, input_size, heatmap_size, udp):
    """mmpose 1.x: the codec's ``decode`` to input space, then ``add_pred_to_datasample`` to the image."""
    input_size, heatmap_size = np.asarray(input_size, float), np.asarray(heatmap_size, float)
    # UDPHeatmap.decode: keypoints / [W - 1, H - 1] * input_size; MSRAHeatmap.decode: keypoints * scale_factor
    in_space = coords / (heatmap_size - 1) * input_size if udp else coords * (input_size / heatmap_size)
    return in_space / input_size * scale + center - 0.5 * scale


def hrnet_inverse_affine(coords, center, scale_w, output_size):
    """HRNet's ``get_affine_transform(center, scale, 0, output_size, inv=1)`` (no rotation), solved from its three
    point pairs: the box centre to the map centre, a point half a box width above it to half a map width above."""
    out_w, out_h = output_size
    src = np.array([center, center + np.array([0.0, -0.5 * scale_w])], dtype=np.float64)
    dst = np.array([[out_w * 0.5, out_h * 0.5], [out_w * 0.5, out_h * 0.5 - 0.5 * out_w]])

    def third(a, b):  # b + (a - b) rotated by 90 degrees
        d = a - b
        return b + np.array([-d[1], d[0]])

    src = np.vstack([src, third(src[0], src[1])])
    dst = np.vstack([dst, third(dst[0], dst[1])])
    affine = np.linalg.solve(np.hstack([dst, np.ones((3, 1))]), src).T  # (2, 3): heatmap -> image
    return np.hstack([coords, np.ones((len(coords), 1))]) @ affine.T


def oracle(keypoints, boxes, heatmap_size, box_format="xywh", scale_mode="msra"):
    """``transform_preds`` per instance, with the box converted to mmpose's centre and scale."""
    kp, bx = keypoints.double().numpy(), boxes.double().numpy()
    h, w = heatmap_size
    out = np.zeros_like(kp)
    for b in range(kp.shape[0]):
        x0, y0, p, q = bx[b]
        if box_format == "xywh":
            center, scale = np.array([x0 + p / 2, y0 + q / 2]), np.array([p, q])
        elif box_format == "xyxy":
            center, scale = np.array([(x0 + p) / 2, (y0 + q) / 2]), np.array([p - x0, q - y0])
        else:
            center, scale = np.array([x0, y0]), np.array([p, q])
        out[b] = transform_preds(kp[b], center, scale, (w, h), scale_mode == "udp")
    return torch.from_numpy(out)


# --- inputs ----------------------------------------------------------------------------------------------------------


def keypoints_on(batch, keys, size=HEATMAP, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = size
    return torch.rand(batch, keys, 2, generator=g, dtype=torch.float64) * torch.tensor([w + 1.0, h + 1.0]) - 1


def boxes_xywh(batch, seed=0):
    g = torch.Generator().manual_seed(seed + 100)
    corner = torch.rand(batch, 2, generator=g, dtype=torch.float64) * 1200 - 100
    extent = torch.rand(batch, 2, generator=g, dtype=torch.float64) * 500 + 8
    return torch.cat([corner, extent], 1)


def as_format(xywh, box_format):
    if box_format == "xyxy":
        return torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    if box_format == "cs":
        return torch.cat([xywh[:, :2] + 0.5 * xywh[:, 2:], xywh[:, 2:]], 1)
    return xywh


def assert_pixels(got, want, atol=1e-4, rtol=0.0):
    torch.testing.assert_close(got.double(), want.double(), rtol=rtol, atol=atol, equal_nan=True)


def assert_float32_pixels(got, want):
    """Within 1e-4 px, or a few float32 ulps (eps 1.2e-7) of image coordinates in the thousands."""
    assert_pixels(got, want, atol=1e-4, rtol=5e-7)


@functools.cache
def ort_mapper(box_format: str, scale_mode: str, emit: str, dtype=None) -> OrtModel:
    module = HeatmapToImage(HEATMAP, box_format=box_format, scale_mode=scale_mode)
    example = (keypoints_on(2, 3).float(), as_format(boxes_xywh(2), box_format).float())
    return OrtModel(module, example, dynamic_shapes=DYNAMIC, emit=emit, dtype=dtype)


@pytest.fixture(scope="module", params=["torch", "ort-function", "ort-inline"])
def run(request):
    """``run(keypoints, boxes, box_format, scale_mode)`` eagerly or from a dynamic ORT export (HEATMAP size)."""
    if request.param == "torch":
        return lambda kp, boxes, fmt, mode: heatmap_to_image(kp, boxes, HEATMAP, box_format=fmt, scale_mode=mode)
    emit = request.param.removeprefix("ort-")
    return lambda kp, boxes, fmt, mode: ort_mapper(fmt, mode, emit)(kp, boxes)[0]


# --- agreement with the references --------------------------------------------------------------------------------


@pytest.mark.parametrize("scale_mode", MODES)
@pytest.mark.parametrize("box_format", FORMATS)
def test_matches_mmpose0_transform_preds(run, box_format, scale_mode):
    kp, xywh = keypoints_on(4, 17, seed=1), boxes_xywh(4, seed=1)
    kp, boxes = kp.float(), as_format(xywh, box_format).float()
    expected = oracle(kp, boxes, HEATMAP, box_format, scale_mode)
    assert_float32_pixels(run(kp, boxes, box_format, scale_mode), expected)


@pytest.mark.parametrize("scale_mode", MODES)
@pytest.mark.parametrize("input_size", [(192, 256), (288, 384), (100, 100)])
def test_matches_mmpose1_codec_decode_then_add_pred(scale_mode, input_size):
    """mmpose 1.x goes through the network input size; it cancels, so kpx needs only the heatmap size."""
    kp, xywh = keypoints_on(3, 17, seed=2), boxes_xywh(3, seed=2)
    cs = as_format(xywh, "cs")
    h, w = HEATMAP
    expected = np.stack(
        [mmpose1(kp[b].numpy(), cs[b, :2].numpy(), cs[b, 2:].numpy(), input_size, (w, h), scale_mode == "udp")
         for b in range(3)]
    )  # fmt: skip
    out = heatmap_to_image(kp, cs, HEATMAP, box_format="cs", scale_mode=scale_mode)
    assert_pixels(out, torch.from_numpy(expected), atol=1e-9)


def test_msra_is_hrnets_inverse_affine_transform():
    """HRNet maps back with the inverse of its crop's affine transform; for an axis-aligned crop whose aspect
    ratio is the heatmap's (HRNet fixes it beforehand) that is the msra map."""
    h, w = HEATMAP
    kp = keypoints_on(2, 17, seed=3)
    centre = torch.tensor([[320.0, 240.0], [97.5, 411.25]], dtype=torch.float64)
    widths = torch.tensor([150.0, 37.5], dtype=torch.float64)
    cs = torch.cat([centre, torch.stack([widths, widths * h / w], 1)], 1)
    out = heatmap_to_image(kp, cs, HEATMAP, box_format="cs")
    for b in range(2):
        expected = hrnet_inverse_affine(kp[b].numpy(), centre[b].numpy(), float(widths[b]), (w, h))
        assert_pixels(out[b], torch.from_numpy(expected), atol=1e-9)


def test_golden_values(run):
    """A 96x128 box at (100, 50) and 64x48 heatmaps: msra maps the map's outer edges (0 and W = 48) to the box's
    edges; udp maps the first and last pixel centres (0 and W - 1 = 47) to them."""
    kp = torch.tensor([[[0.0, 0.0], [48.0, 64.0], [47.0, 63.0], [24.0, 32.0]]])
    boxes = torch.tensor([[100.0, 50.0, 96.0, 128.0]])
    msra = run(kp, boxes, "xywh", "msra")
    udp = run(kp, boxes, "xywh", "udp")
    assert_pixels(msra, torch.tensor([[[100.0, 50.0], [196.0, 178.0], [194.0, 176.0], [148.0, 114.0]]]), atol=1e-5)
    s = (96 / 47, 128 / 63)
    expected_udp = [[100.0, 50.0], [100 + 48 * s[0], 50 + 64 * s[1]], [196.0, 178.0], [100 + 24 * s[0], 50 + 32 * s[1]]]
    assert_pixels(udp, torch.tensor([expected_udp]), atol=1e-4)


@pytest.mark.parametrize("scale_mode", MODES)
def test_box_formats_describe_the_same_box(scale_mode):
    kp, xywh = keypoints_on(3, 9, seed=4), boxes_xywh(3, seed=4)
    outs = [heatmap_to_image(kp, as_format(xywh, f), HEATMAP, box_format=f, scale_mode=scale_mode) for f in FORMATS]
    for other in outs[1:]:
        assert_pixels(other, outs[0], atol=1e-9)


@pytest.mark.parametrize("scale_mode", MODES)
def test_inverse_of_the_encoders_mapping(scale_mode):
    """The codecs' encoders map image points into the heatmap with the inverse scale (UDP: (W - 1) / w);
    mapping back recovers the image points."""
    h, w = HEATMAP
    xywh = boxes_xywh(2, seed=5)
    image = xywh[:, None, :2] + torch.rand(2, 11, 2, dtype=torch.float64) * xywh[:, None, 2:]
    n = torch.tensor([w, h], dtype=torch.float64) - int(scale_mode == "udp")
    in_heatmap = (image - xywh[:, None, :2]) * n / xywh[:, None, 2:]
    assert_pixels(heatmap_to_image(in_heatmap, xywh, HEATMAP, scale_mode=scale_mode), image, atol=1e-9)


class TopDownHead(nn.Module):
    """Heatmaps and crop boxes to image keypoints: two kpx nodes."""

    def __init__(self, refine="dark", scale_mode="udp"):
        super().__init__()
        self.refine, self.scale_mode = refine, scale_mode

    def forward(self, heatmaps, boxes):
        keypoints, scores = decode_heatmaps(heatmaps, refine=self.refine)
        size = (heatmaps.shape[2], heatmaps.shape[3])
        return heatmap_to_image(keypoints, boxes, size, box_format="cs", scale_mode=self.scale_mode), scores


def test_udp_pipeline_recovers_image_keypoints_on_ort():
    """Image keypoints -> UDP heatmap coordinates -> sub-pixel Gaussian targets -> DARK decode -> image: back
    within a small fraction of a heatmap pixel, in PyTorch and through one ONNX file with two kpx nodes."""
    h, w = HEATMAP
    g = torch.Generator().manual_seed(6)
    cs = torch.tensor([[300.0, 200.0, 192.0, 256.0], [640.5, 120.25, 96.0, 128.0]], dtype=torch.float64)
    in_box = 0.2 + 0.6 * torch.rand(2, 8, 2, generator=g, dtype=torch.float64)  # inside the box, off its border
    image = cs[:, None, :2] - 0.5 * cs[:, None, 2:] + in_box * cs[:, None, 2:]
    per_px = cs[:, None, 2:] / torch.tensor([w - 1.0, h - 1.0], dtype=torch.float64)  # image px per heatmap px
    heatmaps, _ = gaussian_heatmaps(
        (image - cs[:, None, :2] + 0.5 * cs[:, None, 2:]) / per_px, HEATMAP, 2.0, subpixel=True
    )
    model = TopDownHead()
    out, _ = model(heatmaps.float(), cs.float())
    assert ((out.double() - image).abs() / per_px).max() < 1e-3  # heatmap pixels
    ort = OrtModel(model, (heatmaps.float(), cs.float()), dynamic_shapes=({0: "B", 1: "K"}, {0: "B"}))
    assert [n.op_type for n in kpx_nodes(ort.proto)] == ["DecodeHeatmaps", "HeatmapToImage"]
    ort_out, _ = ort(heatmaps.float(), cs.float())
    assert_pixels(ort_out, out, atol=1e-3)


# --- bad input, both backends -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale_mode", MODES)
def test_non_finite_values_propagate_per_keypoint(run, scale_mode):
    kp, boxes = keypoints_on(2, 5, seed=7).float(), boxes_xywh(2, seed=7).float()
    kp[0, 1, 0] = math.nan
    kp[1, 3] = math.nan
    out = run(kp, boxes, "xywh", scale_mode)
    assert out[0, 1, 0].isnan() and torch.isfinite(out[0, 1, 1])
    assert out[1, 3].isnan().all()
    assert torch.isfinite(out).sum() == out.numel() - 3
    assert_float32_pixels(out, oracle(kp, boxes, HEATMAP, "xywh", scale_mode))


@pytest.mark.parametrize("box_format", ["xyxy", "cs"])
@pytest.mark.parametrize("shape", [(0, 4), (3, 0), (0, 0)])
def test_empty_batch_or_keypoints(run, box_format, shape):
    """The box formats that no dynamic registry sample runs with msra (xywh/msra: tests/test_op_contract.py)."""
    out = run(torch.zeros(*shape, 2), torch.ones(shape[0], 4), box_format, "msra")
    assert out.shape == (*shape, 2)


@pytest.mark.parametrize("scale_mode", MODES)
@pytest.mark.parametrize("box_format", FORMATS)
def test_dynamic_batch_and_keypoints_through_one_export(run, box_format, scale_mode):
    for batch, keys, seed in ((1, 1, 9), (5, 26, 10)):
        kp, boxes = keypoints_on(batch, keys, seed=seed).float(), as_format(boxes_xywh(batch, seed=seed), box_format)
        boxes = boxes.float()
        expected = oracle(kp, boxes, HEATMAP, box_format, scale_mode)
        assert_float32_pixels(run(kp, boxes, box_format, scale_mode), expected)


# --- dtypes --------------------------------------------------------------------------------------------------------


def test_float16_export_matches_float32_pytorch():
    model = ort_mapper("cs", "udp", "function", torch.float16)
    kp, boxes = keypoints_on(3, 7, seed=12).half(), as_format(boxes_xywh(3, seed=12), "cs").half()
    (out,) = model(kp, boxes)
    want = heatmap_to_image(kp.float(), boxes.float(), HEATMAP, box_format="cs", scale_mode="udp")
    assert out.dtype == torch.float16
    # float32 inside, rounded once; ORT may fuse the multiply-add differently: one float16 ulp at most
    torch.testing.assert_close(out.float(), want.half().float(), rtol=torch.finfo(torch.float16).eps, atol=0)


def test_float64_boxes_with_float32_keypoints():
    kp, boxes = keypoints_on(2, 4, seed=13), boxes_xywh(2, seed=13)
    out = heatmap_to_image(kp.float(), boxes, HEATMAP)
    assert out.dtype == torch.float32
    assert_float32_pixels(out, oracle(kp.float(), boxes, HEATMAP))


def test_gradients_flow_to_keypoints_and_boxes():
    kp = keypoints_on(2, 3, seed=14).requires_grad_()
    boxes = as_format(boxes_xywh(2, seed=14), "cs").requires_grad_()
    for fmt, mode in (("cs", "udp"), ("xyxy", "msra")):
        mapping = functools.partial(heatmap_to_image, heatmap_size=HEATMAP, box_format=fmt, scale_mode=mode)
        torch.autograd.gradcheck(mapping, (kp, boxes))


# --- module twin ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("box_format", FORMATS)
@pytest.mark.parametrize("scale_mode", MODES)
def test_module_repr_names_the_box_format(box_format, scale_mode):
    """(The module equals the functional for every sample: tests/test_op_contract.py.)"""
    assert box_format in repr(HeatmapToImage(HEATMAP, box_format=box_format, scale_mode=scale_mode))


# --- exceptions ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("box_format", ["XYWH", "ltwh", "", None])
def test_bad_box_format_raises(box_format):
    with pytest.raises(ValueError, match="box_format"):
        heatmap_to_image(torch.zeros(1, 2, 2), torch.ones(1, 4), HEATMAP, box_format=box_format)
    with pytest.raises(ValueError, match="box_format"):
        HeatmapToImage(HEATMAP, box_format=box_format)


@pytest.mark.parametrize("scale_mode", ["dark", "UDP", None])
def test_bad_scale_mode_raises(scale_mode):
    with pytest.raises(ValueError, match="scale_mode"):
        heatmap_to_image(torch.zeros(1, 2, 2), torch.ones(1, 4), HEATMAP, scale_mode=scale_mode)
    with pytest.raises(ValueError, match="scale_mode"):
        HeatmapToImage(HEATMAP, scale_mode=scale_mode)


@pytest.mark.parametrize("size", [(64,), (0, 48), (64, -1), "64x48", None])
def test_bad_heatmap_size_raises(size):
    with pytest.raises(ValueError, match="heatmap_size"):
        heatmap_to_image(torch.zeros(1, 2, 2), torch.ones(1, 4), size)


@pytest.mark.parametrize("size", [(1, 48), (64, 1)])
def test_udp_needs_two_pixels_per_axis(size):
    with pytest.raises(ValueError, match="heatmap_size"):
        heatmap_to_image(torch.zeros(1, 2, 2), torch.ones(1, 4), size, scale_mode="udp")
    with pytest.raises(ValueError, match="heatmap_size"):
        HeatmapToImage(size, scale_mode="udp")
    out = heatmap_to_image(torch.zeros(1, 2, 2), torch.tensor([[5.0, 6.0, 10.0, 10.0]]), size)  # msra: fine
    assert out.tolist() == [[[5.0, 6.0], [5.0, 6.0]]]


@pytest.mark.parametrize("shape", [(4,), (1, 3), (2, 4), (1, 1, 4)])
def test_wrong_boxes_shape_raises(shape):
    with pytest.raises(ValueError, match=r"boxes must have shape \(B, 4\)"):
        heatmap_to_image(torch.zeros(1, 2, 2), torch.ones(shape), HEATMAP)
