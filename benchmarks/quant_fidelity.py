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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

TARGET = 0.97


def _tflite_predict(path: str, images: np.ndarray, threads: int = 2) -> np.ndarray:
    """Class predictions of an exported file, fed as deployed: quantized with the input scale/zero point in X.json."""
    from ai_edge_litert.interpreter import Interpreter

    from edgetpu_models.deploy.export import read_metadata

    meta = read_metadata(path)
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


def main() -> int:
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
    args = ap.parse_args()

    import tensorflow as tf
    import tf_keras as keras

    from edgetpu_models.builder import build_model
    from edgetpu_models.data import default_dataset_dir, load_image_folder
    from edgetpu_models.deploy.export import export_tflite
    from edgetpu_models.preprocessing import normalization_of
    from edgetpu_models.quantize.ptq import CalibrationSet
    from edgetpu_models.quantize.qat import load_model, qat_finetune, quantize_model, save_model

    tf.keras.utils.set_random_seed(0)
    data_dir = args.data or default_dataset_dir()
    norm = normalization_of(args.model)
    tag = f"{args.model}_{args.resolution}_e{args.epochs}"
    work = os.path.join(args.work_dir, tag)
    os.makedirs(work, exist_ok=True)
    data = load_image_folder(data_dir, args.resolution, norm, batch_size=args.batch_size, validation_split=0.2,
                             seed=0, augment=True, flip=False)
    val_images = np.concatenate([np.asarray(x) for x, _ in data.val])
    val_labels = np.concatenate([np.asarray(y) for _, y in data.val])
    print(f"{data_dir}: {data.num_train} training / {data.num_val} held-out images, {data.num_classes} classes, "
          f"{args.model} at {args.resolution} px")

    float_path = os.path.join(work, "float.keras")
    if os.path.exists(float_path):
        model = load_model(float_path)
        print(f"stage 1: float model from {float_path} (delete it to retrain)")
    else:
        from tqdm.keras import TqdmCallback

        t = time.perf_counter()
        model = build_model(args.model, resolution=args.resolution, classes=data.num_classes)
        model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(),
                      metrics=["accuracy"])
        model.fit(data.train, epochs=args.epochs, verbose=0, callbacks=[TqdmCallback(verbose=0, desc="float")])
        save_model(model, float_path)
        print(f"stage 1: trained the float model for {args.epochs} epochs in {time.perf_counter() - t:.0f} s")
    float_pred = _keras_predict(model, val_images)
    float_acc = float(np.mean(float_pred == val_labels))
    print(f"  float Keras top-1 on held-out images: {100 * float_acc:.1f}%")

    calib = CalibrationSet(dataset=data.train, count=args.calibration_images, image_size=args.resolution,
                           class_names=data.class_names, directory=data_dir)
    results: dict = {"model": args.model, "resolution": args.resolution, "dataset": data_dir,
                     "held_out": int(data.num_val), "float_top1": float_acc}

    t = time.perf_counter()
    ptq = export_tflite(model, os.path.join(work, "ptq.tflite"), representative=calib, model_name=args.model,
                        normalization=norm, labels=data.class_names)
    ptq_pred = _tflite_predict(ptq.path, val_images)
    results["ptq"] = {"agreement": float(np.mean(ptq_pred == float_pred)),
                      "top1": float(np.mean(ptq_pred == val_labels)), "export_s": time.perf_counter() - t,
                      "calibration_images": ptq.calibration_images}
    print(f"stage 2: PTQ int8 ({ptq.calibration_images} calibration images): agreement with float Keras "
          f"{100 * results['ptq']['agreement']:.2f}%, int8 top-1 {100 * results['ptq']['top1']:.1f}%")

    qat_path = os.path.join(work, f"qat_{args.qat_steps}.keras")
    if os.path.exists(qat_path):
        qat = load_model(qat_path)
        print(f"stage 3: QAT model from {qat_path}")
    else:
        t = time.perf_counter()
        qat = quantize_model(model)
        qat_finetune(qat, data.train, args.qat_steps, learning_rate=1e-4, progress=True,
                     checkpoint_dir=qat_path + ".ckpt")
        save_model(qat, qat_path)
        print(f"stage 3: QAT fine-tune, {args.qat_steps} steps, {time.perf_counter() - t:.0f} s")
    qat_keras_pred = _keras_predict(qat, val_images)
    qres = export_tflite(qat, os.path.join(work, "qat.tflite"), representative=calib, model_name=args.model,
                         normalization=norm, labels=data.class_names)
    qat_pred = _tflite_predict(qres.path, val_images)
    results["qat"] = {"agreement": float(np.mean(qat_pred == float_pred)),
                      "agreement_with_qat_keras": float(np.mean(qat_pred == qat_keras_pred)),
                      "top1": float(np.mean(qat_pred == val_labels)),
                      "qat_keras_top1": float(np.mean(qat_keras_pred == val_labels)), "steps": args.qat_steps}
    print(f"  QAT int8: agreement with the float Keras model {100 * results['qat']['agreement']:.2f}%, with the QAT "
          f"Keras model {100 * results['qat']['agreement_with_qat_keras']:.2f}%, int8 top-1 "
          f"{100 * results['qat']['top1']:.1f}% (QAT Keras {100 * results['qat']['qat_keras_top1']:.1f}%)")

    ok = results["ptq"]["agreement"] >= TARGET and results["qat"]["agreement_with_qat_keras"] >= TARGET
    print(f"\nsummary ({data.num_val} held-out images): PTQ agreement {100 * results['ptq']['agreement']:.2f}%, "
          f"QAT agreement {100 * results['qat']['agreement_with_qat_keras']:.2f}% (int8 vs its Keras model) / "
          f"{100 * results['qat']['agreement']:.2f}% (vs the float model before QAT); target >= {100 * TARGET:.0f}%: "
          f"{'met' if ok else 'NOT met'}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
