"""CLI subcommands of the model zoo: list, build, profile."""

from __future__ import annotations

import argparse
import json
import os

from edgetpu_models.builder import build_model
from edgetpu_models.cli.args import add_model_args, classes_arg, print_json
from edgetpu_models.cli.commands import command_help
from edgetpu_models.errors import UsageError
from edgetpu_models.io_utils import check_destination
from edgetpu_models.model_io import save_model
from edgetpu_models.profiler import profile, profile_rows
from edgetpu_models.sidecar import Sidecar
from edgetpu_models.tables import fmt_int, format_table
from edgetpu_models.zoo import ZOO, normalization_of


def _segmentation_rows(build: bool) -> list[list]:
    """The segmentation zoo's rows of `list` (logits graphs; `name@finaliser` selects an output head elsewhere)."""
    from edgetpu_models.seg_graph import seg_zoo

    rows = []
    for name, m in seg_zoo().items():
        g = profile(name)
        row = [name, m.display_name, g.input_shape[0], fmt_int(g.params), fmt_int(g.macs)]
        if build:
            from edgetpu_models.segmentation import build_segmentation_model

            model = build_segmentation_model(name)
            row.append(fmt_int(sum(int(w.shape.num_elements()) for w in model.trainable_weights)))
        rows.append(row)
    return rows


def cmd_list(args: argparse.Namespace) -> int:
    headers = ["model", "architecture", "resolution", "params", "MACs"]
    if args.build:
        headers.append("built (Keras params)")
    rows = []
    for name, entry in ZOO.items():
        g = profile(name)
        row = [name, entry.display_name, g.input_shape[0], fmt_int(g.params), fmt_int(g.macs)]
        if args.build:
            model = build_model(name)
            row.append(fmt_int(sum(int(w.shape.num_elements()) for w in model.trainable_weights)))
        rows.append(row)
    rows += _segmentation_rows(args.build)
    print(format_table(headers, rows, right=(2, 3, 4, 5)))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    g = profile(args.model, args.variant, resolution=args.resolution, classes=args.classes)
    rows = profile_rows(g)
    if args.json:
        print_json(json.dumps({"model": g.name, "input_shape": list(g.input_shape), "params": g.params, "macs": g.macs,
                          "layers": rows}, indent=1))
        return 0
    table = [(r["name"], r["op"], f"{r['kernel']}x{r['kernel']}/{r['stride']}" if r["op"].endswith("conv2d") else "",
              "x".join(map(str, r["output_shape"])), fmt_int(r["params"]), fmt_int(r["macs"])) for r in rows]
    table.append(("total", "", "", "", fmt_int(g.params), fmt_int(g.macs)))
    print(f"{g.name}: input {'x'.join(map(str, g.input_shape))}")
    print(format_table(("layer", "op", "kernel", "output", "params", "MACs"), table, right=(4, 5)))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    if args.out and not args.out.endswith((".keras", ".h5")):
        raise UsageError(f"--out {args.out}: expected a .keras or .h5 file name")
    if args.out:
        check_destination(args.out)
    model = build_model(args.model, args.variant, resolution=args.resolution, classes=args.classes,
                        weights=args.weights)
    if args.summary:
        model.summary(line_length=110)
    trainable = sum(int(w.shape.num_elements()) for w in model.trainable_weights)
    print(f"{model.name}: input {tuple(model.input_shape[1:])}, {fmt_int(trainable)} trainable parameters")
    if args.out:
        size = (int(model.input_shape[1]), int(model.input_shape[2]))
        save_model(model, args.out, Sidecar(model=args.model, input_size=size,
                                            normalization=normalization_of(args.model, args.variant)))
        print(f"wrote {os.path.abspath(args.out)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help=command_help("list"))
    p.add_argument("--build", action="store_true", help="also build each model in Keras and count its parameters")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("profile", help=command_help("profile"))
    add_model_args(p)
    p.add_argument("--classes", type=classes_arg, default=1000)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("build", help=command_help("build"))
    add_model_args(p)
    p.add_argument("--classes", type=classes_arg, default=1000)
    p.add_argument("--weights", help="'imagenet', or a .safetensors (timm naming) / .h5 file")
    p.add_argument("--out", help="save the model (.keras or .h5)")
    p.add_argument("--summary", action="store_true", help="print the Keras summary")
    p.set_defaults(func=cmd_build)
