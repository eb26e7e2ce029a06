"""topdown_crop against OpenCV's warpAffine with mmpose's and rtmlib's own matrices, the round trip through
heatmap_to_image, degenerate boxes, bad input, and the ONNX body at every opset (and its rejected alternatives).

mmpose 1.3.2 and rtmlib are loaded by path (``import mmpose`` needs mmcv): ``bbox_xyxy2cs``, ``bbox_xywh2cs``,
``get_warp_matrix``, ``get_udp_warp_matrix`` and rtmlib's ``top_down_affine`` run as they are; mmpose's
``TopdownAffine._fix_aspect_ratio`` lives in a module that imports mmcv, so its three lines are restated here.

The generic contract (module twin, dtypes, half precision rounded once, layouts, empty N, wrong rank of images,
non-float input, one kpx node per call with ORT parity in both emit modes) is tests/test_op_contract.py.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from custom_ops import TopdownCrop, heatmap_to_image, topdown_crop
from custom_ops.registry import MAX_OPSET, MIN_OPSET, get_op
from export_tools import kpx_nodes
from export_tools.downgrade import EXPORT_OPSET
from export_tools.exporter import finalize, trace
from tests.conftest import ort_session, run_ort

W, H = 192, 256  # input_size (w, h) of a 256x192 model
FRAME = (480, 640)
#: OpenCV's INTER_TAB_SIZE: warpAffine rounds source coordinates to 1/32 px (INTER_BITS = 5), after computing
#: them in fixed point with AB_BITS = 10 (1/1024 px). Per axis the sample point is off by at most 1/64 + 1/1024.
CV_COORD_ERROR = 1 / 64 + 1 / 1024
# mmpose's get_udp_warp_matrix divides by the zero scale of the zero-size box (that box is excluded from the
# OpenCV comparisons; test_degenerate_boxes_are_nan_free gives kpx's rule)
pytestmark = pytest.mark.filterwarnings("ignore:(divide by zero|invalid value) encountered:RuntimeWarning")


def _load(package: str, relative: str, name: str):
    root = Path(importlib.util.find_spec(package).submodule_search_locations[0])
    spec = importlib.util.spec_from_file_location(name, root / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def mmpose_bbox():
    return _load("mmpose", "structures/bbox/transforms.py", "_kpx_test_mmpose_bbox")


@functools.cache
def rtmlib_pre():
    return _load("rtmlib", "tools/pose_estimation/pre_processings.py", "_kpx_test_rtmlib_pre")


def fix_aspect_ratio(scale: np.ndarray, aspect_ratio: float) -> np.ndarray:
    """mmpose 1.3.2 ``TopdownAffine._fix_aspect_ratio`` (its module imports mmcv), for ``(n, 2)`` scales."""
    w, h = np.hsplit(scale, [1])
    return np.where(w > h * aspect_ratio, np.hstack([w, w / aspect_ratio]), np.hstack([h * aspect_ratio, h]))


def mmpose_crops(frame, boxes, input_size=(W, H), padding=1.25, udp=False, box_format="xyxy"):
    """mmpose's GetBBoxCenterScale + TopdownAffine for each box: ``(crops (n, h, w, C), centres, scales)``."""
    mm = mmpose_bbox()
    to_cs = mm.bbox_xyxy2cs if box_format == "xyxy" else mm.bbox_xywh2cs
    centres, scales = to_cs(boxes, padding=padding)
    scales = fix_aspect_ratio(scales, input_size[0] / input_size[1])
    crops = []
    for c, s in zip(centres, scales):
        m = mm.get_udp_warp_matrix(c, s, 0, input_size) if udp else mm.get_warp_matrix(c, s, 0, input_size)
        crops.append(cv2.warpAffine(frame, m, tuple(input_size), flags=cv2.INTER_LINEAR))
    return np.stack(crops), centres, scales


def random_frame(seed=0, channels=3, dtype=np.float32):
    return (np.random.default_rng(seed).random((*FRAME, channels)) * 255).astype(dtype)


def random_boxes(n, seed=0):
    """xyxy boxes over the frame, partly and wholly outside, thin, zero-width and zero-size."""
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2)) * [FRAME[1] + 100, FRAME[0] + 100] - 100
    wh = rng.random((n, 2)) * 300 + 0.5
    boxes = np.concatenate([xy, xy + wh], 1)
    special = [[700, 500, 900, 700], [-300, -200, -50, -20], [100, 100, 100, 300], [200, 150, 200, 150]]
    boxes[: min(n, 4)] = special[: min(n, 4)]
    return boxes.astype(np.float32)


def as_tensor(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None]


def hwc(crops: torch.Tensor) -> np.ndarray:
    return crops.permute(0, 2, 3, 1).numpy()


def ramp_frame() -> np.ndarray:
    """Three channels: x, y, 1. Bilinear sampling of a linear function returns the sample point itself."""
    ys, xs = np.mgrid[0 : FRAME[0], 0 : FRAME[1]].astype(np.float32)
    return np.stack([xs, ys, np.ones_like(xs)], -1)


def inside(crop_hwc: np.ndarray) -> np.ndarray:
    """Pixels of a ramp crop whose whole 2x2 cell is in the frame (channel 2 is exactly 1 there)."""
    return crop_hwc[..., 2] == 1.0


# --- against OpenCV with mmpose's matrices ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 32])
@pytest.mark.parametrize("udp", [False, True], ids=["msra", "udp"])
def test_float_frames_match_cv2_warpaffine_with_mmposes_matrices(udp, n):
    """Bound from OpenCV's fixed point: each sample point off by <= 1/64 + 1/1024 px per axis, so a bilinear value
    moves by at most (frame range) * (dx + dy). Measured with OpenCV 5.0 on float32 3-channel frames: 0.023 msra,
    0.019 udp (0..255 frames, 32 boxes), far under the bound: its float path no longer rounds to 1/32 px (see the
    ramp test)."""
    frame, boxes = random_frame(n), random_boxes(n, seed=n)
    crops, boxes_cs = topdown_crop(as_tensor(frame), torch.from_numpy(boxes), input_size=(W, H), udp=udp)
    want, centres, scales = mmpose_crops(frame, boxes, udp=udp)
    assert crops.shape == (n, 3, H, W) and crops.dtype == torch.float32
    bound = 255.0 * 2 * CV_COORD_ERROR
    real = scales.min(1) > 0  # mmpose's matrix is singular for a zero-size box: test_degenerate_boxes_are_nan_free
    assert np.abs(hwc(crops) - want)[real].max() <= bound
    np.testing.assert_allclose(boxes_cs.numpy(), np.concatenate([centres, scales], 1), rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("udp", [False, True], ids=["msra", "udp"])
def test_sample_points_match_cv2_on_a_ramp(udp):
    """The sharp form of the comparison: on a ramp frame each crop pixel holds the point it sampled. Interior
    points agree with OpenCV within its coordinate rounding (1/64 + 1/1024 px; OpenCV 5.0's 3-channel float path
    measured <= 2e-4 px). Its 2-channel path still rounds to 1/32 px: measured 0.0165 px, at the bound."""
    frame, boxes = ramp_frame(), random_boxes(32, seed=3)
    crops, _ = topdown_crop(as_tensor(frame), torch.from_numpy(boxes), input_size=(W, H), udp=udp)
    got = hwc(crops)
    want, _, scales = mmpose_crops(frame, boxes, udp=udp)
    two_channel, _, _ = mmpose_crops(np.ascontiguousarray(frame[..., :2]), boxes, udp=udp)
    mask = inside(got) & inside(want) & (scales.min(1) > 0)[:, None, None]  # not the zero-size box (singular)
    assert mask.sum() > 100_000
    err = np.abs(got[..., :2] - want[..., :2])[mask]
    err2 = np.abs(got[..., :2] - two_channel)[mask]
    assert err.max() <= CV_COORD_ERROR + 1e-3
    assert err2.max() <= CV_COORD_ERROR + 1e-3


def test_uint8_frames_equal_float_frames_and_cv2_within_rounding():
    """uint8 frames compute in float32 and return float32: the same numbers as the frame as float32. OpenCV returns
    uint8: rounded to the nearest level (0.5) on top of its coordinate rounding. Measured: 0.515."""
    frame, boxes = random_frame(1, dtype=np.uint8), random_boxes(32, seed=1)
    crops, boxes_cs = topdown_crop(as_tensor(frame), torch.from_numpy(boxes), input_size=(W, H))
    as_float, cs_float = topdown_crop(as_tensor(frame.astype(np.float32)), torch.from_numpy(boxes), input_size=(W, H))
    assert crops.dtype == torch.float32
    torch.testing.assert_close(crops, as_float, rtol=0, atol=0)
    torch.testing.assert_close(boxes_cs, cs_float, rtol=0, atol=0)
    want, _, scales = mmpose_crops(frame, boxes)
    real = scales.min(1) > 0
    assert np.abs(hwc(crops) - want)[real].max() <= 0.5 + 255.0 * 2 * CV_COORD_ERROR


def test_xywh_boxes_match_mmposes_bbox_xywh2cs():
    frame, xyxy = random_frame(2), random_boxes(8, seed=2)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1)
    crops, boxes_cs = topdown_crop(as_tensor(frame), torch.from_numpy(xywh), input_size=(W, H), box_format="xywh")
    want, centres, scales = mmpose_crops(frame, xywh, box_format="xywh")
    real = scales.min(1) > 0
    assert np.abs(hwc(crops) - want)[real].max() <= 255.0 * 2 * CV_COORD_ERROR
    np.testing.assert_allclose(boxes_cs.numpy(), np.concatenate([centres, scales], 1), rtol=1e-6, atol=1e-4)


def test_matches_rtmlibs_top_down_affine():
    """rtmlib (RTMPose deployment): bbox_xyxy2cs(padding=1.25), then top_down_affine (aspect fix, warp)."""
    pre = rtmlib_pre()
    frame, boxes = random_frame(4), random_boxes(16, seed=4)
    crops, boxes_cs = topdown_crop(as_tensor(frame), torch.from_numpy(boxes), input_size=(W, H))
    for k, box in enumerate(boxes):
        centre, scale = pre.bbox_xyxy2cs(box, padding=1.25)
        crop, scale = pre.top_down_affine((W, H), scale, centre, frame)
        if k != 3:  # the zero-size box: a singular matrix in rtmlib too
            assert np.abs(hwc(crops[k : k + 1])[0] - crop).max() <= 255.0 * 2 * CV_COORD_ERROR
        np.testing.assert_allclose(boxes_cs[k].numpy(), np.r_[centre, scale], rtol=1e-6, atol=1e-4)


# --- definitions: formats, round trips, degenerate boxes ---------------------------------------------------------


def test_box_formats_and_boxes_cs_fed_back_give_the_same_crops():
    frame = as_tensor(random_frame(5))
    xyxy = torch.tensor([[100.0, 50.0, 300.0, 400.0], [10.5, 300.25, 250.0, 330.0]])
    xywh = torch.cat([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1)
    cs = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) * 0.5, xyxy[:, 2:] - xyxy[:, :2]], 1)
    crops, boxes_cs = topdown_crop(frame, xyxy, input_size=(W, H))
    for boxes, fmt in ((xywh, "xywh"), (cs, "cs")):
        got, got_cs = topdown_crop(frame, boxes, input_size=(W, H), box_format=fmt)
        torch.testing.assert_close(got, crops, rtol=0, atol=1e-3)
        torch.testing.assert_close(got_cs, boxes_cs, rtol=1e-6, atol=1e-5)
    # padding applies to "cs" too; mmpose's already padded, fixed box with padding=1.0 gives the same crop
    again, again_cs = topdown_crop(frame, boxes_cs, input_size=(W, H), box_format="cs", padding=1.0)
    torch.testing.assert_close(again, crops, rtol=0, atol=0)
    torch.testing.assert_close(again_cs, boxes_cs, rtol=0, atol=0)
    assert boxes_cs[0, 3] / boxes_cs[0, 2] == pytest.approx(H / W)


@pytest.mark.parametrize("udp", [False, True], ids=["msra", "udp"])
def test_round_trip_through_heatmap_to_image_is_exact(udp):
    """frame -> crop -> a keypoint at crop pixel (j, i) -> heatmap_to_image(kp, boxes_cs, (h, w), "cs", mode)
    lands on the frame point that pixel sampled (read off a ramp frame), within float32 rounding of the bilinear
    blend of coordinates up to 640 (ulp 6e-5)."""
    frame, boxes = ramp_frame(), random_boxes(12, seed=6)
    crops, boxes_cs = topdown_crop(as_tensor(frame), torch.from_numpy(boxes), input_size=(W, H), udp=udp)
    ii, jj = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    kp = torch.stack([jj, ii], -1).reshape(1, -1, 2).expand(len(boxes), -1, -1)
    mode = "udp" if udp else "msra"
    mapped = heatmap_to_image(kp, boxes_cs, (H, W), box_format="cs", scale_mode=mode).reshape(len(boxes), H, W, 2)
    got = hwc(crops)
    mask = inside(got)
    assert mask.sum() > 50_000
    np.testing.assert_allclose(mapped.numpy()[mask], got[..., :2][mask], rtol=0, atol=3e-4)
    # the corner pixel samples the box corner exactly: (cx - sw/2, cy - sh/2), in both modes
    k = int(np.argmax(mask[:, 0, 0]))
    corner = boxes_cs[k, :2] - 0.5 * boxes_cs[k, 2:]
    torch.testing.assert_close(torch.from_numpy(got[k, 0, 0, :2]), corner, rtol=0, atol=1e-4)


def test_msra_half_pixel_offset_is_measured_not_hidden():
    """MSRA (get_warp_matrix) puts crop pixel j at x0 + j * sw / w: the crop's pixel grid starts on the box corner.
    A pixel-area-consistent resampling would put it at x0 + (j + 0.5) * sw / w - 0.5: MSRA is off by
    (sw / w - 1) / 2 frame px (0.167 px for a 256-px wide box to 192). kpx keeps mmpose's map; heatmap_to_image
    "msra" uses the same one, so keypoints round-trip exactly (previous test). UDP maps the box edges to the
    centres of the first and last crop pixels instead."""
    frame = ramp_frame()
    box = torch.tensor([[100.0, 50.0, 356.0, 391.3333]])  # 256 x 341.33: aspect 0.75 already
    crops, boxes_cs = topdown_crop(as_tensor(frame), box, input_size=(W, H), padding=1.0)
    step = float(boxes_cs[0, 2]) / W
    x0 = float(boxes_cs[0, 0] - boxes_cs[0, 2] / 2)
    sampled = hwc(crops)[0, 0, :4, 0]
    np.testing.assert_allclose(sampled, x0 + np.arange(4) * step, atol=1e-4)
    area_consistent = x0 + (np.arange(4) + 0.5) * step - 0.5
    np.testing.assert_allclose(area_consistent - sampled, (step - 1) / 2, atol=1e-4)
    assert (step - 1) / 2 == pytest.approx(1 / 6, abs=1e-3)


def test_degenerate_boxes_are_nan_free():
    """Zero size: a constant crop, the bilinear value at the box centre. Zero width only: the aspect fix widens it
    from the height, an ordinary crop. (mmpose's getAffineTransform is singular for a zero-size box.)"""
    frame = random_frame(7)
    boxes = torch.tensor([[200.5, 150.25, 200.5, 150.25], [100.0, 100.0, 100.0, 300.0], [50.0, 60.0, 40.0, 60.0]])
    crops, boxes_cs = topdown_crop(as_tensor(frame), boxes, input_size=(W, H))
    assert torch.isfinite(crops).all() and torch.isfinite(boxes_cs).all()
    x, y = 200.5, 150.25
    x0, y0, fx, fy = int(x), int(y), x - int(x), y - int(y)
    centre = (
        frame[y0, x0] * (1 - fx) * (1 - fy)
        + frame[y0, x0 + 1] * fx * (1 - fy)
        + frame[y0 + 1, x0] * (1 - fx) * fy
        + frame[y0 + 1, x0 + 1] * fx * fy
    )
    np.testing.assert_allclose(hwc(crops)[0], np.broadcast_to(centre, (H, W, 3)), rtol=1e-5)
    torch.testing.assert_close(boxes_cs[1, 2:], torch.tensor([200 * 1.25 * W / H, 200 * 1.25]))
    assert crops[1].std() > 10  # a real crop
    assert boxes_cs[2, 2] == 0 and boxes_cs[2, 3] == 0  # x1 < x0, zero height: scale (-12.5, 0) fixed to (0, 0)


def test_boxes_outside_give_the_border_value_and_mean_std_apply_after():
    frame = as_tensor(random_frame(8))
    boxes = torch.tensor([[-400.0, -300.0, -200.0, -100.0], [100.0, 100.0, 300.0, 300.0]])
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    raw, raw_cs = topdown_crop(frame, boxes, input_size=(W, H))
    assert (raw[0] == 0).all()
    norm, norm_cs = topdown_crop(frame, boxes, input_size=(W, H), mean=mean, std=std)
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(norm, (raw - m) / s, rtol=0, atol=0)
    torch.testing.assert_close(norm_cs, raw_cs, rtol=0, atol=0)
    torch.testing.assert_close(norm[0], (-m / s).expand(3, H, W))
    only_mean, _ = topdown_crop(frame, boxes, input_size=(W, H), mean=mean)
    torch.testing.assert_close(only_mean, raw - m, rtol=0, atol=0)


def test_batch_index_picks_the_frame_and_none_is_frame_zero():
    frames = torch.from_numpy(np.stack([random_frame(9), random_frame(10)])).permute(0, 3, 1, 2)
    boxes = torch.from_numpy(random_boxes(6, seed=11))
    index = torch.tensor([1, 0, 1, 1, 0, 0])
    crops, boxes_cs = topdown_crop(frames, boxes, index, input_size=(W, H))
    for f in (0, 1):
        alone, alone_cs = topdown_crop(frames[f : f + 1], boxes[index == f], input_size=(W, H))
        torch.testing.assert_close(crops[index == f], alone, rtol=0, atol=0)
        torch.testing.assert_close(boxes_cs[index == f], alone_cs, rtol=0, atol=0)
    none, _ = topdown_crop(frames, boxes, None, input_size=(W, H))
    zeros, _ = topdown_crop(frames, boxes, torch.zeros(6, dtype=torch.int64), input_size=(W, H))
    torch.testing.assert_close(none, zeros, rtol=0, atol=0)
    int32, _ = topdown_crop(frames, boxes, index.int(), input_size=(W, H))
    torch.testing.assert_close(int32, crops, rtol=0, atol=0)


@pytest.mark.parametrize("n", [0, 1, 32])
def test_box_counts_and_the_module(n):
    frame = as_tensor(random_frame(12))
    boxes = torch.from_numpy(random_boxes(max(n, 1), seed=12)[:n])
    crops, boxes_cs = topdown_crop(frame, boxes, input_size=(W, H))
    assert crops.shape == (n, 3, H, W) and boxes_cs.shape == (n, 4)
    module = TopdownCrop(input_size=(W, H))
    for got, want in zip(module(frame, boxes), (crops, boxes_cs), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert "input_size=(192, 256)" in repr(module)


def test_half_frames_compute_in_float32():
    frame = as_tensor(random_frame(13)).half()
    boxes = torch.from_numpy(random_boxes(4, seed=13))
    crops, boxes_cs = topdown_crop(frame, boxes, input_size=(W, H))
    want, want_cs = topdown_crop(frame.float(), boxes, input_size=(W, H))
    assert crops.dtype == boxes_cs.dtype == torch.float16
    torch.testing.assert_close(crops, want.half(), rtol=0, atol=0)
    torch.testing.assert_close(boxes_cs, want_cs.half(), rtol=0, atol=0)


# --- bad input ----------------------------------------------------------------------------------------------------

FRAME_T = torch.zeros(2, 3, 20, 30)
BOXES_T = torch.tensor([[1.0, 2.0, 10.0, 12.0]])


def _huge(shape: tuple[int, ...]) -> torch.Tensor:
    """A uint8 frames tensor of ``shape`` that holds one byte (an expanded view): for the size checks."""
    return torch.zeros((1,) * len(shape), dtype=torch.uint8).expand(shape)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"images": torch.zeros(3, 20, 30)}, r"images must have shape \(F, C, H, W\).*\(3, 20, 30\)"),
        ({"images": torch.zeros(2, 3, 20, 30, dtype=torch.int64)}, "images must be float32.*uint8; got torch.int64"),
        ({"images": np.zeros((2, 3, 20, 30))}, "images must be a torch.Tensor"),
        ({"boxes": torch.zeros(4)}, r"boxes must have shape \(N, 4\).*\(4,\)"),
        ({"boxes": torch.zeros(1, 3)}, r"boxes must have shape \(N, 4\).*\(1, 3\)"),
        ({"boxes": torch.zeros(1, 4, dtype=torch.int64)}, "boxes must be a floating tensor"),
        ({"batch_index": torch.tensor([2])}, r"batch_index must be in \[0, F\) = \[0, 2\).*2 to 2"),
        ({"batch_index": torch.tensor([-1])}, r"batch_index must be in \[0, F\)"),
        ({"batch_index": torch.tensor([0, 1])}, r"batch_index must have shape \(N,\) = \(1,\)"),
        ({"batch_index": torch.tensor([0.0])}, "batch_index must be an int64"),
        ({"batch_index": [0]}, "batch_index must be None or an int64 tensor"),
        ({"input_size": (192,)}, "input_size must be two ints"),
        ({"input_size": (192, 256, 3)}, "input_size must be two ints"),
        ({"input_size": (0, 256)}, "input_size must be two ints"),
        ({"input_size": (192.0, 256)}, "input_size must be two ints"),
        ({"input_size": (True, 256)}, "input_size must be two ints"),
        ({"input_size": 192}, "input_size must be two ints"),
        ({"input_size": (1, 256), "udp": True}, "input_size must be >= 2 on both axes with udp=True"),
        ({"padding": 0.0}, "padding must be a finite number > 0"),
        ({"padding": -1.25}, "padding must be a finite number > 0"),
        ({"padding": float("nan")}, "padding must be a finite number > 0"),
        ({"padding": torch.tensor(1.25)}, "padding must be a finite number > 0"),
        ({"box_format": "ltrb"}, r"box_format must be 'xywh' \(x0, y0, w, h\), 'xyxy' \(x0, y0, x1, y1\) or 'cs'"),
        ({"mean": (1.0, 2.0)}, "mean must have one value per channel, 3; got 2"),
        ({"std": (1.0, 2.0, 3.0, 4.0)}, "std must have one value per channel, 3; got 4"),
        ({"std": (1.0, 0.0, 3.0)}, "std must be finite and > 0"),
        ({"mean": (1.0, float("nan"), 3.0)}, "mean must be finite"),
        ({"mean": "abc"}, "mean must be a sequence of 3 floats"),
        # over the int32 indices' 2^31 - 1 padded values (expanded views: no memory), both layouts
        ({"images": _huge((1, 3, 27000, 27000))}, "images too large.*2147483647.*crop from a downscaled frame"),
        ({"images": _huge((1, 27000, 27000, 3)), "channels_last": True}, "images too large.*2187486027"),
        ({"images": _huge((400, 3, 1080, 1920))}, r"images too large.*400 frame\(s\).*at most 343 such frames"),
    ],
)
def test_bad_input_is_a_value_error_naming_the_argument(kwargs, match):
    args = {"images": FRAME_T, "boxes": BOXES_T, "batch_index": None, "input_size": (W, H)} | kwargs
    with pytest.raises(ValueError, match=match):
        topdown_crop(**args)


def test_module_validates_at_construction():
    with pytest.raises(ValueError, match="input_size"):
        TopdownCrop(input_size=(0, 1))
    with pytest.raises(ValueError, match="padding"):
        TopdownCrop(input_size=(W, H), padding=0)
    with pytest.raises(ValueError, match="box_format"):
        TopdownCrop(input_size=(W, H), box_format="x")


def test_int64_code_is_onnxs():
    module = importlib.import_module("custom_ops.ops.topdown_crop")
    assert module.INT64 == TensorProto.INT64


# --- ONNX: dynamic F, N, H, W with batch_index at every opset ---------------------------------------------------


class _Crop(torch.nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs

    def forward(self, images, boxes, batch_index):
        return topdown_crop(images, boxes, batch_index, **self.kwargs)


def _inputs(frames: int, n: int, height: int, width: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(frames, 3, height, width, generator=g) * 255
    xy = torch.rand(n, 2, generator=g) * torch.tensor([width + 20.0, height + 20.0]) - 20
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 60 + 1], 1)
    index = torch.randint(0, frames, (n,), generator=g)
    return images, boxes, index


@functools.cache
def _traced(udp: bool, trace_opset: int):
    model = _Crop(input_size=(24, 32), udp=udp, mean=(120.0, 110.0, 100.0), std=(60.0, 55.0, 50.0))
    dyn = ({0: "F", 2: "H", 3: "W"}, {0: "N"}, {0: "N"})
    return model, trace(model, _inputs(2, 5, 40, 50, 0), opset=trace_opset, dynamic_shapes=dyn)


@pytest.mark.parametrize("udp", [False, True], ids=["msra", "udp"])
@pytest.mark.parametrize("emit", ["function", "inline"])
@pytest.mark.parametrize("opset", range(MIN_OPSET, MAX_OPSET + 1))
def test_onnx_at_every_opset_with_dynamic_frames_boxes_and_sizes(opset, emit, udp):
    """The same body at opsets 15-21; F, N (0 included), H and W dynamic; a batch_index out of range reads no
    frame in the graph (the border value), where the functional raises."""
    model, raw = _traced(udp, max(opset, EXPORT_OPSET))  # 18 serves 15-18 (lowered), as the export matrix
    proto = finalize(raw, opset=opset, emit=emit)
    onnx.checker.check_model(proto, full_check=True)
    assert ("TopdownCrop" in {n.op_type for n in kpx_nodes(proto)}) == (emit == "function")
    session = ort_session(proto)
    for frames, n, height, width, seed in ((2, 5, 40, 50, 0), (3, 9, 61, 47, 1), (1, 0, 20, 30, 2), (4, 1, 7, 9, 3)):
        feeds = _inputs(frames, n, height, width, seed)
        with torch.no_grad():
            want = model(*feeds)
        got = run_ort(session, *feeds)
        for g, w in zip(got, want, strict=True):
            assert g.shape == tuple(w.shape) and g.dtype == np.float32
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-5, atol=1e-4)
    images, boxes, _ = _inputs(2, 3, 40, 50, 4)
    crops, _ = run_ort(session, images, boxes, torch.tensor([2, -1, 1]))
    border = (-torch.tensor([120.0, 110.0, 100.0]) / torch.tensor([60.0, 55.0, 50.0])).view(3, 1, 1)
    np.testing.assert_allclose(crops[:2], border.expand(2, 3, 32, 24).numpy(), rtol=1e-6)
    in_range, _ = model(images, boxes[2:], torch.tensor([1]))
    np.testing.assert_allclose(crops[2:], in_range.numpy(), rtol=1e-5, atol=1e-4)


# --- the alternatives the body was chosen over --------------------------------------------------------------------


def _one_node_model(node, inputs, opset):
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(n, t, None) for n, t in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def test_onnx_alternatives():
    """GridSample matches the body up to its coordinate normalisation (it needs frames gathered per box and opset
    16+, "linear" from 20); RoiAlign (one sample per bin) matches inside the frame but replicates the edge in the
    1-px band outside it, where OpenCV and mmpose blend with 0: rejected."""
    frame = random_frame(14)[:120, :160]
    boxes = torch.tensor([[-10.25, -20.25, 50.0, 100.0], [40.5, 10.25, 150.0, 119.0]])
    w, h = 48, 64
    crops, boxes_cs = topdown_crop(as_tensor(frame), boxes, input_size=(w, h), padding=1.0)
    origin = boxes_cs[:, :2] - 0.5 * boxes_cs[:, 2:]
    step = boxes_cs[:, 2:] / torch.tensor([float(w), float(h)])
    xs = origin[:, :1] + torch.arange(w) * step[:, :1]  # (N, w)
    ys = origin[:, 1:] + torch.arange(h) * step[:, 1:]  # (N, h)
    images = as_tensor(frame).expand(len(boxes), -1, -1, -1).contiguous()  # GridSample: one frame per box
    gx = 2 * xs / (frame.shape[1] - 1) - 1
    gy = 2 * ys / (frame.shape[0] - 1) - 1
    grid = torch.stack([gx[:, None, :].expand(-1, h, -1), gy[:, :, None].expand(-1, -1, w)], -1).contiguous()
    for opset, mode in ((16, "bilinear"), (20, "linear")):
        node = helper.make_node("GridSample", ["x", "grid"], ["y"], mode=mode, padding_mode="zeros", align_corners=1)
        proto = _one_node_model(node, [("x", TensorProto.FLOAT), ("grid", TensorProto.FLOAT)], opset)
        (got,) = run_ort(ort_session(proto), images, grid)
        assert np.abs(got - crops.numpy()).max() < 0.05  # normalised coordinates: ~1e-4 px of rounding
    # RoiAlign, half_pixel (opset 16): bin centre of bin j is x1 - 0.5 + (j + 0.5) * bin = origin + j * step
    rois = torch.cat([origin - 0.5 * step + 0.5, origin - 0.5 * step + 0.5 + step * torch.tensor([w, h])], 1)
    attrs = {"sampling_ratio": 1, "spatial_scale": 1.0, "coordinate_transformation_mode": "half_pixel"}
    node = helper.make_node("RoiAlign", ["x", "rois", "idx"], ["y"], output_height=h, output_width=w, **attrs)
    proto = _one_node_model(
        node, [("x", TensorProto.FLOAT), ("rois", TensorProto.FLOAT), ("idx", TensorProto.INT64)], 16
    )
    (got,) = run_ort(ort_session(proto), as_tensor(frame), rois, torch.zeros(len(boxes), dtype=torch.int64))
    band = ((xs > -1) & (xs < 0))[:, None, None, :].expand_as(crops)  # within 1 px left of the frame
    interior = ((xs >= 0) & (xs <= frame.shape[1] - 1))[:, None, None, :] & ((ys >= 0) & (ys <= frame.shape[0] - 1))[
        :, None, :, None
    ]
    interior = interior.expand_as(crops)
    assert band.any() and interior.any()
    assert np.abs(got - crops.numpy())[interior.numpy()].max() < 0.05
    assert np.abs(got - crops.numpy())[band.numpy()].max() > 10  # edge replicated instead of blended with 0


# --- the bilinear itself, bit for bit ----------------------------------------------------------------------------


def bounds_checked_bilinear(frames: np.ndarray, index: np.ndarray, boxes_cs: np.ndarray, size, udp: bool):
    """The textbook float32 bilinear, independent of the op's padded-table indexing: each of the four neighbours
    read with explicit bounds checks (0 outside the frame or for a frame index outside ``[0, F)``), sample points
    ``x0 + j * sw / w`` from ``boxes_cs``, blended in the documented order. ``frames (F, C, H, W)`` ->
    ``(N, C, h, w)``."""
    n_frames, _, height, width = frames.shape
    w, h = size
    with np.errstate(invalid="ignore"):
        origin = boxes_cs[:, :2] - boxes_cs[:, 2:] * np.float32(0.5)
        step = boxes_cs[:, 2:] / (np.array([w, h], np.float32) - np.float32(udp))
        xs = origin[:, :1] + np.arange(w, dtype=np.float32) * step[:, :1]  # (N, w)
        ys = origin[:, 1:] + np.arange(h, dtype=np.float32) * step[:, 1:]  # (N, h)
        x0, y0 = np.floor(xs), np.floor(ys)
        fx, fy = (xs - x0)[:, None, None, :], (ys - y0)[:, None, :, None]
    out = []
    for k, f in enumerate(index):

        def read(rows, cols, f=f):
            ok = (rows >= 0) & (rows < height)
            ok = ok[:, None] & ((cols >= 0) & (cols < width))[None, :] & (0 <= f < n_frames)
            r = np.where(ok, rows[:, None], 0).astype(np.int64)
            c = np.where(ok, cols[None, :], 0).astype(np.int64)
            picked = frames[min(max(f, 0), n_frames - 1)][:, r, c] if n_frames else np.zeros((3, *ok.shape))
            return np.where(ok, picked, np.float32(0)).astype(np.float32)

        v00, v01 = read(y0[k], x0[k]), read(y0[k], x0[k] + 1)
        v10, v11 = read(y0[k] + 1, x0[k]), read(y0[k] + 1, x0[k] + 1)
        wx, wy = fx[k], fy[k]
        top = v00 * (np.float32(1) - wx) + v01 * wx
        bottom = v10 * (np.float32(1) - wx) + v11 * wx
        out.append(top * (np.float32(1) - wy) + bottom * wy)
    return np.stack(out) if out else np.zeros((0, frames.shape[1], h, w), np.float32)


def edge_boxes(height: int, width: int) -> torch.Tensor:
    """xyxy boxes across every edge and corner of a frame, wholly outside, inside, a NaN box and a huge one."""
    return torch.tensor(
        [
            [-30.0, -25.0, 20.0, 30.0],  # top-left corner
            [width - 20.0, height - 15.0, width + 25.0, height + 40.0],  # bottom-right corner
            [-5.5, 10.25, width + 5.5, height - 10.0],  # left and right edges
            [10.0, -0.75, 30.0, height + 0.75],  # top and bottom edges, within the 1-px band
            [width + 20.0, 2.0, width + 60.0, 40.0],  # wholly outside
            [5.3, 6.7, 21.9, 17.1],  # inside
            [float("nan"), 1.0, 5.0, 9.0],
            [1e30, 2.0, 2e30, 9.0],
        ]
    )


@pytest.mark.parametrize("udp", [False, True], ids=["msra", "udp"])
def test_bilinear_equals_a_bounds_checked_oracle_bit_for_bit(udp):
    """Eager and in the graph, frame edges, the 1-px band, boxes outside, NaN and huge boxes, and a frame index
    outside [0, F) in the graph (the reference reads zeros there too): the padded-table indexing reads exactly the
    values the bounds-checked oracle reads and blends them in the same float32 order, so the crops are identical
    (NaN where the oracle has NaN). ORT evaluates the same IEEE float32 ops: equal too (measured max difference 0)."""
    module = importlib.import_module("custom_ops.ops.topdown_crop")
    frames = torch.rand(2, 3, 40, 50, generator=torch.Generator().manual_seed(21)) * 255
    frames[1, 2, 0, 49] = float("nan")  # a NaN in a corner pixel of frame 1
    boxes = torch.cat([edge_boxes(40, 50), edge_boxes(40, 50)[:6]])
    index = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 2, -1, 0, 1, 5, 1])
    size = [24, 32]
    crops, boxes_cs = module.reference(frames, boxes, index, size, 1.25, 1, int(udp))
    want = bounds_checked_bilinear(frames.numpy(), index.numpy(), boxes_cs.numpy(), size, udp)
    np.testing.assert_array_equal(crops.numpy(), want)  # NaNs in the same places
    assert np.isnan(want).any() and (want[8:10] == 0).all() and (want[4] == 0).all()
    valid = (index >= 0) & (index < 2)
    eager, _ = topdown_crop(frames, boxes[valid], index[valid], input_size=size, udp=udp)
    np.testing.assert_array_equal(eager.numpy(), want[valid.numpy()])
    model = _Crop(input_size=tuple(size), udp=udp)
    dyn = ({0: "F", 2: "H", 3: "W"}, {0: "N"}, {0: "N"})
    raw = trace(model, (frames, boxes[:3], index[:3]), opset=EXPORT_OPSET, dynamic_shapes=dyn)
    for emit in ("function", "inline"):
        (got, _) = run_ort(ort_session(finalize(raw, opset=EXPORT_OPSET, emit=emit)), frames, boxes, index)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("emit", ["function", "inline"])
def test_zero_frames_and_one_pixel_frames_in_the_graph(emit):
    """F = 0: every box reads no frame, so every crop is the border value (the body pads an empty frame axis to one
    zero frame: no out-of-range read, no error). A 1x1 frame: the oracle's bilinear, bit for bit."""
    model = _Crop(input_size=(12, 16))
    dyn = ({0: "F", 2: "H", 3: "W"}, {0: "N"}, {0: "N"})
    images, boxes, index = _inputs(2, 3, 20, 30, 7)
    session = ort_session(
        finalize(trace(model, (images, boxes, index), opset=21, dynamic_shapes=dyn), opset=21, emit=emit)
    )
    crops, boxes_cs = run_ort(session, torch.zeros(0, 3, 20, 30), boxes, torch.tensor([0, 1, 0]))
    assert crops.shape == (3, 3, 16, 12) and (crops == 0).all()
    np.testing.assert_allclose(boxes_cs, model(images, boxes, index)[1].numpy(), rtol=1e-6)
    eager, _ = topdown_crop(torch.zeros(0, 3, 20, 30), boxes, input_size=(12, 16))  # None: frame 0, absent
    assert (eager == 0).all()
    pixel = torch.full((1, 3, 1, 1), 100.0)
    tiny = torch.tensor([[-1.0, -1.0, 1.0, 1.0]])
    (got, got_cs) = run_ort(session, pixel, tiny, torch.tensor([0]))
    want = bounds_checked_bilinear(pixel.numpy(), np.array([0]), got_cs, (12, 16), False)
    np.testing.assert_array_equal(got, want)
    assert got.max() == 100.0 and got.min() < 100.0


# --- frames as decoded: (F, H, W, C) and uint8, read by the node as they are ---------------------------------------


def test_channels_last_and_uint8_frames_give_the_same_crops_eagerly():
    """``channels_last`` is a layout, not another crop: (F, H, W, C) frames give the crops of the same frames
    (F, C, H, W), bit for bit, and uint8 frames those of their float32 values; a wrong rank or the channel
    count of mean/std is checked on the channel axis of the layout."""
    images, boxes, index = _inputs(2, 6, 40, 50, 11)
    images = images.round()
    want = topdown_crop(images, boxes, index, input_size=(24, 32), mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0))
    nhwc = images.permute(0, 2, 3, 1).contiguous()
    for frames in (nhwc, nhwc.to(torch.uint8)):
        got = topdown_crop(frames, boxes, index, input_size=(24, 32), mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0),
                           channels_last=True)  # fmt: skip
        assert got[0].dtype == torch.float32
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
    module = TopdownCrop(input_size=(24, 32), channels_last=True)
    torch.testing.assert_close(
        module(nhwc, boxes, index)[0], topdown_crop(images, boxes, index, input_size=(24, 32))[0]
    )
    with pytest.raises(ValueError, match=r"mean must have one value per channel, 3"):
        topdown_crop(nhwc, boxes, index, input_size=(24, 32), mean=(1.0,) * 50, channels_last=True)
    with pytest.raises(ValueError, match=r"images must have shape \(F, H, W, C\) \(channels_last=True\)"):
        topdown_crop(nhwc[0], boxes, index, input_size=(24, 32), channels_last=True)


@functools.cache
def _traced_layout(channels_last: bool, dtype: torch.dtype, trace_opset: int = EXPORT_OPSET):
    model = _Crop(input_size=(24, 32), mean=(120.0, 110.0, 100.0), std=(60.0, 55.0, 50.0), channels_last=channels_last)
    images, boxes, index = _inputs(2, 5, 40, 50, 0)
    if channels_last:
        images = images.permute(0, 2, 3, 1).contiguous()
    spatial = {1: "H", 2: "W"} if channels_last else {2: "H", 3: "W"}
    dyn = ({0: "F", **spatial}, {0: "N"}, {0: "N"})
    return model, trace(model, (images.to(dtype), boxes, index), opset=trace_opset, dynamic_shapes=dyn)


@pytest.mark.parametrize("emit", ["function", "inline"])
@pytest.mark.parametrize("opset", [MIN_OPSET, MAX_OPSET])
@pytest.mark.parametrize(
    ("channels_last", "dtype"),
    [(True, torch.uint8), (True, torch.float32), (False, torch.uint8)],
    ids=["nhwc-uint8", "nhwc-float32", "nchw-uint8"],
)
def test_frames_as_decoded_in_the_graph(channels_last, dtype, opset, emit):
    """The file's frames input keeps the layout and dtype it was exported with (no cast, no transpose before
    the node: ``images`` is the graph input); its crops equal the float32 NCHW reference bit for bit, at other
    frame sizes and counts, with an out-of-range frame index reading the border value."""
    _, raw = _traced_layout(channels_last, dtype, max(opset, EXPORT_OPSET))
    proto = finalize(raw, opset=opset, emit=emit)
    onnx.checker.check_model(proto, full_check=True)
    want_type = TensorProto.UINT8 if dtype == torch.uint8 else TensorProto.FLOAT
    assert proto.graph.input[0].type.tensor_type.elem_type == want_type
    if emit == "function":
        (node,) = [n for n in kpx_nodes(proto) if n.op_type == "TopdownCrop"]
        assert node.input[0] == proto.graph.input[0].name  # the frames go into the node as they are
    session = ort_session(proto)
    for frames, n, height, width, seed in ((2, 5, 40, 50, 0), (3, 9, 61, 47, 1), (1, 0, 20, 30, 2)):
        images, boxes, index = _inputs(frames, n, height, width, seed)
        images = images.round()
        want = _Crop(input_size=(24, 32), mean=(120.0, 110.0, 100.0), std=(60.0, 55.0, 50.0))(images, boxes, index)
        fed = images.permute(0, 2, 3, 1).contiguous() if channels_last else images
        got = run_ort(session, fed.to(dtype), boxes, index)
        np.testing.assert_array_equal(got[0], want[0].numpy())
        np.testing.assert_array_equal(got[1], want[1].numpy())
    images, boxes, _ = _inputs(2, 2, 40, 50, 4)
    fed = images.permute(0, 2, 3, 1).contiguous() if channels_last else images
    crops, _ = run_ort(session, fed.to(dtype), boxes, torch.tensor([5, 1]))
    border = (-torch.tensor([120.0, 110.0, 100.0]) / torch.tensor([60.0, 55.0, 50.0])).view(3, 1, 1)
    np.testing.assert_allclose(crops[0], border.expand(3, 32, 24).numpy(), rtol=1e-6)


def test_uint8_nhwc_frames_on_openvino():
    """OpenVINO (inline export) reads the uint8 (F, H, W, C) file: the crops match the reference within the op's
    registered float32 tolerance (OpenVINO's CPU plugin fuses the blend and the normalisation: measured 2e-5 on
    normalised values, i.e. ~1e-3 grey levels, not bit for bit)."""
    pytest.importorskip("openvino")
    from export_tools.runtimes import make_runner

    model, raw = _traced_layout(True, torch.uint8)
    runner = make_runner("openvino", finalize(raw, opset=EXPORT_OPSET, emit="inline").SerializeToString())
    for frames, n, height, width, seed in ((2, 5, 40, 50, 0), (1, 7, 72, 96, 5)):
        images, boxes, index = _inputs(frames, n, height, width, seed)
        images = images.round()
        want = model.__class__(**{**model.kwargs, "channels_last": False})(images, boxes, index)
        fed = images.permute(0, 2, 3, 1).contiguous().to(torch.uint8)
        got = runner.run([fed.numpy(), boxes.numpy(), index.numpy()])
        rtol, atol = get_op("topdown_crop").tolerances[torch.float32]
        np.testing.assert_allclose(got[0], want[0].numpy(), rtol=rtol, atol=atol)
        np.testing.assert_allclose(got[1], want[1].numpy(), rtol=rtol, atol=atol)


# --- the int32 index limit, at its size --------------------------------------------------------------------------


def _available_gib() -> float:
    """Memory this test may use: the smaller of the system's available memory and the cgroup's limit (0 when
    neither can be read)."""
    found = []
    try:
        with open("/proc/meminfo") as info:
            fields = dict(line.split(":", 1) for line in info)
        found.append(int(fields["MemAvailable"].split()[0]) * 2**10)
    except (OSError, KeyError, ValueError):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    try:
        with open("/sys/fs/cgroup/memory.max") as limit:
            text = limit.read().strip()
        if text != "max":
            found.append(int(text))
    except (OSError, ValueError):
        pass
    return min(found) / 2**30 if found else 0.0


@pytest.mark.skipif(_available_gib() < 5, reason="needs ~3 GiB: ORT's zero-padded copy of a 2.1 GB frame")
@pytest.mark.parametrize("channels_last", [True, False], ids=["nhwc", "nchw"])
def test_int32_indices_are_exact_up_to_the_limit_and_nan_past_it(channels_last):
    """The body's int32 indices at the frames they stop at: the largest square 3-channel uint8 frame whose
    zero-padded size fits in 2^31 - 1 values (26751 px; crops at its far corner, the largest indices) equals an
    independent bilinear bit for bit; one pixel larger (26752 px, 6428 values over) gives NaN crops, never crops
    read through wrapped indices (eagerly a ValueError). Both layouts (their strides differ)."""
    onnxruntime = pytest.importorskip("onnxruntime")
    size = (48, 64)
    model = _Crop(input_size=size, channels_last=channels_last)
    sample = torch.zeros((1, 40, 50, 3) if channels_last else (1, 3, 40, 50), dtype=torch.uint8)
    dyn = ({0: "F", 1: "H", 2: "W"} if channels_last else {0: "F", 2: "H", 3: "W"}, {0: "N"}, {0: "N"})
    proto = finalize(trace(model, (sample, BOXES_T, torch.zeros(1, dtype=torch.int64)), opset=18, dynamic_shapes=dyn),
                     opset=18, emit="function")  # fmt: skip
    options = onnxruntime.SessionOptions()
    options.enable_cpu_mem_arena = False  # one 2.1 GB padded table alive at a time, not one per run
    session = onnxruntime.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for side, fits in ((26751, True), (26752, False)):
        assert (3 * (side + 3) ** 2 <= 2**31 - 1) == fits
        frame = np.zeros((1, side, side, 3) if channels_last else (1, 3, side, side), np.uint8)
        hwc = frame[0] if channels_last else frame[0].transpose(1, 2, 0)  # a view
        hwc[-200:, -300:] = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
        # one box inside the textured corner, one across the frame's bottom-right edge
        boxes = torch.tensor([[-280.0, -180.0, -150.0, -20.0], [-100.0, -90.0, 30.0, 40.0]]) + side
        crops, _ = session.run(None, {"images": frame, "boxes": boxes.numpy(), "batch_index": np.zeros(2, np.int64)})
        if fits:
            _, boxes_cs = topdown_crop(torch.zeros(1, 3, 1, 1), boxes, input_size=size)  # no pixels needed
            chw = frame.transpose(0, 3, 1, 2) if channels_last else frame  # a view
            want = bounds_checked_bilinear(chw, np.zeros(2, np.int64), boxes_cs.numpy(), size, udp=False)
            assert (want != 0).sum() > 10_000  # the crops read the texture
            np.testing.assert_array_equal(crops, want)
        else:
            assert np.isnan(crops).all()
            with pytest.raises(ValueError, match="images too large"):
                topdown_crop(torch.from_numpy(frame), boxes, input_size=size, channels_last=channels_last)
        del frame, hwc, crops
