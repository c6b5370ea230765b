"""CLI: `quantize` (quantization-aware fine-tuning to a .keras) and `quant-report` (per-layer int8 error)."""

from __future__ import annotations

import argparse
import json

from edgetpu_models.cli.args import add_force_arg, add_model_args, batch_arg, bounded_int, lr_arg, print_json, seed_arg
from edgetpu_models.cli.commands import command_help
from edgetpu_models.errors import UsageError
from edgetpu_models.model_io import open_model
from edgetpu_models.quantize.ptq import calibration_set
from edgetpu_models.quantize.qat import MAX_QAT_STEPS, QATConfig, run_qat
from edgetpu_models.quantize.report import quantization_report

_QAT = QATConfig()


def cmd_quantize(args: argparse.Namespace) -> int:
    config = QATConfig(steps=args.qat_steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                       seed=args.seed, progress=not args.no_progress)
    if not args.out.endswith(".keras"):
        raise UsageError(f"--out {args.out}: expected a .keras file name")
    result = run_qat(args.model, args.data, args.out, config, variant=args.variant, resolution=args.resolution,
                     log=print, force=args.force)
    if "val_accuracy" in result.stats:
        print(f"validation accuracy (fake-quantized): {100 * result.stats['val_accuracy']:.1f}%")
    print(f"wrote {result.path}  (export it: edgetpu-models export {args.out} --data {args.data} --out MODEL.tflite)")
    return 0


def cmd_quant_report(args: argparse.Namespace) -> int:
    loaded = open_model(args.model, args.variant, args.resolution)
    size = int(loaded.model.input_shape[1])
    cal = calibration_set(args.data, size, loaded.normalization, count=max(args.calibration_images, 100))
    report = quantization_report(loaded.model, cal, images=args.images, model_name=loaded.name)
    if args.json:
        print_json(json.dumps(report.to_dict(), indent=1))
    else:
        print(report.format(args.top))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help=command_help("quantize"))
    add_model_args(p)
    p.add_argument("--data", required=True, help="dataset folder (one sub-folder of images per class)")
    p.add_argument("--qat-steps", type=bounded_int(0, MAX_QAT_STEPS), default=_QAT.steps,
                   help="fine-tuning steps with fake quantization (0: wrap only); checkpointed in FILE.keras.ckpt/ "
                        "every 25 steps, and a rerun with the same --out resumes there")
    p.add_argument("--batch-size", type=batch_arg, default=_QAT.batch_size)
    p.add_argument("--learning-rate", type=lr_arg, default=_QAT.learning_rate)
    p.add_argument("--seed", type=seed_arg, default=_QAT.seed)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, metavar="FILE.keras")
    add_force_arg(p)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("quant-report", help=command_help("quant-report"))
    add_model_args(p)
    p.add_argument("--data", required=True, help="dataset folder: calibration and debug images")
    p.add_argument("--images", type=bounded_int(1, 10_000), default=32, help="debug images compared layer by layer")
    p.add_argument("--calibration-images", type=bounded_int(1, 1_000_000), default=200)
    p.add_argument("--top", type=bounded_int(1, 100_000), default=10, help="how many of the worst layers to list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_quant_report)
