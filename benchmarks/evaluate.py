"""`evaluate` throughput against a plain one-image-at-a-time LiteRT loop, on the same images and the same model.

    python benchmarks/evaluate.py                         # int8 EfficientNet-EdgeTPU-S at 224, 96 images, 2 threads
    python benchmarks/evaluate.py --model S.tflite --images 200 --batch 8

The model: EfficientNet-EdgeTPU-S with its ImageNet head (1000 classes), exported full-integer (uint8 I/O) with random
calibration unless --model names a .tflite (with its sidecar); accuracy is not the point here, the work per image is.
The images: synthetic 500x375 JPEGs (ImageNet's typical size) in WordNet-id folders, decoded from disk by both sides.
The baseline is what a user writes by hand: for each file, decode + preprocess (the same `Preprocess.load`), quantize,
set_tensor, invoke, get_tensor; one LiteRT interpreter with --threads threads. `evaluate` runs the same interpreter
threads, --batch images per invoke, decoding on --workers threads while the previous batch runs.
Printed: images/s of each, the ratio, and where the time goes (decode vs invoke, per image).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_model(folder: str, resolution: int = 224) -> str:
    from edgetpu_models.builder import build_model
    from edgetpu_models.deploy.export import export_tflite
    from edgetpu_models.zoo import normalization_of

    model = build_model("efficientnet_edgetpu_s", resolution=resolution, classes=1000)
    path = os.path.join(folder, "efficientnet_edgetpu_s_int8.tflite")
    export_tflite(model, path, random_calibration=True, model_name="efficientnet_edgetpu_s",
                  normalization=normalization_of("efficientnet_edgetpu_s"))
    return path


def make_images(folder: str, count: int) -> str:
    import numpy as np
    from PIL import Image

    from edgetpu_models.imagenet import wordnet_ids

    rng = np.random.default_rng(0)
    wnids = wordnet_ids()
    root = os.path.join(folder, "val")
    for i in range(count):
        d = os.path.join(root, wnids[i % 10])
        os.makedirs(d, exist_ok=True)
        low = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)  # smooth content, photo-like JPEG size
        Image.fromarray(low).resize((500, 375), Image.BICUBIC).save(os.path.join(d, f"{i:05d}.JPEG"), quality=90)
    return root


def plain_loop(model: str, files: list[str], threads: int) -> dict[str, float]:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from edgetpu_models.deploy.classify import dequantize_output, quantize_input
    from edgetpu_models.deploy.evaluate import open_runner

    pre = open_runner(model).preprocess  # the same preprocessing evaluate uses for this model
    interp = Interpreter(model_path=model, num_threads=threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    decode = invoke = 0.0
    top1 = []
    t_all = time.perf_counter()
    for path in files:
        t0 = time.perf_counter()
        x = quantize_input(pre.load(path), inp)[None]
        t1 = time.perf_counter()
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        top1.append(int(np.argmax(dequantize_output(interp.get_tensor(out["index"])[0], out))))
        invoke += time.perf_counter() - t1
        decode += t1 - t0
    wall = time.perf_counter() - t_all
    return {"wall_s": wall, "decode_s": decode, "invoke_s": invoke, "top1": top1}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="an int8 .tflite with its sidecar (default: export S at 224 into a temp folder)")
    p.add_argument("--resolution", type=int, default=224, help="input size of the exported S (without --model)")
    p.add_argument("--images", type=int, default=96)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds of both (best of each is printed)")
    args = p.parse_args(argv)

    from edgetpu_models.deploy.eval_data import read_dataset
    from edgetpu_models.deploy.evaluate import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model = args.model or make_model(tmp, args.resolution)
        print(f"model {os.path.basename(model)} ({os.path.getsize(model) / 2**20:.2f} MB)"
              + ("" if args.model else f", exported in {time.perf_counter() - t0:.0f} s"))
        root = make_images(tmp, args.images)
        files = read_dataset(root).files
        print(f"{len(files)} JPEG images 500x375; load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
        evaluate([model], root, threads=args.threads, batch=args.batch, workers=args.workers, limit=8)  # warm-up
        runs = []
        for _ in range(args.repeats):  # interleaved, so a busy moment of a shared machine hits both sides alike
            runs.append((plain_loop(model, files, args.threads),
                         evaluate([model], root, threads=args.threads, batch=args.batch, workers=args.workers)))
    n = len(files)
    base, report = min(runs, key=lambda r: r[0]["wall_s"])[0], min(runs, key=lambda r: r[1].wall_s)[1]
    (m,) = report.models
    base_rate, eval_rate = n / base["wall_s"], n / report.wall_s
    ratios = sorted(r[0]["wall_s"] / r[1].wall_s for r in runs)
    print(f"best of {args.repeats} interleaved runs each")
    print(f"plain loop  (1 image per invoke, {args.threads} threads): {base_rate:7.1f} images/s, "
          f"{1000 * base['wall_s'] / n:6.1f} ms/image = decode+preprocess {1000 * base['decode_s'] / n:.1f} ms "
          f"+ invoke {1000 * base['invoke_s'] / n:.1f} ms")
    print(f"evaluate    (batch {m.batch}, {args.threads} threads, {report.workers} decode threads): "
          f"{eval_rate:7.1f} images/s, {1000 * report.wall_s / n:6.1f} ms/image wall; inference "
          f"{1000 * m.inference_s / n:.1f} ms/image, decoding {1000 * report.decode_s / n:.1f} ms/image of thread "
          f"time, overlapped")
    print(f"ratio evaluate / plain loop: {eval_rate / base_rate:.2f}x (best against best); per round: "
          + ", ".join(f"{r:.2f}x" for r in ratios))
    same = sum(int(a == b) for a, b in zip(base["top1"], m.scores.argmax(1)))
    print(f"same top-1 as the plain loop on {same}/{n} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
