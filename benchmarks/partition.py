"""Pipelining across several Edge TPUs without the hardware: `partition` on int8 EfficientNet-EdgeTPU-L (300 px) and
Keras' InceptionV3 (299 px), 2 and 4 segments.

    python benchmarks/partition.py                 # builds and converts both models the first time (minutes; cached)
    python benchmarks/partition.py --target coral-devboard --inputs 5
    python benchmarks/partition.py --smoke         # MobilenetEdgeTPU-V2-Tiny at 96 px, 2 segments, in a temp folder

Prints, per model and segment count: the cut points and the per-segment table (predicted latency, cached and streamed
parameter bytes on that segment's own Edge TPU), the predicted pipelined throughput against one Edge TPU, and whether
the segment files, run as a CPU pipeline (one LiteRT interpreter per segment, in threads), reproduce the whole
model's int8 output exactly on random inputs. The models have random weights (weights=None / the zoo without a
checkpoint) and random-pixel calibration: latency and exactness do not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from edgetpu_models.deploy.partition import format_plan, plan_partition, write_segments  # noqa: E402

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "edgetpu_models", "partition_bench")


def zoo_int8(path: str, name: str = "efficientnet_edgetpu_l", resolution: int | None = None) -> str:
    if not os.path.exists(path):
        from edgetpu_models.deploy.export import export_tflite
        from edgetpu_models.model_io import open_model

        loaded = open_model(name, resolution=resolution)
        export_tflite(loaded.model, path, random_calibration=True, model_name=loaded.name,
                      normalization=loaded.normalization)
    return path


def inception_v3(path: str) -> str:
    if not os.path.exists(path):
        import tf_keras as keras

        from edgetpu_models.io_utils import write_bytes_atomic
        from edgetpu_models.quantize.convert import int8_tflite_bytes

        model = keras.applications.InceptionV3(weights=None, input_shape=(299, 299, 3))
        write_bytes_atomic(path, int8_tflite_bytes(model))
    return path


def check_exact(model: str, segments: list[str], inputs: int) -> tuple[bool, float, float]:
    """(every output equal, ms per result of the whole model, ms per result of the overlapped CPU pipeline)."""
    import numpy as np

    from edgetpu_models.deploy.pipeline import open_interpreter

    whole, _ = open_interpreter(model)
    pipe, _ = open_interpreter(segments)
    d_in, d_out = whole.get_input_details()[0], whole.get_output_details()[0]
    rng = np.random.default_rng(0)
    xs = [rng.integers(0, 256, size=d_in["shape"], dtype=d_in["dtype"]) for _ in range(inputs)]
    expected = []
    t0 = time.perf_counter()
    for x in xs:
        whole.set_tensor(d_in["index"], x)
        whole.invoke()
        expected.append(whole.get_tensor(d_out["index"]).copy())
    whole_ms = (time.perf_counter() - t0) * 1e3 / inputs
    t0 = time.perf_counter()
    got = [y[0] for y in pipe.run_stream([[x] for x in xs])]
    pipe_ms = (time.perf_counter() - t0) * 1e3 / inputs
    return all(np.array_equal(a, b) for a, b in zip(expected, got)), whole_ms, pipe_ms


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="coral-usb")
    p.add_argument("--inputs", type=int, default=3, help="random inputs compared whole vs pipeline")
    p.add_argument("--segments", type=int, nargs="+", default=[2, 4])
    p.add_argument("--smoke", action="store_true", help="the smallest run: MobilenetEdgeTPU-V2-Tiny at 96 px, 2 "
                                                        "segments, 1 input, in a temporary folder (checks it runs)")
    args = p.parse_args(argv)
    if args.smoke:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            tiny = zoo_int8(os.path.join(tmp, "v2_tiny_96.tflite"), "mobilenet_edgetpu_v2_tiny", 96)
            _run({"MobilenetEdgeTPU-V2-Tiny (96 px, int8)": tiny}, [2], 1, args.target, tmp)
        return 0
    os.makedirs(CACHE, exist_ok=True)
    models = {"EfficientNet-EdgeTPU-L (300 px, int8)": zoo_int8(os.path.join(CACHE, "efficientnet_l_300.tflite")),
              "InceptionV3 (keras, 299 px, int8)": inception_v3(os.path.join(CACHE, "inception_v3_299.tflite"))}
    _run(models, args.segments, args.inputs, args.target, CACHE)
    return 0


def _run(models: dict[str, str], segments: list[int], inputs: int, target: str, out_dir: str) -> None:
    for label, path in models.items():
        for n in segments:
            t0 = time.perf_counter()
            plan = plan_partition(path, n, target)
            plan_s = time.perf_counter() - t0
            out = os.path.join(out_dir, f"{os.path.splitext(os.path.basename(path))[0]}_{n}")
            files = write_segments(plan, out)
            exact, whole_ms, pipe_ms = check_exact(path, files, inputs)
            print(f"== {label}: {n} segments on {target} (cut before ops {list(plan.cuts)}; planned in "
                  f"{plan_s:.1f} s)")
            print(format_plan(plan))
            print(f"CPU pipeline of the {n} segment files: output equal to the whole model on {inputs} random "
                  f"inputs: {exact}; CPU ms/result whole {whole_ms:.0f}, pipelined {pipe_ms:.0f} (this machine)")
            print()


if __name__ == "__main__":
    sys.exit(main())
