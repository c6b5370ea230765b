"""Cross-check the Keras EfficientNet-EdgeTPU S/M/L against timm, the independent PyTorch implementation.

Two steps, because timm needs PyTorch, which this project does not depend on:
  1. in an environment with torch + timm:  python tools/timm_crosscheck.py make OUT_DIR
     writes, per model, timm-named random weights (<timm name>.safetensors) and a vector (<timm name>.npz: input_nhwc,
     logits) in the format of ../shared/testdata;
  2. in this project's .venv:              python tools/timm_crosscheck.py check OUT_DIR
     loads each file into our model and prints the largest logit error relative to the largest logit.
Last run (timm 1.0.31, torch 2.13 CPU): S 7.5e-07, M 6.3e-07, L 5.7e-07.
"""

from __future__ import annotations

import argparse
import os
import sys

MODELS = {"tf_efficientnet_es": "EfficientNetEdgeTPUS", "tf_efficientnet_em": "EfficientNetEdgeTPUM",
          "tf_efficientnet_el": "EfficientNetEdgeTPUL"}


def make(out_dir: str) -> None:
    import numpy as np
    import timm
    import torch
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    for name in MODELS:
        model = timm.create_model(name, pretrained=False, num_classes=1000).eval()
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():  # well-conditioned random BN statistics, as in the shared test vector
            for mod in model.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=gen) * 0.1)
                    mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=gen) + 0.5)
                    mod.weight.copy_(torch.rand(mod.weight.shape, generator=gen) + 0.5)
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.1)
            res = model.default_cfg["input_size"][-1]
            x = torch.rand(2, 3, res, res, generator=gen) * 2 - 1
            logits = model(x)
        state = {k: v.contiguous() for k, v in model.state_dict().items() if v.is_floating_point()}
        save_file(state, os.path.join(out_dir, f"{name}.safetensors"))
        np.savez(os.path.join(out_dir, f"{name}.npz"), input_nhwc=x.permute(0, 2, 3, 1).numpy(),
                 logits=logits.numpy())


def check(out_dir: str) -> int:
    import numpy as np

    from edgetpu_models import efficientnet_edgetpu

    worst = 0.0
    for name, constructor in MODELS.items():
        vec = np.load(os.path.join(out_dir, f"{name}.npz"))
        model = getattr(efficientnet_edgetpu, constructor)(
            weights=os.path.join(out_dir, f"{name}.safetensors"), classifier_activation=None)
        logits = model(vec["input_nhwc"], training=False).numpy()
        err = float(np.abs(logits - vec["logits"]).max() / np.abs(vec["logits"]).max())
        worst = max(worst, err)
        print(f"{constructor}: max |error| / max |logit| = {err:.2e}")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("make", "check"))
    parser.add_argument("out_dir")
    args = parser.parse_args()
    sys.exit(make(args.out_dir) if args.step == "make" else check(args.out_dir))
