"""INT8 on a trained pose file: where the int8 line is drawn, what it does to keypoints, and what it costs.

Run: ``python benchmarks/bench_int8.py [--steps 4300] [--weights W.pt | --save-weights W.pt] [--threads 2]
[--no-nncf] [--out DIR]``.

The model is tests/int8_models.py's six-convolution heatmap network on synthetic images with 17 coloured blobs
(COCO's keypoint count), trained here on one thread (``--steps``; 4300 steps take ~150 s on this machine), exported
with ``--decode heatmap:dark --udp --emit inline --opset 17`` (what TensorRT 8 reads) and as a function-mode file.
Calibration: 32 images; evaluation: 64 held-out images (1088 keypoints). Every INT8 variant is judged against the
float32 file on ONNX Runtime CPU: each keypoint's displacement in network-input pixels (median / p95), and how many
of the keypoints the float32 file got right (within 2 input px = one heatmap px of the truth) moved more than 1 px.

Variants (ONNX Runtime 1.32 ``quantize_static``, QDQ, per-channel int8 weights, int8 activations, MinMax):

- everything quantized;
- ``Conv``/``MatMul`` only (``op_types_to_quantize``; DARK's blur is a ``MatMul``);
- the kpx-tagged nodes excluded, the network's last layer quantized (the heatmaps reach the decoder as int8);
- ``kpx quantize``: the tagged nodes and the network's last layer kept float (:func:`export_tools.quantize.quantize`);
- the same two on the function-mode file;
- NNCF (``nncf.quantize`` on the OpenVINO model read from the inline file, run on OpenVINO's CPU plugin): default,
  and with ``IgnoredScope`` = kpx's list (``kpx inspect --quantization``). Skipped without nncf (``--no-nncf``).

Then latency: the float32 and the ``kpx quantize`` files on ORT CPU at batch 1 and 8, ``--threads`` intra-op
threads, spinning off, rows interleaved (benchmarks/_common.py), medians and the ratio, with each file's accuracy
against the float32 file beside it.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import compare, machine, ort_session  # noqa: E402

from tests import int8_models  # noqa: E402

CORRECT_PX = 2.0  # a keypoint the float32 file got right: within one heatmap px (2 input px) of the truth


class Reader:
    """ONNX Runtime's calibration reader over a list of feed dicts."""

    def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
        self.samples = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.samples, None)


def keypoints_ort(path: Path, images: np.ndarray) -> np.ndarray:
    session = ort_session(path.read_bytes(), 2)
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def row(label: str, got: np.ndarray, reference: np.ndarray, correct: np.ndarray, note: str = "") -> str:
    moved = np.linalg.norm(got - reference, axis=-1)
    return (f"| {label} | {np.median(moved):.3f} / {np.percentile(moved, 95):.2f} | {moved.max():.0f} | "
            f"{int((moved[correct] > 1.0).sum())} of {int(correct.sum())} | {note} |")  # fmt: skip


def ort_variant(fp32: Path, out: Path, samples: list, **options) -> Path:
    import logging

    from onnxruntime.quantization import QuantFormat, quantize_static

    logging.getLogger().setLevel(logging.ERROR)  # ORT's pre-processing advice, at every call
    quantize_static(str(fp32), str(out), Reader(samples), quant_format=QuantFormat.QDQ, per_channel=True, **options)
    return out


def nncf_rows(inline: Path, samples: list, held: np.ndarray, reference: np.ndarray, correct: np.ndarray,
              names: list[str]) -> list[str]:  # fmt: skip
    import nncf
    import openvino as ov

    core = ov.Core()
    rows = []
    import logging

    nncf.set_log_level(logging.ERROR)
    ignored = nncf.IgnoredScope(names=names, validate=False)  # OpenVINO folds a few of the ONNX nodes away
    for label, scope in (("NNCF default (OpenVINO)", None), ("NNCF, IgnoredScope = kpx's list (OpenVINO)", ignored)):
        model = core.read_model(str(inline))
        dataset = nncf.Dataset([s["images"] for s in samples])
        options = {"ignored_scope": scope} if scope is not None else {}
        quantized = nncf.quantize(model, dataset, subset_size=len(samples), **options)
        compiled = core.compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        got = compiled(held)[compiled.outputs[0]]
        fq = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ordered_ops())
        rows.append(row(label, np.asarray(got), reference, correct, f"{fq} FakeQuantize"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4300, help="training steps (one thread; ~150 s here)")
    parser.add_argument("--weights", type=Path, help="load the network's weights instead of training")
    parser.add_argument("--save-weights", type=Path, help="save the trained weights here")
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads for the latency rows")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--no-nncf", action="store_true", help="skip the NNCF rows")
    parser.add_argument("--out", type=Path, help="keep the files here (default: a temporary directory)")
    args = parser.parse_args(argv)

    import onnx
    import onnxruntime

    from export_tools.decoding import PoseDecoder
    from export_tools.exporter import export
    from export_tools.quantize import exclusion, quantize

    net = int8_models.HeatmapNet()
    if args.weights:
        net.load_state_dict(torch.load(args.weights, weights_only=True))
        net.eval()
        print(f"weights: {args.weights}")
    else:
        info = int8_models.train(net, args.steps)
        print(f"trained {info['steps']} steps x 16 images on one thread in {info['seconds']:.0f} s: loss "
              f"{info['first_loss']:.3f} -> {info['last_loss']:.3f}")  # fmt: skip
        if args.save_weights:
            torch.save(net.state_dict(), args.save_weights)
    calibration, _ = int8_models.make_batch(32, torch.Generator().manual_seed(1))
    held, truth = int8_models.make_batch(64, torch.Generator().manual_seed(2))
    samples = [{"images": calibration[i : i + 1].numpy()} for i in range(len(calibration))]
    held_np = held.numpy()
    pose = PoseDecoder(net, **int8_models.decoder_options(net)).eval()
    tmp = tempfile.TemporaryDirectory()
    out = args.out or Path(tmp.name)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for emit, opset in (("inline", 17), ("function", 18)):
        files[emit] = out / f"pose-{emit}{opset}.onnx"
        export(pose, (calibration[:2],), files[emit], opset=opset, emit=emit, input_names=["images"],
               dynamic_shapes=(({0: "B"},),))  # fmt: skip
    reference = keypoints_ort(files["inline"], held_np)
    correct = np.linalg.norm(reference - truth.numpy(), axis=-1) < CORRECT_PX
    error = np.linalg.norm(reference - truth.numpy(), axis=-1)
    print(f"float32 file: {int(correct.sum())} of {correct.size} held-out keypoints within {CORRECT_PX:g} input px "
          f"of the truth; median error {np.median(error):.2f} px")  # fmt: skip

    inline = onnx.load(str(files["inline"]))
    excluded = exclusion(inline)
    tagged_only = [n for n in excluded.nodes if n not in excluded.heads]
    rows = [
        "| variant | median / p95 px | max px | float32-correct keypoints moved > 1 px | note |",
        "|---|---|---|---|---|",
    ]
    variants = {
        "everything quantized": ort_variant(files["inline"], out / "everything.onnx", samples),
        "Conv/MatMul only": ort_variant(
            files["inline"], out / "convmatmul.onnx", samples, op_types_to_quantize=["Conv", "MatMul"]
        ),
        f"kpx-tagged nodes excluded ({len(tagged_only)}), heatmaps int8": ort_variant(
            files["inline"], out / "tagged.onnx", samples, nodes_to_exclude=tagged_only
        ),
    }
    for emit in ("inline", "function"):
        start = time.perf_counter()
        quantized, found = quantize(onnx.load(str(files[emit])), samples, source="32 images")
        path = out / f"kpx-{emit}.onnx"
        onnx.save(quantized, str(path))
        label = f"`kpx quantize` ({emit} file: {len(found.nodes)} nodes float)"
        variants[label] = path
        print(f"kpx quantize ({emit}): {time.perf_counter() - start:.1f} s")
    variants["function-mode file, everything quantized"] = ort_variant(files["function"], out / "f-everything.onnx",
                                                                       samples)  # fmt: skip
    for label, path in variants.items():
        rows.append(row(label, keypoints_ort(path, held_np), reference, correct))
    if not args.no_nncf:
        try:
            rows += nncf_rows(files["inline"], samples, held_np, reference, correct, excluded.nncf_names())
        except ImportError as exc:
            print(f"(NNCF rows skipped: {exc})")
    stamp = datetime.date.today().isoformat()
    print(f"\n# INT8 variants vs the float32 file, {stamp}; {machine()}")
    print(f"# inline opset-17 file: {len(inline.graph.node)} nodes, {excluded.tagged} added by kpx (tagged), network "
          f"head {', '.join(excluded.heads)}; 64 held-out images, {correct.size} keypoints, displacement in input "
          "px")  # fmt: skip
    print("\n".join(rows))

    print(f"\n# latency, ORT CPU {onnxruntime.__version__}, {args.threads} threads, spinning off, interleaved medians")
    print("| file | batch | fp32 ms | int8 ms | int8 / fp32 | accuracy vs fp32 (median / p95 px) |")
    print("|---|---|---|---|---|---|")
    for emit in ("inline", "function"):
        int8 = out / f"kpx-{emit}.onnx"
        moved = np.linalg.norm(keypoints_ort(int8, held_np) - keypoints_ort(files[emit], held_np), axis=-1)
        for batch in (1, 8):
            x = held_np[:batch]
            runners = {}
            for label, path in (("fp32", files[emit]), ("int8", int8)):
                session = ort_session(path.read_bytes(), args.threads)
                feeds = {session.get_inputs()[0].name: x}
                runners[label] = lambda s=session, f=feeds: s.run(None, f)
            ms = compare(runners, rounds=args.rounds)
            print(f"| {emit} | {batch} | {ms['fp32']:.3f} | {ms['int8']:.3f} | {ms['int8'] / ms['fp32']:.2f} | "
                  f"{np.median(moved):.3f} / {np.percentile(moved, 95):.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
