"""Cross-check the Keras models against timm, the independent PyTorch implementation.

Two steps, because timm needs PyTorch, which this project does not depend on:
  1. in an environment with torch + timm:  python tools/timm_crosscheck.py make OUT_DIR [--models ...]
     writes, per model, timm-named random weights (<timm name>.safetensors) and a vector (<timm name>.npz: input_nhwc,
     logits) in the format of ../shared/testdata;
  2. in this project's .venv:              python tools/timm_crosscheck.py check OUT_DIR [--models ...]
     loads each file into our model and prints the largest logit error relative to the largest logit.
`--half` stores the weights as float16 (the timm model computes with exactly those values, so the vector stays exact)
and `--batch` / `--resolution` shrink the input: that is how tests/data/mobilenet_edgetpu_v2_xs.* was made
(`make tests/data --models mobilenet_edgetpu_v2_xs --half --batch 1 --resolution 96`).
Last run (timm 1.0.31, torch 2.14 CPU): EfficientNet-EdgeTPU S 7.5e-07, M 6.3e-07, L 5.7e-07 (torch 2.13);
MobilenetEdgeTPU-V2 at 224, batch 2: XS 9.6e-07, S 9.6e-07, M 1.0e-06, L 1.2e-06.
"""

from __future__ import annotations

import argparse
import os
import sys

MODELS = {"tf_efficientnet_es": "efficientnet_edgetpu.EfficientNetEdgeTPUS",
          "tf_efficientnet_em": "efficientnet_edgetpu.EfficientNetEdgeTPUM",
          "tf_efficientnet_el": "efficientnet_edgetpu.EfficientNetEdgeTPUL",
          "mobilenet_edgetpu_v2_xs": "mobilenet_edgetpu_v2.MobilenetEdgeTPUV2XS",
          "mobilenet_edgetpu_v2_s": "mobilenet_edgetpu_v2.MobilenetEdgeTPUV2S",
          "mobilenet_edgetpu_v2_m": "mobilenet_edgetpu_v2.MobilenetEdgeTPUV2M",
          "mobilenet_edgetpu_v2_l": "mobilenet_edgetpu_v2.MobilenetEdgeTPUV2L"}


def make(out_dir: str, names: list[str], half: bool = False, batch: int = 2, resolution: int | None = None) -> None:
    import numpy as np
    import timm
    import torch
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    for name in names:
        model = timm.create_model(name, pretrained=False, num_classes=1000).eval()
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():  # well-conditioned random BN statistics, as in the shared test vector
            for mod in model.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=gen) * 0.1)
                    mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=gen) + 0.5)
                    mod.weight.copy_(torch.rand(mod.weight.shape, generator=gen) + 0.5)
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.1)
            if half:  # round every float to float16, so the stored half weights are exactly the ones computed with
                for t in model.state_dict().values():
                    if t.is_floating_point():
                        t.copy_(t.half().float())
            res = resolution or model.default_cfg["input_size"][-1]
            x = torch.rand(batch, 3, res, res, generator=gen) * 2 - 1
            logits = model(x)
        state = {k: (v.half() if half else v).contiguous() for k, v in model.state_dict().items()
                 if v.is_floating_point()}
        save_file(state, os.path.join(out_dir, f"{name}.safetensors"))
        np.savez(os.path.join(out_dir, f"{name}.npz"), input_nhwc=x.permute(0, 2, 3, 1).numpy(),
                 logits=logits.numpy())


def relative_error(out_dir: str, name: str) -> float:
    """Largest |Keras logit - timm logit| / largest |timm logit| for one stored vector."""
    import importlib

    import numpy as np

    module, constructor = MODELS[name].split(".")
    vec = np.load(os.path.join(out_dir, f"{name}.npz"))
    model = getattr(importlib.import_module(f"edgetpu_models.{module}"), constructor)(
        weights=os.path.join(out_dir, f"{name}.safetensors"), classifier_activation=None,
        input_shape=tuple(vec["input_nhwc"].shape[1:]))
    logits = model(vec["input_nhwc"], training=False).numpy()
    return float(np.abs(logits - vec["logits"]).max() / np.abs(vec["logits"]).max())


def check(out_dir: str, names: list[str]) -> int:
    worst = 0.0
    for name in names:
        err = relative_error(out_dir, name)
        worst = max(worst, err)
        print(f"{MODELS[name]}: max |error| / max |logit| = {err:.2e}")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("make", "check"))
    parser.add_argument("out_dir")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS)[:3])
    parser.add_argument("--half", action="store_true", help="store float16 weights (make)")
    parser.add_argument("--batch", type=int, default=2, help="images in the vector (make)")
    parser.add_argument("--resolution", type=int, default=None, help="input size (make; default: timm's)")
    args = parser.parse_args()
    sys.exit(make(args.out_dir, args.models, args.half, args.batch, args.resolution) if args.step == "make"
             else check(args.out_dir, args.models))
