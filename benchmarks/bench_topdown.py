"""Frames in, keypoints out: one kpx file vs the same pipeline written the usual way, on ONNX Runtime CPU.

Run: ``python benchmarks/bench_topdown.py [--repeats 30] [--threads 2]``.

The model is examples/rtmpose.py's RTMPose-style network (48x64 crops, SimCC split 2; untrained weights: the
timing does not depend on them). Both pipelines take one 480x640 frame and N detector boxes (xyxy) and return
frame keypoints and scores:

- ``one file``: ``kpx export --decode simcc --crop 48x64 --boxes xyxy`` (``PoseDecoder``, emit ``function``):
  ``kpx.TopdownCrop`` -> network -> ``kpx.DecodeSimCC`` -> ``kpx.HeatmapToImage``, one ``session.run``. The
  timing includes turning the frame from OpenCV's HWC into NCHW.
- ``usual``: what rtmlib and mmpose's inferencers do around a network-only file: per box in Python, mmpose's
  ``bbox_xyxy2cs`` (padding 1.25), the aspect-ratio fix, ``get_warp_matrix`` (``cv2.getAffineTransform`` of
  three points) and ``cv2.warpAffine``; the crops stacked into NCHW; one ``session.run`` of the network; numpy
  argmax decoding (score: the smaller maximum) and ``keypoints / input_size * scale + centre - scale / 2``.

Both sessions: ORT CPU, ``--threads`` intra-op threads, the same network weights. Each row interleaves the two
pipelines (A B A B ...) after a warm-up and prints the medians and the ratio usual / one file (> 1: the one file
is faster). The two outputs are compared once per row (max difference in frame pixels).
"""

from __future__ import annotations

import argparse
import runpy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FRAME = (480, 640)


def warp_matrix(centre: np.ndarray, scale: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """mmpose's ``get_warp_matrix`` at rotation 0: three point pairs, ``cv2.getAffineTransform``."""
    import cv2

    w, h = size
    half = 0.5 * scale[0]
    src = np.stack([centre, centre + np.array([0.0, -half]), centre + np.array([-half, -half])])
    dst = np.array([[w / 2, h / 2], [w / 2, h / 2 - w / 2], [0.0, h / 2 - w / 2]])
    return cv2.getAffineTransform(src.astype(np.float32), dst.astype(np.float32))


def usual(session, frame_hwc: np.ndarray, boxes: np.ndarray, size: tuple[int, int], split: float):
    """The Python pipeline around a network-only file (see the module docstring)."""
    import cv2

    w, h = size
    crops, centres, scales = [], [], []
    for box in boxes:
        centre = (box[:2] + box[2:]) * 0.5
        scale = (box[2:] - box[:2]) * 1.25
        if scale[0] > scale[1] * w / h:
            scale = np.array([scale[0], scale[0] * h / w])
        else:
            scale = np.array([scale[1] * w / h, scale[1]])
        crops.append(cv2.warpAffine(frame_hwc, warp_matrix(centre, scale, size), (w, h), flags=cv2.INTER_LINEAR))
        centres.append(centre)
        scales.append(scale)
    batch = np.ascontiguousarray(np.stack(crops).transpose(0, 3, 1, 2), dtype=np.float32)
    simcc_x, simcc_y = session.run(None, {"images": batch})
    x, y = simcc_x.argmax(-1), simcc_y.argmax(-1)
    scores = np.minimum(simcc_x.max(-1), simcc_y.max(-1))
    keypoints = np.stack([x, y], -1).astype(np.float32) / split
    centre, scale = np.stack(centres)[:, None], np.stack(scales)[:, None]
    return keypoints / np.array(size) * scale + centre - scale / 2, scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--boxes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--weights", help="a state_dict of the example's network (default: untrained weights)")
    args = parser.parse_args(argv)
    import cv2
    import onnxruntime as ort

    from export_tools.decoding import PoseDecoder, example_boxes
    from export_tools.exporter import to_onnx

    torch.manual_seed(0)
    example = runpy.run_path(str(ROOT / "examples" / "rtmpose.py"), run_name="kpx_bench")
    net, size, split = example["make"](), example["INPUT"], example["SPLIT"]
    if args.weights:
        net.load_state_dict(torch.load(args.weights, weights_only=True))
    crops = torch.rand(2, 3, size[1], size[0]) * 255
    network = to_onnx(net, (crops,), dynamic_shapes=({0: "N"},), input_names=["images"])
    pipeline = PoseDecoder(net, "simcc", input_size=size, split_ratio=split, boxes="xyxy", crop=True)
    frame = torch.rand(1, 3, *FRAME) * 255
    one_file = to_onnx(pipeline, (frame, example_boxes("xyxy")), dynamic_shapes=(({2: "H", 3: "W"}, {0: "N"}),),
                       input_names=["frames", "boxes"], output_names=["keypoints", "scores"])  # fmt: skip

    def session(proto):
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])

    net_session, file_session = session(network), session(one_file)
    rng = np.random.default_rng(0)
    frame_hwc = np.ascontiguousarray(rng.uniform(0, 255, (*FRAME, 3)).astype(np.float32))
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, opencv {cv2.__version__}; ORT CPU "
          f"{args.threads} threads; frame {FRAME[1]}x{FRAME[0]}, crops {size[0]}x{size[1]}, {args.repeats} "
          f"interleaved runs per row, medians")  # fmt: skip
    print(f"{'boxes':>5} {'one file ms':>12} {'usual ms':>10} {'usual / one file':>17} {'max |diff| px':>14}")
    for count in args.boxes:
        low = rng.uniform([0, 0], [FRAME[1] - 120, FRAME[0] - 200], (count, 2))
        boxes = np.concatenate([low, low + rng.uniform([40, 80], [120, 200], (count, 2))], 1).astype(np.float32)

        def run_file(boxes=boxes):
            chw = np.ascontiguousarray(frame_hwc.transpose(2, 0, 1))[None]
            return file_session.run(None, {"frames": chw, "boxes": boxes})

        def run_usual(boxes=boxes):
            return usual(net_session, frame_hwc, boxes, size, split)

        diff = float(np.abs(run_file()[0] - run_usual()[0]).max())
        times = {"file": [], "usual": []}
        for _ in range(3):
            run_file(), run_usual()
        for _ in range(args.repeats):
            for name, fn in (("file", run_file), ("usual", run_usual)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        f, u = statistics.median(times["file"]) * 1e3, statistics.median(times["usual"]) * 1e3
        print(f"{count:>5} {f:>12.2f} {u:>10.2f} {u / f:>17.2f} {diff:>14.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
