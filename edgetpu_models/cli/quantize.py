"""CLI: `quantize` (quantization-aware fine-tuning to a .keras) and `quant-report` (per-layer int8 error)."""

from __future__ import annotations

import argparse
import json
import os
import shutil

from edgetpu_models.cli.args import add_model_args, batch_arg, bounded_int, lr_arg, seed_arg
from edgetpu_models.errors import UsageError


def cmd_quantize(args: argparse.Namespace) -> int:
    from edgetpu_models.data import load_image_folder
    from edgetpu_models.keras_io import save_keras
    from edgetpu_models.keras_models import load_model_ref
    from edgetpu_models.quantize.qat import qat_finetune, quantize_model
    from edgetpu_models.sidecar import Sidecar, write_sidecar

    if not args.out.endswith(".keras"):
        raise UsageError(f"--out {args.out}: expected a .keras file name")
    loaded = load_model_ref(args.model, args.variant, args.resolution)
    model = loaded.model
    size = int(model.input_shape[1])
    data = load_image_folder(args.data, size, loaded.normalization, batch_size=args.batch_size,
                             validation_split=0.2, seed=args.seed, augment=True)
    outputs = int(model.output_shape[-1])
    if outputs != data.num_classes:
        from edgetpu_models.train import replace_head

        print(f"{loaded.name}: {outputs} outputs, {args.data} has {data.num_classes} classes: new classifier head")
        model = replace_head(model, data.num_classes)
    qat = quantize_model(model)
    print(f"{loaded.name}: wrapped for quantization-aware training (batch norm folded, {len(qat.layers)} layers); "
          f"{data.num_train} training / {data.num_val} validation images, {args.qat_steps} steps")
    ckpt_dir = args.out + ".ckpt"
    stats = qat_finetune(qat, data.train, args.qat_steps, learning_rate=args.learning_rate,
                         val=data.val if data.num_val else None, progress=not args.no_progress,
                         checkpoint_dir=ckpt_dir)
    if stats["resumed_from"]:
        print(f"resumed from the checkpoint at step {int(stats['resumed_from'])} ({ckpt_dir})")
    meta = Sidecar(model=loaded.name, normalization=loaded.normalization, labels=tuple(data.class_names),
                   input_size=(size, size))
    write_sidecar(args.out, meta, model_content=lambda tmp: save_keras(qat, tmp))
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # finished: the .keras holds everything
    if "val_accuracy" in stats:
        print(f"validation accuracy (fake-quantized): {100 * stats['val_accuracy']:.1f}%")
    print(f"wrote {os.path.abspath(args.out)}  (export it: edgetpu-models export {args.out} --data {args.data} "
          f"--out MODEL.tflite)")
    return 0


def cmd_quant_report(args: argparse.Namespace) -> int:
    from edgetpu_models.keras_models import load_model_ref
    from edgetpu_models.quantize.ptq import calibration_set
    from edgetpu_models.quantize.report import quantization_report

    loaded = load_model_ref(args.model, args.variant, args.resolution)
    size = int(loaded.model.input_shape[1])
    cal = calibration_set(args.data, size, loaded.normalization, count=max(args.calibration_images, 100))
    report = quantization_report(loaded.model, cal, images=args.images, model_name=loaded.name)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(report.format(args.top))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="quantization-aware fine-tuning (tfmot, batch norm folded) to a .keras model")
    add_model_args(p)
    p.add_argument("--data", required=True, help="dataset folder (one sub-folder of images per class)")
    p.add_argument("--qat-steps", type=bounded_int(0, 10_000_000), default=100,
                   help="fine-tuning steps with fake quantization (0: wrap only); checkpointed in FILE.keras.ckpt/ "
                        "every 25 steps, and a rerun with the same --out resumes there")
    p.add_argument("--batch-size", type=batch_arg, default=16)
    p.add_argument("--learning-rate", type=lr_arg, default=1e-4)
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, metavar="FILE.keras")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("quant-report", help="per-layer int8 vs float error: which layers lose accuracy")
    add_model_args(p)
    p.add_argument("--data", required=True, help="dataset folder: calibration and debug images")
    p.add_argument("--images", type=bounded_int(1, 10_000), default=32, help="debug images compared layer by layer")
    p.add_argument("--calibration-images", type=bounded_int(1, 1_000_000), default=200)
    p.add_argument("--top", type=bounded_int(1, 100_000), default=10, help="how many of the worst layers to list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_quant_report)
