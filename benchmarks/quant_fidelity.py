"""Quantization fidelity: does the int8 TFLite pick the same class as the float Keras model on held-out images?

    python benchmarks/quant_fidelity.py                       # efficientnet_edgetpu_s at 64 px on the bundled digits
    python benchmarks/quant_fidelity.py --model mobilenet_edgetpu --resolution 96 --epochs 4

1. Short training of the float model on the training split of a small real dataset (the bundled handwritten digits;
   no network, so no ImageNet weights): Adam, a few epochs. Saved in --work-dir and reused, so a rerun (or a run
   killed later on) resumes after this stage.
2. PTQ: full-integer export calibrated on real training images (uint8 input/output, as deployed).
3. QAT: the float model wrapped with tfmot (batch norm folded), fine-tuned a few hundred steps, exported.
For each int8 file: top-1 agreement with the float Keras model on the held-out validation split (and, for QAT, with
the QAT Keras model it was exported from), and the top-1 accuracy of each. Target: agreement >= 97%.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

TARGET = 0.97


def _tflite_predict(path: str, images: np.ndarray, threads: int = 2) -> np.ndarray:
    """Class predictions of an exported file, fed as deployed: quantized with its sidecar's input scale/zero point."""
    from ai_edge_litert.interpreter import Interpreter

    from edgetpu_models.sidecar import require_sidecar

    meta = require_sidecar(path).to_dict()
    interp = Interpreter(model_path=path, num_threads=threads)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    s, z = meta["input"]["scale"], meta["input"]["zero_point"]
    lo, hi = (0, 255) if meta["input"]["dtype"] == "uint8" else (-128, 127)
    preds = []
    for img in images:
        q = np.clip(np.round(img / s + z), lo, hi).astype(inp["dtype"])
        interp.set_tensor(inp["index"], q[None])
        interp.invoke()
        preds.append(int(np.argmax(interp.get_tensor(out["index"])[0])))
    return np.asarray(preds)


def _keras_predict(model, images: np.ndarray) -> np.ndarray:
    return np.argmax(np.asarray(model.predict(images, batch_size=64, verbose=0)), axis=-1)


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_edgetpu_s")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--data", help="dataset folder (default: the bundled digits)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--qat-steps", type=int, default=200)
    ap.add_argument("--calibration-images", type=int, default=200)
    ap.add_argument("--work-dir", default=os.path.join("runs", "quant_fidelity"))
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--smoke", action="store_true",
                    help="a smoke run (tiny settings): exit 0 when every stage ran, whether or not the fidelity "
                         "target is met (it is still printed)")
    return ap.parse_args()


def _float_model(args: argparse.Namespace, data, path: str):
    """Stage 1: the float model, trained briefly with Adam, or the one an earlier run saved at `path`."""
    import tf_keras as keras

    from edgetpu_models.builder import build_model
    from edgetpu_models.model_io import load_keras, save_model
    from edgetpu_models.sidecar import Sidecar
    from edgetpu_models.zoo import normalization_of

    if os.path.exists(path):
        model = load_keras(path)
        print(f"stage 1: float model from {path} (delete it to retrain)")
        return model
    from tqdm.keras import TqdmCallback

    t = time.perf_counter()
    model = build_model(args.model, resolution=args.resolution, classes=data.num_classes)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    model.fit(data.train, epochs=args.epochs, verbose=0, callbacks=[TqdmCallback(verbose=0, desc="float")])
    save_model(model, path, Sidecar(model=args.model, normalization=normalization_of(args.model)))
    print(f"stage 1: trained the float model for {args.epochs} epochs in {time.perf_counter() - t:.0f} s")
    return model


def _qat_model(args: argparse.Namespace, model, data, path: str):
    """Stage 3: the float model wrapped for QAT and fine-tuned, or the one an earlier run saved at `path`."""
    from edgetpu_models.model_io import load_keras, save_model
    from edgetpu_models.quantize.qat import qat_finetune, quantize_model
    from edgetpu_models.sidecar import Sidecar
    from edgetpu_models.zoo import normalization_of

    if os.path.exists(path):
        qat = load_keras(path)
        print(f"stage 3: QAT model from {path}")
        return qat
    t = time.perf_counter()
    qat = quantize_model(model)
    qat_finetune(qat, data.train, args.qat_steps, learning_rate=1e-4, progress=True, checkpoint_dir=path + ".ckpt")
    save_model(qat, path, Sidecar(model=args.model, normalization=normalization_of(args.model)))
    print(f"stage 3: QAT fine-tune, {args.qat_steps} steps, {time.perf_counter() - t:.0f} s")
    return qat


@dataclass(frozen=True)
class _HeldOut:
    """The held-out images with their labels, and the float Keras model's predictions on them."""

    images: np.ndarray
    labels: np.ndarray
    float_pred: np.ndarray


def _ptq_stage(args: argparse.Namespace, model, calib, norm, data, held_out: _HeldOut, work: str) -> dict:
    """Stage 2: full-integer export calibrated on training images, scored against the float model."""
    from edgetpu_models.deploy.export import export_tflite

    t = time.perf_counter()
    ptq = export_tflite(model, os.path.join(work, "ptq.tflite"), representative=calib, model_name=args.model,
                        normalization=norm, labels=data.class_names)
    ptq_pred = _tflite_predict(ptq.path, held_out.images)
    result = {"agreement": float(np.mean(ptq_pred == held_out.float_pred)),
              "top1": float(np.mean(ptq_pred == held_out.labels)), "export_s": time.perf_counter() - t,
              "calibration_images": ptq.calibration_images}
    print(f"stage 2: PTQ int8 ({ptq.calibration_images} calibration images): agreement with float Keras "
          f"{100 * result['agreement']:.2f}%, int8 top-1 {100 * result['top1']:.1f}%")
    return result


def _qat_stage(args: argparse.Namespace, qat, calib, norm, data, held_out: _HeldOut, work: str) -> dict:
    """Stage 3's export: the QAT model's int8 file, scored against the float and the QAT Keras models."""
    from edgetpu_models.deploy.export import export_tflite

    qat_keras_pred = _keras_predict(qat, held_out.images)
    qres = export_tflite(qat, os.path.join(work, "qat.tflite"), representative=calib, model_name=args.model,
                         normalization=norm, labels=data.class_names)
    qat_pred = _tflite_predict(qres.path, held_out.images)
    result = {"agreement": float(np.mean(qat_pred == held_out.float_pred)),
              "agreement_with_qat_keras": float(np.mean(qat_pred == qat_keras_pred)),
              "top1": float(np.mean(qat_pred == held_out.labels)),
              "qat_keras_top1": float(np.mean(qat_keras_pred == held_out.labels)), "steps": args.qat_steps}
    print(f"  QAT int8: agreement with the float Keras model {100 * result['agreement']:.2f}%, with the QAT "
          f"Keras model {100 * result['agreement_with_qat_keras']:.2f}%, int8 top-1 "
          f"{100 * result['top1']:.1f}% (QAT Keras {100 * result['qat_keras_top1']:.1f}%)")
    return result


def _report(results: dict, num_val: int) -> bool:
    """Prints the summary line; whether both agreements meet TARGET."""
    ok = results["ptq"]["agreement"] >= TARGET and results["qat"]["agreement_with_qat_keras"] >= TARGET
    print(f"\nsummary ({num_val} held-out images): PTQ agreement {100 * results['ptq']['agreement']:.2f}%, "
          f"QAT agreement {100 * results['qat']['agreement_with_qat_keras']:.2f}% (int8 vs its Keras model) / "
          f"{100 * results['qat']['agreement']:.2f}% (vs the float model before QAT); target >= {100 * TARGET:.0f}%: "
          f"{'met' if ok else 'NOT met'}")
    return ok


def main() -> int:
    args = _parse_args()

    import tensorflow as tf

    from edgetpu_models.data import default_dataset_dir, load_image_folder
    from edgetpu_models.quantize.ptq import CalibrationSet
    from edgetpu_models.zoo import normalization_of

    tf.keras.utils.set_random_seed(0)
    data_dir = args.data or default_dataset_dir()
    norm = normalization_of(args.model)
    work = os.path.join(args.work_dir, f"{args.model}_{args.resolution}_e{args.epochs}")
    os.makedirs(work, exist_ok=True)
    data = load_image_folder(data_dir, args.resolution, norm, batch_size=args.batch_size, validation_split=0.2,
                             seed=0, augment=True, flip=False)
    val_images = np.concatenate([np.asarray(x) for x, _ in data.val])
    val_labels = np.concatenate([np.asarray(y) for _, y in data.val])
    print(f"{data_dir}: {data.num_train} training / {data.num_val} held-out images, {data.num_classes} classes, "
          f"{args.model} at {args.resolution} px")

    model = _float_model(args, data, os.path.join(work, "float.keras"))
    held_out = _HeldOut(val_images, val_labels, _keras_predict(model, val_images))
    float_acc = float(np.mean(held_out.float_pred == val_labels))
    print(f"  float Keras top-1 on held-out images: {100 * float_acc:.1f}%")

    calib = CalibrationSet(dataset=data.train, count=args.calibration_images, image_size=args.resolution,
                           class_names=data.class_names, directory=data_dir)
    results: dict = {"model": args.model, "resolution": args.resolution, "dataset": data_dir,
                     "held_out": int(data.num_val), "float_top1": float_acc}
    results["ptq"] = _ptq_stage(args, model, calib, norm, data, held_out, work)
    qat = _qat_model(args, model, data, os.path.join(work, f"qat_{args.qat_steps}.keras"))
    results["qat"] = _qat_stage(args, qat, calib, norm, data, held_out, work)
    ok = _report(results, data.num_val)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0 if ok or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
