"""CLI subcommands: train, finetune, demo. TensorFlow is imported inside the command functions only."""

from __future__ import annotations

import argparse
import os
import re

from edgetpu_models.cli.args import (
    add_model_args,
    batch_arg,
    bounded_float,
    epochs_arg,
    fraction_arg,
    lr_arg,
    resolution_arg,
    seed_arg,
)
from edgetpu_models.cli.commands import command_help
from edgetpu_models.data import default_dataset_dir
from edgetpu_models.deploy.demo import DemoConfig, run_demo
from edgetpu_models.io_utils import check_destination
from edgetpu_models.nas.search.oneshot.export import supernet_init_weights
from edgetpu_models.tables import format_table
from edgetpu_models.train import DECAYS, OPTIMIZERS, STRATEGIES, config_from_args, train


def _default_out(command: str, model: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.splitext(os.path.basename(model))[0])
    return os.path.join("runs", f"{command}_{stem}")


def _add_train_args(p: argparse.ArgumentParser, *, epochs: int, lr: float, warmup: float) -> None:
    p.add_argument("--data", metavar="DIR", help="image folder, one sub-folder per class (default: the bundled "
                                                 "handwritten digits)")
    p.add_argument("--out", metavar="DIR", help="run folder: checkpoints, logs, model.keras (default: runs/<command>_"
                                                "<model>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--epochs", type=epochs_arg, default=epochs, help=f"default {epochs}")
    p.add_argument("--batch-size", dest="batch_size", type=batch_arg, default=32, help="default 32")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="rmsprop")
    p.add_argument("--lr", dest="learning_rate", type=lr_arg, default=lr,
                   help=f"learning rate per 256 images, scaled to the batch (default {lr})")
    p.add_argument("--warmup-epochs", dest="warmup_epochs", type=bounded_float(0.0, 10_000.0), default=warmup)
    p.add_argument("--decay", choices=DECAYS, default="cosine", help="after warm-up (default cosine)")
    p.add_argument("--label-smoothing", dest="label_smoothing", type=bounded_float(0.0, 0.99), default=0.1)
    p.add_argument("--weight-decay", dest="weight_decay", type=bounded_float(0.0, 1.0), default=1e-5,
                   help="L2 on kernels")
    p.add_argument("--ema", type=fraction_arg, help="keep an exponential moving average of weights (e.g. 0.999)")
    p.add_argument("--bn-momentum", dest="bn_momentum", type=fraction_arg,
                   help="batch-norm momentum for short runs, e.g. 0.9 (default: the spec's)")
    p.add_argument("--validation-split", dest="validation_split", type=bounded_float(0.0, 0.9), default=0.2)
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--no-augment", dest="augment", action="store_false", help="no random crop / flip")
    p.add_argument("--no-flip", dest="flip", action="store_false", help="random crop only (text, digits)")
    p.add_argument("--strategy", choices=STRATEGIES, default="default",
                   help="tf.distribute: mirrored (local GPUs), multi-worker (TF_CONFIG), tpu")
    p.add_argument("--tpu", help="TPU name or grpc:// address for --strategy tpu")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_train(args: argparse.Namespace) -> int:
    weights = getattr(args, "weights", None)
    data_dir = args.data or default_dataset_dir()
    out = args.out or _default_out(args.command, args.model)
    check_destination(out, folder=True)
    if getattr(args, "init_from_supernet", None):
        os.makedirs(out, exist_ok=True)
        weights = supernet_init_weights(args.init_from_supernet, args.model, args.variant,
                                        os.path.join(out, "init_from_supernet.h5"))
    config = config_from_args(args)
    print(f"{args.command} {args.model} on {data_dir} -> {out}"
          + (f" (from weights {weights})" if weights else " (from scratch)"))
    result = train(args.model, data_dir, out, config, variant=args.variant, weights=weights, resume=args.resume,
                   strategy=args.strategy, tpu=args.tpu, progress=not args.quiet, log=print)
    top5 = "n/a" if result.top5 is None else f"{result.top5:.4f}"
    print(format_table(["epochs", "train images", "val images", "top-1", f"top-{result.top_k}", "model"],
                       [[result.epochs, result.num_train, result.num_val, f"{result.top1:.4f}", top5,
                         result.model_path]], right=(0, 1, 2, 3, 4)))
    print(f"TensorBoard: tensorboard --logdir {os.path.join(out, 'logs')}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    config = DemoConfig(model=args.model, data=args.data, out=args.out, epochs=args.epochs, qat_epochs=args.qat_epochs,
                        resolution=args.resolution, weights=args.weights, seed=args.seed)
    run_demo(config, log=print)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help=command_help("train"))
    add_model_args(p)
    _add_train_args(p, epochs=10, lr=0.016, warmup=1.0)
    p.add_argument("--init-from-supernet", metavar="DIR",
                   help="start from the weights sliced out of a one-shot search's super-network (the spec must be "
                        "a point of its space; use --variant search for the super-network's width)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help=command_help("finetune"))
    add_model_args(p)
    p.add_argument("--weights", required=True,
                   help="'imagenet', a .safetensors (timm naming) / .h5 weights file, or a .keras model")
    _add_train_args(p, epochs=5, lr=0.004, warmup=0.5)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help=command_help("demo"))
    p.add_argument("--model", default="efficientnet_edgetpu_s", help="zoo name or spec file "
                                                                     "(default efficientnet_edgetpu_s)")
    p.add_argument("--data", metavar="DIR", help="image folder (default: the bundled handwritten digits)")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/demo_<time>)")
    p.add_argument("--weights", help="start from these weights ('imagenet' or a file) instead of from scratch")
    p.add_argument("--epochs", type=epochs_arg, default=None, help="float training epochs (default: the demo's)")
    p.add_argument("--qat-epochs", dest="qat_epochs", type=epochs_arg, default=None,
                   help="QAT epochs (default: the demo's)")
    p.add_argument("--resolution", type=resolution_arg, default=None, help="input size (default: the demo's)")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.set_defaults(func=cmd_demo)
