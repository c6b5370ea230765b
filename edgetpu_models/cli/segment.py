"""CLI: semantic segmentation. `segment` (class map + overlay PNG per image, Coral via pycoral when present),
`seg-data` (the offline synthetic set), `seg-train` (train / QAT / export a zoo segmentation model), `seg-eval`
(mIoU, per-class IoU, pixel accuracy; float-vs-int8 agreement), `seg-demo` (all of it on the synthetic set)."""

from __future__ import annotations

import argparse
import json

from edgetpu_models.cli.args import bounded_int
from edgetpu_models.cli.commands import command_help
from edgetpu_models.deploy.seg_demo import SegDemoConfig, SegTrainConfig, run_seg_demo, run_seg_train
from edgetpu_models.deploy.segment import Segmenter, evaluate_segmentation, save_outputs
from edgetpu_models.errors import UsageError
from edgetpu_models.seg_data import class_names, list_segmentation_folder, make_synthetic_segmentation
from edgetpu_models.segmentation import build_segmentation_model


def cmd_segment(args: argparse.Namespace) -> int:
    seg = Segmenter(args.model, prefer=args.backend)
    for image in args.images:
        classes = seg.segment(image)
        cls_path, ov_path = save_outputs(image, classes, args.out)
        print(f"{image}: {cls_path}, {ov_path} ({seg.last_ms:.1f} ms, {seg.backend})")
    return 0


def cmd_seg_data(args: argparse.Namespace) -> int:
    folder = make_synthetic_segmentation(args.out, args.count, args.size, args.seed)
    print(f"{args.out}: {len(folder)} image + mask pairs (4 classes, 255 = ignore)")
    return 0


def cmd_seg_train(args: argparse.Namespace) -> int:
    if not args.out.endswith(".h5"):
        raise UsageError(f"--out {args.out}: expected a .h5 weights file")
    cfg = SegTrainConfig(args.model, args.data, args.out, args.size, args.classes, args.epochs, args.qat_epochs,
                         args.batch_size, args.lr, args.limit, args.export, args.finaliser)
    print(json.dumps(run_seg_train(cfg, say=print)))
    return 0


def cmd_seg_eval(args: argparse.Namespace) -> int:
    folder = list_segmentation_folder(args.data, split=args.split, limit=args.limit)
    float_model = None
    if args.float_weights:
        if not args.model:
            raise UsageError("--float-weights needs --model (the zoo name it was trained as)")
        float_model = build_segmentation_model(args.model, classes=args.classes, weights=args.float_weights,
                                               input_shape=(args.size, args.size, 3))
    ev = evaluate_segmentation(args.file, folder, args.classes, float_model=float_model,
                               class_names=class_names(args.data, args.classes))
    print(f"{ev.images} images ({len(folder.skipped)} skipped)")
    for label, sc in (("int8", ev.int8_scores), ("float", ev.float_scores)):
        if sc is not None:
            print(f"{label}: mIoU {100 * sc.miou:.2f}  pixel accuracy {100 * sc.pixel_accuracy:.2f}")
            print("  per-class IoU: " + ", ".join(f"{n} {100 * v:.1f}" for n, v in zip(ev.class_names,
                                                                                     sc.per_class_iou)
                                                 if v is not None))
    if ev.agreement is not None:
        print(f"float vs int8 pixel agreement: {100 * ev.agreement:.2f}%")
    return 0


def cmd_seg_demo(args: argparse.Namespace) -> int:
    r = run_seg_demo(SegDemoConfig(args.work_dir, epochs=args.epochs, qat_epochs=args.qat_epochs,
                                   overlay_path=args.overlay), say=print)
    print(f"float mIoU {100 * r['float']['miou']:.2f}, int8 (QAT) mIoU {100 * r['int8']['miou']:.2f}, fused "
          f"{100 * r['int8_fused']['miou']:.2f}, agreement {100 * r['agreement']:.2f}%")
    print(f"fused form on the Edge TPU: {r['fused_check']['on_edgetpu']}/{r['fused_check']['total']} ops; CPU: "
          f"{'; '.join(r['fused_check']['cpu_ops']) or 'none'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help=command_help("segment"))
    p.add_argument("model", metavar="FILE.tflite")
    p.add_argument("images", nargs="+")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--backend", choices=("pycoral", "litert", "tflite_runtime", "tf.lite"))
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("seg-data", help=command_help("seg-data"))
    p.add_argument("out")
    p.add_argument("--count", type=bounded_int(1, 100_000), default=96)
    p.add_argument("--size", type=bounded_int(32, 2048), default=128)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_seg_data)

    p = sub.add_parser("seg-train", help=command_help("seg-train"))
    p.add_argument("model", help="zoo segmentation model (`edgetpu-models list`)")
    p.add_argument("--data", required=True, help="images/ + masks/ folder, or ADE20K's layout")
    p.add_argument("--out", required=True, metavar="WEIGHTS.h5")
    p.add_argument("--size", type=bounded_int(64, 2048), default=512)
    p.add_argument("--classes", type=bounded_int(1, 255), default=32)
    p.add_argument("--epochs", type=bounded_int(1, 100_000), default=10)
    p.add_argument("--qat-epochs", type=bounded_int(0, 100_000), default=0)
    p.add_argument("--batch-size", type=bounded_int(1, 4096), default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--limit", type=bounded_int(1, 10_000_000), help="use at most this many pairs")
    p.add_argument("--export", metavar="FILE.tflite", help="also export int8 (dataset images calibrate)")
    p.add_argument("--finaliser", default="logits", help="logits | resize512,argmax | resize256,argmax,resize512 ...")
    p.set_defaults(func=cmd_seg_train)
    _register_eval(sub)


def _register_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("seg-eval", help=command_help("seg-eval"))
    p.add_argument("file", metavar="FILE.tflite")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="validation", help="ADE20K subfolder (default validation)")
    p.add_argument("--classes", type=bounded_int(1, 255), default=32)
    p.add_argument("--limit", type=bounded_int(1, 10_000_000))
    p.add_argument("--model", help="zoo name of the float model (with --float-weights)")
    p.add_argument("--float-weights", metavar="WEIGHTS.h5", help="also score the float model and the agreement")
    p.add_argument("--size", type=bounded_int(64, 2048), default=512, help="float model input size")
    p.set_defaults(func=cmd_seg_eval)

    p = sub.add_parser("seg-demo", help=command_help("seg-demo"))
    p.add_argument("--work-dir", default="seg_demo")
    p.add_argument("--epochs", type=bounded_int(1, 1000), default=15)
    p.add_argument("--qat-epochs", type=bounded_int(1, 1000), default=3)
    p.add_argument("--overlay", help="also write an overlay picture (PNG) here")
    p.set_defaults(func=cmd_seg_demo)
