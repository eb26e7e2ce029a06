"""Decode in the graph: a pose network plus its decoding (and optionally the top-down crop) as one module.

``kpx export MODEL --decode ...`` and :class:`PoseDecoder` wrap a network whose output is heatmaps
``(B, K, h, w)`` or a SimCC pair ``(B, K, Lx), (B, K, Ly)`` so that the exported file outputs keypoints and
scores. Three shapes of file, by what is given:

============================  ===============================================  ============================
options                       inputs                                           ``keypoints`` in
============================  ===============================================  ============================
(none)                        the network's own inputs                         network-input pixels
``boxes``                     the network's inputs, ``boxes (N, 4)``            frame pixels
``crop`` (implies boxes)      ``frames (B, C, H, W)`` (``(B, H, W, C)`` with     frame pixels
                              ``channels_last``), ``boxes (N, 4)``
                              [, ``batch_index (N,)``]
============================  ===============================================  ============================

Outputs are always named ``keypoints`` ``(N, K, 2)`` as ``(x, y)`` and ``scores`` ``(N, K)``.

- Heatmaps are decoded with :func:`~custom_ops.decode_heatmaps` (``heatmap:none|quarter|dark|dark_udp``) and
  mapped from heatmap pixels to network-input pixels as mmpose's codecs do: ``x * w_in / w`` (MSRA) or, with
  ``udp=True``, ``x * w_in / (w - 1)`` (``UDPHeatmap``). SimCC pairs are decoded with
  :func:`~custom_ops.decode_simcc` (``simcc`` or ``simcc:dark``), already in network-input pixels.
- ``boxes`` without ``crop``: the network's inputs are crops made outside the file, and ``boxes`` are the
  regions that were warped into them (after any padding and aspect-ratio fix), in ``box_format``;
  keypoints go through :func:`~custom_ops.heatmap_to_image`.
- ``crop``: the file crops itself with :func:`~custom_ops.topdown_crop` (mmpose's ``bbox_xyxy2cs`` with
  ``padding``, the aspect-ratio fix, the affine warp, ``mean``/``std``) and maps the keypoints back through the
  same centre/scale (``heatmap_to_image(..., box_format="cs")``), so frame -> crop -> frame is one definition.
  Without ``batch_index`` every box is on frame 0. ``channels_last`` takes frames as OpenCV decodes them,
  ``(B, H, W, C)``; ``frames_dtype="uint8"`` (``wrap``/CLI) makes the file's ``frames`` input uint8: the crop
  reads the frames in their own layout and dtype, with no whole-frame transpose or cast in the file or outside.
- ``heatmap:dark_udp`` is mmpose's ``UDPHeatmap`` decoder, so it implies ``udp`` (its ``w - 1`` scaling and, with
  a crop, its UDP warp matrix): without it keypoints would be off by up to ``x / (w - 1)`` heatmap px (5 input px).
- ``normalize`` presets the crop's ``mean``/``std``: ``"imagenet"`` (mmpose's and rtmlib's ``[123.675, 116.28,
  103.53]`` / ``[58.395, 57.12, 57.375]`` on 0-255 pixels), ``"unit"`` (pixels / 255) or ``"none"``.
- A network returning a dict or ``ModelOutput`` (transformers' ViTPose: ``.heatmaps``) is decoded from its tensor
  entries, or from the entries ``output_key`` names.

The file records these settings (``kpx.pose``), its inputs (``kpx.inputs``: frames, boxes in their format) and its
keypoint output (``kpx.outputs``), so that ``kpx check FILE --reference NET`` rebuilds the same decoder around the
network and judges the keypoints in network-input pixels (:mod:`export_tools.filemeta`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from custom_ops.conventions import BOX_FORMATS  # the box formats of the ops (--boxes choices)
from export_tools.errors import UsageError

HEATMAP_REFINES = ("none", "quarter", "dark", "dark_udp")
SIMCC_REFINES = ("none", "dark")
DECODE_CHOICES = (*(f"heatmap:{r}" for r in HEATMAP_REFINES), "simcc", "simcc:dark")
OUTPUT_NAMES = ("keypoints", "scores")
#: ``normalize`` presets: ``(mean, std)`` per channel on 0-255 pixels
NORMALIZE = {"imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)), "unit": ((0.0,), (255.0,)),
             "none": (None, None)}  # fmt: skip


@dataclass(frozen=True)
class DecodeSpec:
    """What ``--decode`` asked for: ``kind`` ``"heatmap"`` or ``"simcc"`` and the ``refine`` mode."""

    kind: str
    refine: str

    @classmethod
    def parse(cls, text: str) -> DecodeSpec:
        kind, _, refine = text.partition(":")
        if kind == "heatmap" and refine in HEATMAP_REFINES:
            return cls(kind, refine)
        if kind == "simcc" and refine in ("", *SIMCC_REFINES):
            return cls(kind, refine or "none")
        raise UsageError(f"--decode must be one of {', '.join(DECODE_CHOICES)}; got {text!r}")


def parse_size(text: str, flag: str) -> tuple[int, int]:
    """``"192x256"`` -> ``(192, 256)``: width x height, as mmpose's ``input_size``."""
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) < 1 or int(h) < 1:
        raise UsageError(f"{flag} must be WIDTHxHEIGHT in pixels, e.g. 192x256; got {text!r}")
    return int(w), int(h)


def network_outputs(outputs: object, spec: DecodeSpec, output_key: Sequence[str] | None = None) -> tuple[Tensor, ...]:
    """The network's output, checked against the decode: one ``(B, K, h, w)`` tensor for heatmaps, two
    ``(B, K, L)`` tensors for SimCC (from a dict output: the entries ``output_key`` names, else its tensor entries).
    Anything else is a :class:`UsageError` naming what was found."""
    if isinstance(outputs, Mapping):
        if output_key:
            from export_tools.models import pick_outputs

            try:
                outputs = pick_outputs(outputs, output_key)
            except ValueError as exc:
                raise UsageError(f"--output-key: {exc}") from None
        else:
            outputs = tuple(v for v in outputs.values() if isinstance(v, Tensor))
    elif output_key:
        raise UsageError(f"--output-key {','.join(output_key)} picks entries of a dict output; the network returns "
                         f"{type(outputs).__name__}: drop it")  # fmt: skip
    items = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    found = (
        ", ".join(f"{type(t).__name__}{tuple(t.shape) if isinstance(t, Tensor) else ''}" for t in items) or "nothing"
    )
    tensors = all(isinstance(t, Tensor) for t in items)
    if spec.kind == "heatmap":
        if len(items) == 1 and tensors and items[0].dim() == 4:
            return (items[0],)
        raise UsageError(f"--decode heatmap:{spec.refine} needs a model that returns one heatmap tensor "
                         f"(B, K, h, w); it returns {found}. For a SimCC head use --decode simcc")  # fmt: skip
    if (
        len(items) == 2
        and tensors
        and items[0].dim() == 3
        and items[1].dim() == 3
        and (items[0].shape[:2] == items[1].shape[:2])
    ):
        return items[0], items[1]
    raise UsageError(f"--decode simcc needs a model that returns two SimCC tensors (B, K, Lx), (B, K, Ly); "
                     f"it returns {found}. For a heatmap head use --decode heatmap:dark")  # fmt: skip


class PoseDecoder(nn.Module):
    """A pose network with its decoding (and optionally the top-down crop) in one module; see the module doc.

    Args:
        net: the network; its output must fit ``decode`` (a dict output: its tensor entries, or ``output_key``'s).
        decode: ``"heatmap:none|quarter|dark|dark_udp"``, ``"simcc"`` or ``"simcc:dark"``.
        input_size: ``(w, h)`` of the network input (needed to map heatmap pixels; the crop size with ``crop``).
        heatmap_size: ``(h, w)`` of the heatmaps (heatmap decodes; read from one forward pass by the CLI).
        split_ratio: SimCC bins per input pixel. sigma: the SimCC label sigma in bins (sets DARK's kernel).
        blur_kernel: DARK's blur for heatmaps. udp: UDP crop matrix and ``w - 1`` heatmap scaling (mmpose's
            ``use_udp`` / ``UDPHeatmap``); ``heatmap:dark_udp`` implies it.
        boxes: box format of the ``boxes`` input (``None``: no boxes, keypoints in network-input pixels).
        crop: crop the frames in the graph (needs ``boxes``). padding: mmpose's box padding (crop only).
        batch_index: the file takes ``batch_index (N,)``; without it every box is on frame 0.
        mean, std: per-channel normalisation of the crops (crop only); or ``normalize`` (``"imagenet"``,
            ``"unit"``, ``"none"``) for a preset.
        channels_last: the frames are ``(B, H, W, C)`` (crop only). uint8 frames: the crops are cast to the
            network's dtype (its parameters', else the boxes'), so ``--dtype fp16`` runs the network in half.
        output_key: the entries of a dict output to decode (``["heatmaps"]``).
        channels: the frames' channels for :meth:`example_inputs` (default: ``len(mean)`` or 3).
    """

    def __init__(
        self,
        net: nn.Module,
        decode: str,
        *,
        input_size: Sequence[int],
        heatmap_size: Sequence[int] | None = None,
        split_ratio: float = 2.0,
        sigma: float | tuple[float, float] = 6.0,
        blur_kernel: int = 11,
        udp: bool = False,
        boxes: str | None = None,
        crop: bool = False,
        padding: float = 1.25,
        batch_index: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        channels_last: bool = False,
        normalize: str | None = None,
        output_key: Sequence[str] | str | None = None,
        channels: int | None = None,
    ) -> None:
        import custom_ops

        super().__init__()
        self.net = net
        self.decode_spec = DecodeSpec.parse(decode)
        self.output_names = list(OUTPUT_NAMES)
        if not (isinstance(input_size, Sequence) and len(input_size) == 2 and all(_whole(v) for v in input_size)):
            raise UsageError(f"input_size must be (w, h) in pixels, e.g. (192, 256); got {input_size!r}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        if self.decode_spec.kind == "heatmap" and heatmap_size is None:
            raise UsageError("heatmap_size (h, w) is needed to map heatmap decodes to pixels")
        self.heatmap_size = None if heatmap_size is None else (int(heatmap_size[0]), int(heatmap_size[1]))
        udp = bool(udp) or self.decode_spec.refine == "dark_udp"  # mmpose's UDPHeatmap: w - 1 scaling, UDP warp
        if udp and self.heatmap_size is not None and min(self.heatmap_size) < 2:
            raise UsageError(f"udp needs heatmaps of at least 2x2 (w - 1 divides); got {self.heatmap_size}")
        if boxes is not None and boxes not in BOX_FORMATS:
            raise UsageError(f"--boxes must be one of {', '.join(BOX_FORMATS)}; got {boxes!r}")
        if crop and boxes is None:
            raise UsageError("--crop needs --boxes (the detector boxes to crop): add --boxes xyxy, xywh or cs")
        if normalize is not None:
            if normalize not in NORMALIZE:
                raise UsageError(f"--normalize must be one of {', '.join(NORMALIZE)}; got {normalize!r}")
            if mean is not None or std is not None:
                raise UsageError("--normalize sets --mean and --std: give one or the other")
            mean, std = NORMALIZE[normalize]
        given = batch_index or mean is not None or std is not None or channels_last or normalize not in (None, "none")
        if given and not crop:
            raise UsageError("--batch-index, --mean, --std, --normalize and --channels-last configure the crop: add "
                             "--crop WxH, or drop them")  # fmt: skip
        self.channels_last = bool(channels_last)
        self.split_ratio, self.sigma, self.blur_kernel, self.udp = float(split_ratio), sigma, int(blur_kernel), udp
        self.boxes, self.crop, self.padding, self.batch_index = boxes, bool(crop), float(padding), bool(batch_index)
        self.mean = None if mean is None else [float(m) for m in mean]
        self.std = None if std is None else [float(s) for s in std]
        self.output_key = [output_key] if isinstance(output_key, str) else (list(output_key) if output_key else None)
        self.channels = int(channels) if channels else (len(self.mean) if self.mean and len(self.mean) > 1 else 3)
        if self.decode_spec.kind == "simcc":
            self.decoder = custom_ops.DecodeSimCC(split_ratio=self.split_ratio, refine=self.decode_spec.refine,
                                                  sigma=sigma)  # fmt: skip
        else:
            self.decoder = custom_ops.DecodeHeatmaps(refine=self.decode_spec.refine, blur_kernel=self.blur_kernel)
        self.input_names = self._input_names()
        self.train(net.training)  # the wrapper follows the network's mode

    def _input_names(self) -> list[str]:
        """The exported file's input names: ``frames``, ``boxes`` [, ``batch_index``] with a crop, else the
        network's own (its ``forward``'s positional parameters without a default), then ``boxes``."""
        if self.crop:
            return ["frames", "boxes", *(["batch_index"] if self.batch_index else [])]
        params = inspect.signature(self.net.forward).parameters.values()
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is
                 p.empty] or ["images"]  # fmt: skip
        return [*names, *(["boxes"] if self.boxes else [])]

    def settings(self) -> dict[str, Any]:
        """Everything but the network: ``PoseDecoder(net, **settings())`` rebuilds this decoder (``kpx.pose``)."""
        return {
            "decode": f"{self.decode_spec.kind}:{self.decode_spec.refine}", "input_size": list(self.input_size),
            "heatmap_size": None if self.heatmap_size is None else list(self.heatmap_size),
            "split_ratio": self.split_ratio, "sigma": list(self.sigma) if isinstance(self.sigma, tuple) else self.sigma,
            "blur_kernel": self.blur_kernel, "udp": self.udp, "boxes": self.boxes, "crop": self.crop,
            "padding": self.padding, "batch_index": self.batch_index, "mean": self.mean, "std": self.std,
            "channels_last": self.channels_last, "output_key": self.output_key, "channels": self.channels,
        }  # fmt: skip

    @classmethod
    def from_settings(cls, net: nn.Module, settings: Mapping[str, Any]) -> PoseDecoder:
        """The decoder a file recorded (``kpx.pose``) around ``net``."""
        known = set(inspect.signature(cls.__init__).parameters) - {"self", "net"}
        options = {k: v for k, v in settings.items() if k in known}
        if isinstance(options.get("sigma"), list):
            options["sigma"] = tuple(options["sigma"])
        decode = str(options.pop("decode", "")).replace("simcc:none", "simcc")
        return cls(net, decode, **options)

    def kpx_metadata(self) -> dict[str, Any]:
        """What the file records (:mod:`export_tools.filemeta`): the settings, what each input holds, and how to
        read the keypoints in pixels."""
        space = "frame" if self.boxes else "input"
        keypoints = {"kind": "keypoints", "units": "px", "space": space, "input_size": list(self.input_size)}
        if self.boxes:
            box_input = 1 if self.crop else len(self.input_names) - 1
            keypoints.update(boxes=box_input, box_format=self.boxes, padding=self.padding if self.crop else 1.0,
                             crop=self.crop)  # fmt: skip
        if self.crop:
            inputs = [{"kind": "frames", "layout": "NHWC" if self.channels_last else "NCHW"},
                      {"kind": "boxes", "format": self.boxes, "frames": 0},
                      *([{"kind": "batch_index", "frames": 0}] if self.batch_index else [])]  # fmt: skip
        else:
            inputs = [None] * (len(self.input_names) - bool(self.boxes))
            if self.boxes:  # the regions warped into the network input: a frame of that size at least
                inputs.append({"kind": "boxes", "format": self.boxes})
        return {"pose": self.settings(), "inputs": inputs, "outputs": [keypoints, {"kind": "scores"}]}

    def example_inputs(self) -> tuple[Tensor, ...]:
        """Example inputs for a crop file (frames, boxes inside them [, batch_index]); other files take the
        network's own inputs (``kpx export --input``)."""
        if not self.crop:
            raise UsageError("this PoseDecoder takes the network's own inputs: give their shapes with --input")
        frames_batch = 2 if self.batch_index else 1
        generator = torch.Generator().manual_seed(0)
        frames = torch.rand(frames_batch, self.channels, *EXAMPLE_FRAME, generator=generator) * 255.0
        if self.channels_last:
            frames = frames.permute(0, 2, 3, 1).contiguous()
        boxes = example_boxes(self.boxes)
        index = [torch.tensor([0, 1, 1][: len(boxes)], dtype=torch.int64)] if self.batch_index else []
        return (frames.to(self._network_dtype(boxes)), boxes, *index)

    def dynamic_dims(self) -> list[dict[int, str] | None]:
        """Dynamic dims of a crop file's inputs: the frames' H and W (and B with ``batch_index``), the box count."""
        if not self.crop:
            return [None] * len(self.input_names)
        spatial = {1: "H", 2: "W"} if self.channels_last else {2: "H", 3: "W"}
        dims = [{**spatial, **({0: "B"} if self.batch_index else {})}, {0: "N"}]
        return dims + ([{0: "N"}] if self.batch_index else [])

    def _decode(self, outputs: object) -> tuple[Tensor, Tensor, str]:
        """Keypoints in network-input pixels (SimCC) or heatmap pixels, scores, and the mapping mode."""
        tensors = network_outputs(outputs, self.decode_spec, self.output_key)
        keypoints, scores = self.decoder(*tensors)
        return keypoints, scores, "input" if self.decode_spec.kind == "simcc" else "heatmap"

    def _to_pixels(self, keypoints: Tensor, where: str, boxes: Tensor | None, box_format: str) -> Tensor:
        """From heatmap or network-input pixels to network-input pixels (no boxes) or through ``boxes``."""
        import custom_ops

        if where == "heatmap":
            size, mode = self.heatmap_size, "udp" if self.udp else "msra"
        else:
            size, mode = (self.input_size[1], self.input_size[0]), "msra"
        if boxes is None:  # to network-input pixels: a constant scale, as mmpose's codecs decode
            w, h = self.input_size
            span = (size[1] - 1, size[0] - 1) if mode == "udp" else (size[1], size[0])
            return keypoints * keypoints.new_tensor([w / span[0], h / span[1]])
        return custom_ops.heatmap_to_image(keypoints, boxes, size, box_format=box_format, scale_mode=mode)

    def _network_dtype(self, boxes: Tensor) -> torch.dtype:
        """The network's float dtype (its parameters'; without any, the boxes': both follow ``--dtype``)."""
        for p in self.net.parameters():
            if p.is_floating_point():
                return p.dtype
        return boxes.dtype

    def forward(self, *inputs: Tensor) -> tuple[Tensor, Tensor]:
        import custom_ops

        if self.crop:
            frames, boxes = inputs[0], inputs[1]
            index = inputs[2] if self.batch_index else None
            crops, centre_scale = custom_ops.topdown_crop(
                frames, boxes, index, input_size=self.input_size, padding=self.padding, box_format=self.boxes,
                udp=self.udp, mean=self.mean, std=self.std, channels_last=self.channels_last,
            )  # fmt: skip
            if not frames.is_floating_point():  # uint8 frames give float32 crops: feed the network its own dtype
                crops = crops.to(self._network_dtype(boxes))
            keypoints, scores, where = self._decode(self.net(crops))
            return self._to_pixels(keypoints, where, centre_scale, "cs"), scores
        if self.boxes is not None:
            *net_inputs, boxes = inputs
            keypoints, scores, where = self._decode(self.net(*net_inputs))
            return self._to_pixels(keypoints, where, boxes, self.boxes), scores
        keypoints, scores, where = self._decode(self.net(*inputs))
        return self._to_pixels(keypoints, where, None, "xywh"), scores


def _whole(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and float(value).is_integer() and value > 0


#: the example frame of a ``--crop`` export, ``(H, W)``, and its boxes (xyxy, inside the frame)
EXAMPLE_FRAME = (480, 640)
EXAMPLE_BOXES = ((100.0, 80.0, 260.0, 400.0), (300.0, 50.0, 420.0, 300.0), (500.0, 200.0, 630.0, 470.0))


def example_boxes(box_format: str, count: int = len(EXAMPLE_BOXES)) -> Tensor:
    """``(count, 4)`` example boxes in ``box_format`` (cycling through :data:`EXAMPLE_BOXES`)."""
    xyxy = torch.tensor([EXAMPLE_BOXES[i % len(EXAMPLE_BOXES)] for i in range(count)])
    return xyxy_to(xyxy, box_format)


def xyxy_to(xyxy: Tensor, box_format: str) -> Tensor:
    """``(N, 4)`` xyxy boxes in ``box_format``."""
    if box_format == "xywh":
        return torch.cat([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1)
    if box_format == "cs":
        return torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)
    return xyxy


def wrap(
    net: nn.Module, example: tuple, dynamic: tuple | None, input_names: list[str], **options
) -> tuple[PoseDecoder, tuple, tuple | None, list[str]]:
    """The network wrapped in a :class:`PoseDecoder` for export, with its example inputs, ``dynamic_shapes``
    (one nested tuple: ``forward(*inputs)``) and input names. ``options`` are :class:`PoseDecoder`'s; the
    input size comes from ``options["crop_size"]`` or the network's first input, the heatmap size from one
    forward pass on ``example``."""
    spec = DecodeSpec.parse(options["decode"])
    crop_size = options.pop("crop_size", None)
    frames_dtype = options.pop("frames_dtype", None)
    if frames_dtype not in (None, "uint8") or (frames_dtype and crop_size is None):
        raise UsageError(f"--frames-dtype uint8 is for --crop exports (the file's frames input); got {frames_dtype!r}"
                         f"{'' if crop_size else ' without --crop'}")  # fmt: skip
    key = options.get("output_key")
    with torch.no_grad():
        outputs = network_outputs(net(*example), spec, key)
    if crop_size is None:
        if not example or example[0].dim() != 4:
            raise UsageError("--decode maps keypoints to network-input pixels and reads the input size from the "
                             "first input (B, C, h, w); give --crop WxH for a network with another input")  # fmt: skip
        input_size = (int(example[0].shape[-1]), int(example[0].shape[-2]))
    else:
        input_size = crop_size
    heatmap_size = tuple(outputs[0].shape[-2:]) if spec.kind == "heatmap" else None
    boxes = options.get("boxes")
    per_input = list(dynamic[0] if dynamic and len(dynamic) == 1 and isinstance(dynamic[0], tuple) else
                     (dynamic or (None,) * len(example)))  # fmt: skip
    if crop_size is not None:
        options["crop"] = True
        if example[0].dim() != 4:
            raise UsageError("--crop makes the network's input from frames: its first input must be (B, C, h, w)")
        channels = int(example[0].shape[1])
        if tuple(example[0].shape[-2:]) != (input_size[1], input_size[0]):
            with torch.no_grad():  # the network must accept crops of the requested size
                probe = torch.zeros(1, channels, input_size[1], input_size[0], dtype=example[0].dtype)
                try:
                    probed = net(probe)
                except Exception as exc:
                    raise UsageError(f"--crop {input_size[0]}x{input_size[1]}: the model fails on crops of that size "
                                     f"({type(exc).__name__}: {exc}); give its input size") from None  # fmt: skip
                outputs = network_outputs(probed, spec, key)  # the heatmap size at the crop size
            if spec.kind == "heatmap":
                heatmap_size = tuple(outputs[0].shape[-2:])
        wrapper = PoseDecoder(net, input_size=input_size, heatmap_size=heatmap_size, channels=channels, **options)
        inputs = list(wrapper.example_inputs())
        if frames_dtype == "uint8":
            inputs[0] = inputs[0].to(torch.uint8)
        else:
            inputs[0] = inputs[0].to(example[0].dtype)
        return wrapper, tuple(inputs), (tuple(wrapper.dynamic_dims()),), wrapper.input_names
    wrapper = PoseDecoder(net, input_size=input_size, heatmap_size=heatmap_size, **options)
    if boxes is None:
        return wrapper, tuple(example), ((*per_input,),) if dynamic else None, list(input_names)
    batch = int(example[0].shape[0])
    first = per_input[0] or {}
    names = [*input_names, "boxes"]
    boxes_t = example_boxes(boxes, batch)
    if 0 in first:
        per_input.append({0: first[0]})
    else:
        per_input.append(None)
    return wrapper, (*example, boxes_t), ((*per_input,),) if dynamic or 0 in first else None, names
