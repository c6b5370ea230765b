"""The command table: every `edgetpu-models` command, the module that registers it, and its one-line help.

`app.py` builds the top-level parser from this table alone and imports only the module of the command being run,
so `edgetpu-models --help` (and a command's own run) never imports the other command modules and what they use. A
module's `register(subparsers)` adds its commands with the help from here: the help is written once."""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    module: str
    help: str


COMMANDS: dict[str, Command] = {
    "list": Command("edgetpu_models.cli.zoo", "every zoo model with resolution, params and MACs"),
    "profile": Command("edgetpu_models.cli.zoo", "per-layer shapes, params and MACs of a spec (no TensorFlow)"),
    "build": Command("edgetpu_models.cli.zoo", "build a zoo model or spec as a tf_keras model"),
    "train": Command("edgetpu_models.cli.train", "train a zoo model or spec from scratch on an image folder"),
    "finetune": Command("edgetpu_models.cli.train",
                      "fine-tune from ImageNet (or file) weights with a new head for your "
                      "classes"),
    "demo": Command("edgetpu_models.cli.train",
                      "the whole pipeline on the bundled dataset: train (fine-tune when "
                      "ImageNet weights are cached), QAT, int8 export, Edge TPU check, "
                      "latency estimate, compile (if installed), classify, benchmark, summary"),
    "estimate": Command("edgetpu_models.cli.latency",
                      "latency of a model on a target (Edge TPU model, CPU predictor or "
                      "measured)"),
    "calibrate": Command("edgetpu_models.cli.latency",
                      "fit a target's free constants to measurements (written to your config "
                      "folder)"),
    "latency-server": Command("edgetpu_models.cli.service",
                      "serve Edge TPU latency estimates over gRPC (for parallel search)"),
    "nas": Command("edgetpu_models.cli.search", "accelerator-aware architecture search (search, show)"),
    "quantize": Command("edgetpu_models.cli.quantize",
                      "quantization-aware fine-tuning (tfmot, batch norm folded) to a .keras "
                      "model"),
    "quant-report": Command("edgetpu_models.cli.quantize", "per-layer int8 vs float error: which layers lose accuracy"),
    "export": Command("edgetpu_models.cli.deploy",
                      "int8 TFLite for the Edge TPU (+ X.tflite.json metadata and "
                      "X.tflite.labels.txt)"),
    "check": Command("edgetpu_models.cli.run",
                      "Edge TPU compatibility of a .tflite without the compiler (exit 1 if "
                      "not fully mapped)"),
    "compile": Command("edgetpu_models.cli.deploy", "run edgetpu_compiler (or, without it, the compatibility check)"),
    "partition": Command("edgetpu_models.cli.deploy",
                      "cut an int8 .tflite into N segments for a pipeline of N Edge TPUs (cut "
                      "points from the latency model)"),
    "evaluate": Command("edgetpu_models.cli.run",
                      "top-1/top-5 of models on a labelled image folder; float against int8"),
    "report": Command("edgetpu_models.cli.deploy",
                      "one self-contained HTML page: per-layer latency, ops on the Edge TPU, "
                      "memory"),
    "classify": Command("edgetpu_models.cli.run",
                      "classify images with an exported .tflite (labels/normalisation from "
                      "its sidecar X.tflite.json); segment files in order run as a pipeline"),
    "benchmark": Command("edgetpu_models.cli.run",
                      "time a .tflite on this machine (median, p90, p99 ms); segment files in "
                      "order run as a pipeline"),
    "segment": Command("edgetpu_models.cli.segment",
                      "class map + coloured overlay PNG per image from a segmentation .tflite"),
    "seg-data": Command("edgetpu_models.cli.segment",
                      "write the offline synthetic segmentation set (images/, masks/)"),
    "seg-train": Command("edgetpu_models.cli.segment",
                      "train a zoo segmentation model (loss ignores 255); QAT and int8 export"),
    "seg-eval": Command("edgetpu_models.cli.segment",
                      "mIoU / per-class IoU / pixel accuracy of a segmentation .tflite"),
    "seg-demo": Command("edgetpu_models.cli.segment",
                      "synthetic set -> train -> QAT -> int8 -> check -> mIoU float vs int8"),
}


def command_help(name: str) -> str:
    """The one-line help of command `name` (for its module's add_parser)."""
    return COMMANDS[name].help
