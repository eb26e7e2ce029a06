"""Frames in, keypoints out: one kpx file vs the same pipeline written the usual way, on ONNX Runtime CPU.

Run: ``python benchmarks/bench_topdown.py [--repeats 30] [--threads 2] [--weights rtmpose.pt] [--float-frames]
[--spinning]``.

The model is examples/rtmpose.py's RTMPose-style network (48x64 crops, SimCC split 2; untrained weights unless
``--weights``: the timing does not depend on them). Both pipelines take the same frame, one 480x640 BGR frame as
OpenCV decodes it (``(H, W, 3)`` uint8; ``--float-frames``: float32), and N detector boxes (xyxy), and return frame
keypoints and scores, with RTMPose's ImageNet mean/std normalisation of the crops:

- ``one file``: ``kpx export --decode simcc --crop 48x64 --boxes xyxy --channels-last --frames-dtype uint8
  --mean ... --std ...`` (``PoseDecoder``, emit ``function``): ``kpx.TopdownCrop`` -> network ->
  ``kpx.DecodeSimCC`` -> ``kpx.HeatmapToImage``, one ``session.run`` on the frame as it is (``frame[None]``).
- ``batched``: the usual pipeline around a network-only file, written for speed: per box in Python, mmpose's
  ``bbox_xyxy2cs`` (padding 1.25), the aspect-ratio fix, ``get_warp_matrix`` (``cv2.getAffineTransform`` of
  three points) and ``cv2.warpAffine`` of the frame; the crops stacked, normalised in float32 and transposed to
  NCHW once for the batch; one ``session.run`` of the network on all crops; numpy argmax decoding (score: the
  smaller maximum) and ``keypoints / input_size * scale + centre - scale / 2``.
- ``rtmlib``: the same steps as rtmlib 0.0.16 runs them, its own code (``RTMPose.__call__`` on the network file,
  its ONNX Runtime session replaced by one with the options below): per box, warp, normalise (float64), one
  ``session.run`` per box, decode. Skipped when rtmlib does not import (it needs ``tqdm``).

Both sessions: ORT CPU, ``--threads`` intra-op threads, the same network weights, and
``session.intra_op.allow_spinning = 0``: two sessions in one process each own a thread pool, and on a 2-core
machine the idle session's spinning worker takes a core from the running one (measured with spinning on, 32 boxes:
both pipelines ~2x slower, the usual one 8.8 ms instead of 4.6). Each row interleaves the two pipelines
(A B A B ...) after a warm-up and prints the medians and the ratio usual / one file (> 1: the one file is faster).
``--spinning``: ORT's default instead (``allow_spinning`` on), with one session alive at a time so that no idle
pool competes: per row, 3 rounds, each timing ``--repeats`` runs of one pipeline in a fresh session and then the
next; medians of the round medians.
The outputs are compared once per row: OpenCV's uint8 warp rounds each crop pixel to an integer (its fixed-point
bilinear), the file interpolates in float32, so on uint8 frames the keypoints can differ by a SimCC bin or more
where two bins are close; with ``--float-frames`` both interpolate in float and agree to ~1e-4 px.
"""

from __future__ import annotations

import argparse
import gc
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


MEAN = np.array([123.675, 116.28, 103.53], np.float32)  # RTMPose's (mmpose's ImageNet) normalisation
STD = np.array([58.395, 57.12, 57.375], np.float32)


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
    batch = np.ascontiguousarray(((np.stack(crops).astype(np.float32) - MEAN) / STD).transpose(0, 3, 1, 2))
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
    parser.add_argument("--float-frames", action="store_true", help="float32 frames instead of uint8")
    parser.add_argument("--spinning", action="store_true", help="ORT's default spinning, one session at a time")
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
    pipeline = PoseDecoder(net, "simcc", input_size=size, split_ratio=split, boxes="xyxy", crop=True,
                           channels_last=True, mean=MEAN.tolist(), std=STD.tolist())  # fmt: skip
    dtype = np.float32 if args.float_frames else np.uint8
    frame = torch.from_numpy((np.random.default_rng(1).uniform(0, 255, (1, *FRAME, 3))).astype(dtype))
    one_file = to_onnx(pipeline, (frame, example_boxes("xyxy")), dynamic_shapes=(({1: "H", 2: "W"}, {0: "N"}),),
                       input_names=["frames", "boxes"], output_names=["keypoints", "scores"])  # fmt: skip

    def session(proto):
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        spinning = "1" if args.spinning else "0"  # see the module docstring
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])

    net_session, file_session = session(network), session(one_file)
    tool = rtmlib_tool(network, size, net_session)

    def reopen(name: str) -> None:
        """A fresh session for pipeline ``name`` (``--spinning``: the others' are closed, one pool at a time)."""
        nonlocal net_session, file_session
        net_session = file_session = None
        if tool is not None:
            tool.session = None
        gc.collect()
        if name == "file":
            file_session = session(one_file)
        else:
            net_session = session(network)
            if tool is not None:
                tool.session = net_session

    rng = np.random.default_rng(0)
    frame_hwc = np.ascontiguousarray(rng.uniform(0, 255, (*FRAME, 3)).astype(dtype))
    mode = (f"spinning on, one session at a time, 3 rounds of {args.repeats} runs" if args.spinning
            else f"spinning off, {args.repeats} interleaved runs per row")  # fmt: skip
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, opencv {cv2.__version__}; ORT CPU "
          f"{args.threads} threads; frame {FRAME[1]}x{FRAME[0]} {np.dtype(dtype).name} HWC, crops "
          f"{size[0]}x{size[1]}; {mode}, medians in ms; ratio > 1: the one file "
          f"is faster; diff: max |keypoint difference| from the one file, frame px")  # fmt: skip
    if tool is None:
        print("rtmlib column skipped: `import rtmlib` failed (pip install --no-deps rtmlib==0.0.16 tqdm)")
    print(f"{'boxes':>5} {'one file':>9} {'batched':>8} {'rtmlib':>8} {'batched/file':>13} {'rtmlib/file':>12} "
          f"{'diff batched':>13} {'diff rtmlib':>12}")  # fmt: skip
    for count in args.boxes:
        low = rng.uniform([0, 0], [FRAME[1] - 120, FRAME[0] - 200], (count, 2))
        boxes = np.concatenate([low, low + rng.uniform([40, 80], [120, 200], (count, 2))], 1).astype(np.float32)
        runs = {  # the sessions are looked up at call time: --spinning reopens them
            "file": lambda boxes=boxes: file_session.run(None, {"frames": frame_hwc[None], "boxes": boxes}),
            "batched": lambda boxes=boxes: usual(net_session, frame_hwc, boxes, size, split),
        }
        if tool is not None:
            runs["rtmlib"] = lambda boxes=boxes: tool(frame_hwc, boxes)
        if args.spinning:
            out = {}
            for name, fn in runs.items():
                reopen(name)
                out[name] = fn()[0]
        else:
            out = {name: fn()[0] for name, fn in runs.items()}
        diff = {name: float(np.abs(out["file"] - kp).max()) for name, kp in out.items()}
        if args.spinning:
            ms = sequential_medians(runs, args.repeats, reopen)
        else:
            ms = interleaved_medians(runs, args.repeats)
        r, dr = ms.get("rtmlib", float("nan")), diff.get("rtmlib", float("nan"))
        print(f"{count:>5} {ms['file']:>9.2f} {ms['batched']:>8.2f} {r:>8.2f} {ms['batched'] / ms['file']:>13.2f} "
              f"{r / ms['file']:>12.2f} {diff['batched']:>13.2e} {dr:>12.2e}")  # fmt: skip
    return 0


def interleaved_medians(runs: dict, repeats: int) -> dict[str, float]:
    """ms per pipeline: A B A B ... after 3 warm-up rounds, medians."""
    times = {name: [] for name in runs}
    for _ in range(3):
        for fn in runs.values():
            fn()
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def sequential_medians(runs: dict, repeats: int, reopen, rounds: int = 3) -> dict[str, float]:
    """ms per pipeline: ``rounds`` rounds, each pipeline in turn in a fresh session (``reopen(name)``), 5
    warm-up runs then ``repeats`` timed; the median of the round medians."""
    medians = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            reopen(name)
            for _ in range(5):
                fn()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            medians[name].append(statistics.median(times) * 1e3)
    return {name: statistics.median(m) for name, m in medians.items()}


def rtmlib_tool(network, size: tuple[int, int], net_session):
    """rtmlib 0.0.16's ``RTMPose`` on the network file, its session replaced by ``net_session`` (the same
    options as the one file's); None when rtmlib does not import."""
    import tempfile

    try:
        from rtmlib.tools.pose_estimation.rtmpose import RTMPose
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "network.onnx"
        path.write_bytes(network.SerializeToString())
        tool = RTMPose(str(path), model_input_size=size, backend="onnxruntime", device="cpu")
    tool.session = net_session
    return tool


if __name__ == "__main__":
    raise SystemExit(main())
