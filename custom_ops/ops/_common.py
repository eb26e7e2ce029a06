"""Helpers shared by several ops (never imported from a sibling op file).

- argument validation with messages that name the argument and the fix, including :func:`mode_code`, the one
  check of every mode string (``temperature_mode``, ``refine``, ``box_format``, ``window``, ...);
- ONNX element-type codes by name, for ``Cast(to=...)`` in function bodies (``import custom_ops``
  needs only torch, so these are the ``onnx.TensorProto`` values; a test keeps them equal);
- the softmax temperature convention (``spatial_softmax2d``, ``spatial_soft_argmax2d``);
- the coordinate attributes and the expectation over a flat map (``spatial_expectation2d``,
  ``spatial_soft_argmax2d``, the renderers);
- the bad-input suite for logits ``(B, N, H, W)`` (docs/spec.md, "Bad input");
- DARK's blur sigma (``decode_heatmaps``, ``decode_simcc``) and SimCC's ``split_ratio`` check (``decode_simcc``,
  ``simcc_targets``);
- re-exports for the op files: the box formats (``custom_ops.conventions``), ``is_exporting`` and ``kpx_export``
  (``custom_ops.registry``).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# BOX_FORMATS and kpx_export have public homes (custom_ops.conventions, custom_ops.registry; custom_ops.kpx_export);
# they are re-exported here (explicit "as") for the op files and for callers of these old private paths.
from custom_ops.conventions import BOX_FORMAT_CHOICES as BOX_FORMAT_CHOICES
from custom_ops.conventions import BOX_FORMATS as BOX_FORMATS
from custom_ops.conventions import cached_coordinate_grid, coordinate_grid
from custom_ops.registry import OnnxAttribute
from custom_ops.registry import is_exporting as is_exporting
from custom_ops.registry import kpx_export as kpx_export

# --- ONNX element types (onnx.TensorProto.<NAME>) ---------------------------------------------------------
FLOAT = 1
INT32 = 6
INT64 = 7
BOOL = 9
ONNX_TYPES = {"FLOAT": FLOAT, "INT32": INT32, "INT64": INT64, "BOOL": BOOL}  # the ones op bodies use


# --- mode strings ------------------------------------------------------------------------------------------
def mode_code(value: Any, arg: str, choices: dict[str, str]) -> int:
    """Validates the mode string ``value`` of argument ``arg``; its ONNX attribute code.

    ``choices`` maps each accepted string to its meaning, in code order (the code is the position). Anything
    else is a ``ValueError`` naming ``arg``, every choice with its meaning, and what came.
    """
    if isinstance(value, str) and value in choices:
        return list(choices).index(value)
    *listed, last = (f"{name!r} ({meaning})" for name, meaning in choices.items())
    raise ValueError(f"{arg} must be {', '.join(listed)}{' or ' * bool(listed)}{last}; got {value!r}")


# --- DARK's blur (decode_heatmaps, decode_simcc) -------------------------------------------------------------
def blur_sigma(kernel: int) -> float:
    """OpenCV's sigma for a Gaussian kernel size: ``0.3 * ((k - 1) / 2 - 1) + 0.8`` (2.0 for k = 11)."""
    return 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8


# --- argument validation -----------------------------------------------------------------------------------
def validate_tensor(value: Any, arg: str, shape_legend: str, ndim: int | None = None) -> Tensor:
    """Checks that ``value`` is a floating tensor of rank ``ndim``; names ``arg`` otherwise."""
    if not isinstance(value, Tensor):
        raise ValueError(f"{arg} must be a torch.Tensor of shape {shape_legend}; got {type(value).__name__}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{arg} must have shape {shape_legend}; got shape {tuple(value.shape)}")
    if not value.is_floating_point():
        raise ValueError(f"{arg} must be a floating tensor (float16/bfloat16/float32/float64); got {value.dtype}")
    return value


def positive_scalar(value: Any, arg: str) -> Tensor | float:
    """Python numbers must be finite and > 0; tensors must hold one element."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{arg} must be a number or a 0-d tensor; got a tensor of shape {tuple(value.shape)}")
        return value.reshape(())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{arg} must be a positive number or a 0-d tensor; got {value!r}")
    if not (value > 0 and value != float("inf")):
        raise ValueError(f"{arg} must be finite and > 0; got {value!r}")
    return float(value)


def check_split_ratio(split_ratio: Any) -> float:
    """SimCC's ``split_ratio`` (bins per input pixel): a static node attribute, so a finite Python number > 0."""
    if isinstance(split_ratio, Tensor):
        raise ValueError(f"split_ratio must be a Python number (a static node attribute); got a tensor {split_ratio}")
    number = not isinstance(split_ratio, bool) and isinstance(split_ratio, (int, float))
    if not (number and 0 < split_ratio < float("inf")):
        raise ValueError(f"split_ratio must be a finite number > 0 (2.0 for RTMPose); got {split_ratio!r}")
    return float(split_ratio)


_COUNTS = {1: "one", 2: "two", 3: "three", 4: "four"}


def as_sequence(value: Sequence[int], arg: str, length: int, hint: str = "") -> tuple[int, ...]:
    """Validates a static int sequence such as ``size=(H, W)``: ``length`` ints >= 1, each a Python or numpy int
    or a one-element integer tensor. A float (even ``8.0``), a bool or a string is an error, not rounded: ``int()``
    would silently make ``8.5`` an 8 and ``True`` a 1. ``hint`` follows "ints >= 1" in the message."""
    want = f"{arg} must be {_COUNTS.get(length, length)} ints >= 1{hint}"
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"{want}; got {value!r}")
    out = []
    for v in value:
        try:
            if isinstance(v, bool) or (isinstance(v, Tensor) and v.dtype == torch.bool):
                raise TypeError
            out.append(operator.index(v))  # ints, numpy ints, integer one-element tensors; never floats
        except TypeError:
            kind = f"a {v.dtype} tensor" if isinstance(v, Tensor) else f"a {type(v).__name__}"
            fix = "Pass ints"
            if "float" in kind:
                fix = "A size is a whole number of pixels: round it where it is computed (kpx does not) and pass ints"
            raise ValueError(f"{want}; got {value!r}: {v!r} is {kind}, not an int. {fix}") from None
    if len(out) != length or any(v < 1 for v in out):
        raise ValueError(f"{want}; got {value!r}")
    return tuple(out)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 are computed in float32; float32/float64 as they are."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def tracing() -> bool:
    """True while any tracer records the reference (torch.export/dynamo, ``torch.jit.trace``): the references
    then take paths without caches, Python-side size arithmetic or ``out=`` buffers, so the graph stays
    correct at every size."""
    return bool(torch.jit.is_tracing() or torch.compiler.is_compiling())


# --- softmax temperature -----------------------------------------------------------------------------------
#: ``temperature_mode`` strings and their meaning; code 1 (``"divide"``) is the ``temperature_divide`` attribute
TEMPERATURE_MODES = {"multiply": "softmax(x * t), kornia <= 0.8, mmpose", "divide": "softmax(x / t), kornia 0.9"}


def scaled_softmax(logits: Tensor, temperature: Tensor | float, divide: bool) -> Tensor:
    """Softmax over the last axis of ``logits * t`` (or ``logits / t`` when ``divide``)."""
    if isinstance(temperature, Tensor):
        temperature = temperature.to(logits.dtype)
    if divide:
        logits = logits / temperature
    elif not (isinstance(temperature, float) and temperature == 1.0):
        logits = logits * temperature
    return torch.softmax(logits, dim=-1)


TEMPERATURE_ATTRIBUTE = OnnxAttribute("temperature_divide", "bool", 0, "1: softmax(x / t); 0: softmax(x * t)")


# --- coordinates -------------------------------------------------------------------------------------------
COORDINATE_ATTRIBUTES = (
    OnnxAttribute("normalized_coordinates", "bool", 1, "1: coordinates in [-1, 1]; 0: pixels"),
    OnnxAttribute("align_corners", "bool", 1, "1: -1/1 at the centres of the corner pixels; 0: at their edges"),
)


def expectation_flat(probs: Tensor, height: int, width: int, normalized: bool, align_corners: bool) -> Tensor:
    """``(..., H*W)`` probabilities -> ``(..., 2)`` expected ``(x, y)``, in ``probs``'s dtype."""
    if tracing():  # sizes may be symbolic: build the grid in the graph
        grid = coordinate_grid(height, width, normalized, align_corners, device=probs.device, dtype=probs.dtype)
    else:
        grid = cached_coordinate_grid(height, width, normalized, align_corners, probs.device, probs.dtype)
    return F.linear(probs, grid)


# --- bad inputs --------------------------------------------------------------------------------------------
def logits_adversarial() -> dict[str, tuple]:
    """The bad-input suite for logits ``(B, N, H, W)`` (an export with all four dims dynamic)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 5, 7, generator=g)
    peaked = torch.zeros(2, 3, 5, 7)
    peaked[:, :, 2, 4] = 50.0
    huge = x.clone()
    huge[0, 1, 1, 1] = 1e30
    nan = x.clone()
    nan[1, 2, 3, 3] = float("nan")
    neg_inf = x.clone()
    neg_inf[0, 0] = float("-inf")
    return {
        "peaked": (peaked,),
        "flat": (torch.zeros(2, 3, 5, 7),),
        "huge_logits": (huge,),
        "nan_channel": (nan,),
        "all_neg_inf_channel": (neg_inf,),
        "fp16_range": (x / x.abs().max() * 60000.0,),  # logits up to the half maximum, exp(11) and beyond
        "empty_batch": (torch.randn(0, 3, 5, 7),),
        "no_channels": (torch.randn(2, 0, 5, 7),),
        "single_row": (torch.randn(2, 3, 1, 7, generator=g),),
        "single_column": (torch.randn(2, 3, 5, 1, generator=g),),
    }
