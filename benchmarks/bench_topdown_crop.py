"""topdown_crop speed: the ONNX body on ONNX Runtime CPU and the torch reference, against cv2.warpAffine.

Run: ``python benchmarks/bench_topdown_crop.py [--threads 2] [--rounds 30] [--quick]``.
Prints medians (ms) and ratios from one run: for 1, 8 and 32 boxes on one 480x640 float32 frame, 256x192 and
64x48 crops (``input_size`` (192, 256) and (48, 64)): kpx on ORT (function and inline bodies, dynamic F, H, W, N),
the kpx torch reference (eager, ``torch.inference_mode``) and OpenCV's ``warpAffine`` (``INTER_LINEAR``, constant
0 border) once per box with mmpose's matrix for the same box (matrices computed beforehand: the loop is warps
only). Two more rows take the frame as OpenCV decodes it, ``(H, W, 3)`` uint8: OpenCV's warp of it and the kpx
function body exported with ``channels_last=True`` on uint8 frames (the same crops, read without a cast or a
transpose in front). Each runtime is timed in its own group, the two ORT rows round-robin (see
``_common.compare``); OpenCV and torch run with ``--threads`` threads as ORT does. The load average is printed
before and after: the machine may be shared.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from _common import compare, machine, ort_runner  # noqa: E402

import custom_ops  # noqa: E402
from export_tools import EMIT_MODES, to_onnx  # noqa: E402

FRAME = (480, 640)
CROPS = [(192, 256), (48, 64)]  # input_size (w, h)
BOX_COUNTS = [1, 8, 32]
DYNAMIC = ({0: "F", 2: "H", 3: "W"}, {0: "N"})


class Crop(torch.nn.Module):
    def __init__(self, input_size: tuple[int, int], channels_last: bool = False) -> None:
        super().__init__()
        self.input_size, self.channels_last = input_size, channels_last

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return custom_ops.topdown_crop(images, boxes, input_size=self.input_size, channels_last=self.channels_last)[0]


def boxes_over_the_frame(n: int) -> torch.Tensor:
    """``n`` xyxy person-sized boxes spread over the frame, some crossing its edge."""
    g = torch.Generator().manual_seed(n)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([FRAME[1] - 60.0, FRAME[0] - 120.0]) - 20
    wh = torch.rand(n, 2, generator=g) * torch.tensor([150.0, 250.0]) + torch.tensor([60.0, 120.0])
    return torch.cat([xy, xy + wh], 1)


def cv2_matrices(boxes_cs: torch.Tensor, input_size: tuple[int, int]) -> list[np.ndarray]:
    """mmpose's ``get_warp_matrix`` (rotation 0) for each box: frame -> crop, ``x' = (x - x0) * w / sw``."""
    w, h = input_size
    out = []
    for cx, cy, sw, sh in boxes_cs.tolist():
        x0, y0 = cx - 0.5 * sw, cy - 0.5 * sh
        out.append(np.array([[w / sw, 0, -x0 * w / sw], [0, h / sh, -y0 * h / sh]], np.float64))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="one crop size, 1 and 32 boxes, 3 rounds (smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    crops = CROPS[:1] if args.quick else CROPS
    counts = [1, 32] if args.quick else BOX_COUNTS
    rounds = 3 if args.quick else args.rounds
    frame_hwc = (np.random.default_rng(0).random((*FRAME, 3)) * 255).astype(np.float32)
    images = torch.from_numpy(frame_hwc).permute(2, 0, 1)[None].contiguous()
    frame_u8 = frame_hwc.astype(np.uint8)

    print(f"# topdown_crop, {datetime.date.today()}, float32 frame {FRAME[0]}x{FRAME[1]}, {args.threads} threads, ")
    print(f"# {rounds}+ rounds; load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"# {machine()}, opencv {cv2.__version__}")
    print("| crop (h x w) | boxes | row | median ms | / cv2.warpAffine loop |")
    print("|---|---:|---|---:|---:|")
    for input_size in crops:
        model = Crop(input_size)
        sample = (images, boxes_over_the_frame(2))
        protos = {emit: to_onnx(model, sample, emit=emit, dynamic_shapes=DYNAMIC) for emit in EMIT_MODES}
        hwc_sample = (torch.from_numpy(frame_u8)[None], sample[1])
        hwc = to_onnx(Crop(input_size, True), hwc_sample, dynamic_shapes=({0: "F", 1: "H", 2: "W"}, {0: "N"}))
        for n in counts:
            boxes = boxes_over_the_frame(n)
            _, boxes_cs = custom_ops.topdown_crop(images, boxes, input_size=input_size)
            matrices = cv2_matrices(boxes_cs, input_size)

            def warp_loop(matrices=matrices, size=input_size) -> list[np.ndarray]:
                return [cv2.warpAffine(frame_hwc, m, size, flags=cv2.INTER_LINEAR) for m in matrices]

            def eager(boxes=boxes, size=input_size) -> torch.Tensor:
                with torch.inference_mode():
                    return custom_ops.topdown_crop(images, boxes, input_size=size)[0]

            # one group per runtime: a runtime's worker threads spin after a call and slow the next one (measured:
            # torch eager 20x slower at one box when timed round-robin with OpenCV)
            ms = compare({"cv2.warpAffine loop": warp_loop}, rounds=rounds)
            ms |= compare({"kpx torch eager": eager}, rounds=rounds)
            # one thread too: on a loaded machine every op's OpenMP barrier waits for a descheduled thread
            torch.set_num_threads(1)
            ms |= compare({"kpx torch eager, 1 thread": eager}, rounds=rounds)
            torch.set_num_threads(args.threads)
            ort_rows = {
                f"kpx ORT {emit}": ort_runner(proto.SerializeToString(), args.threads, images.numpy(), boxes.numpy())
                for emit, proto in protos.items()
            }
            ms |= compare(ort_rows, rounds=rounds)

            def warp_loop_u8(matrices=matrices, size=input_size) -> list[np.ndarray]:
                return [cv2.warpAffine(frame_u8, m, size, flags=cv2.INTER_LINEAR) for m in matrices]

            ms |= compare({"cv2.warpAffine loop, uint8 HWC": warp_loop_u8}, rounds=rounds)
            ms |= compare(
                {"kpx ORT function, uint8 HWC": ort_runner(hwc.SerializeToString(), args.threads, frame_u8[None],
                                                           boxes.numpy())},
                rounds=rounds,
            )  # fmt: skip
            floor = ms["cv2.warpAffine loop"]
            for row, value in ms.items():
                print(f"| {input_size[1]}x{input_size[0]} | {n} | {row} | {value:.2f} | {value / floor:.1f}x |")
    print(f"# load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
