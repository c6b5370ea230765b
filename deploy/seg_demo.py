"""The segmentation workflow end to end on the offline synthetic set: generate data, train the float logits model,
QAT fine-tune, export int8 (representative data from the dataset), check the Edge TPU mapping of the fused form,
evaluate float vs int8 (mIoU, per-class IoU, pixel accuracy, pixel agreement) and write an overlay picture.
It crosses training, quantize and deploy, so it lives in deploy (like demo.py)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from edgetpu_models.io_utils import write_text_atomic


@dataclass(frozen=True)
class SegDemoConfig:
    work_dir: str
    model: str = "autoseg_edgetpu_xs"
    size: int = 128
    images: int = 128
    """Synthetic pairs; the first images - val_images train and calibrate (the exporter wants >= 100)."""
    val_images: int = 16
    epochs: int = 15
    qat_epochs: int = 3
    batch_size: int = 8
    learning_rate: float = 2e-3
    finaliser: str = "resize128,argmax"
    overlay_path: str | None = None


def _train(cfg: SegDemoConfig, x: np.ndarray, y: np.ndarray, say: Callable[[str], None]) -> tuple[Any, Any]:
    from edgetpu_models.io_utils import atomic_path
    from edgetpu_models.quantize.qat import quantize_model
    from edgetpu_models.seg_train import fit_segmentation
    from edgetpu_models.segmentation import build_segmentation_model

    model = build_segmentation_model(cfg.model, classes=4, input_shape=(cfg.size, cfg.size, 3))
    float_path, qat_path = os.path.join(cfg.work_dir, "float.h5"), os.path.join(cfg.work_dir, "qat.h5")
    if os.path.isfile(float_path):  # resumable: a finished stage is loaded, not redone
        say(f"float model: {float_path} (already trained)")
        model.load_weights(float_path)
    else:
        say(f"training {cfg.model} (float) for {cfg.epochs} epochs on {len(x)} images")
        fit_segmentation(model, x, y, epochs=cfg.epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate)
        with atomic_path(float_path) as tmp:
            model.save_weights(tmp)
    qat = quantize_model(model)
    if os.path.isfile(qat_path):
        say(f"QAT model: {qat_path} (already fine-tuned)")
        qat.load_weights(qat_path)
    else:
        say(f"QAT fine-tuning for {cfg.qat_epochs} epochs")
        fit_segmentation(qat, x, y, epochs=cfg.qat_epochs, batch_size=cfg.batch_size,
                         learning_rate=cfg.learning_rate / 4)
        with atomic_path(qat_path) as tmp:
            qat.save_weights(tmp)
    return model, qat


def _export(cfg: SegDemoConfig, qat: Any, x: np.ndarray, norm: Any) -> dict[str, Any]:
    from edgetpu_models.deploy.edgetpu_check import check_tflite
    from edgetpu_models.deploy.export import export_tflite
    from edgetpu_models.segmentation import apply_finaliser

    rep = [x[i:i + 1] for i in range(len(x))]
    logits_path = os.path.join(cfg.work_dir, "seg_logits_int8.tflite")
    fused_path = os.path.join(cfg.work_dir, "seg_fused_int8.tflite")
    export_tflite(qat, logits_path, representative=rep, model_name=cfg.model, normalization=norm)
    export_tflite(apply_finaliser(qat, cfg.finaliser), fused_path, representative=rep, model_name=cfg.model,
                  normalization=norm)
    check = check_tflite(fused_path)
    return {"logits": logits_path, "fused": fused_path, "fused_check": check}


def run_seg_demo(cfg: SegDemoConfig, say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Runs the workflow; returns the figures (also written to work_dir/seg_demo.json)."""
    from edgetpu_models.deploy.segment import Segmenter, evaluate_segmentation, overlay
    from edgetpu_models.seg_data import SYNTHETIC_CLASSES, SegFolder, load_segmentation, make_synthetic_segmentation
    from edgetpu_models.segmentation import preprocess_normalization

    os.makedirs(cfg.work_dir, exist_ok=True)
    folder = make_synthetic_segmentation(os.path.join(cfg.work_dir, "synthetic"), cfg.images, cfg.size)
    n_train = len(folder) - cfg.val_images
    train = SegFolder(folder.images[:n_train], folder.masks[:n_train], (), folder.layout)
    val = SegFolder(folder.images[n_train:], folder.masks[n_train:], (), folder.layout)
    norm = preprocess_normalization(cfg.model)
    x, y = load_segmentation(train, cfg.size, norm, classes=4)
    model, qat = _train(cfg, x, y, say)
    say("exporting int8 (logits, and the fused finaliser) with representative data from the dataset")
    paths = _export(cfg, qat, x, norm)
    ev = evaluate_segmentation(paths["logits"], val, 4, float_model=model, class_names=SYNTHETIC_CLASSES)
    fused = evaluate_segmentation(paths["fused"], val, 4, class_names=SYNTHETIC_CLASSES)
    result = {"config": asdict(cfg), "float": ev.float_scores.to_dict(), "int8": ev.int8_scores.to_dict(),
              "int8_fused": fused.int8_scores.to_dict(), "agreement": ev.agreement, "val_images": ev.images,
              "fused_check": _check_summary(paths["fused_check"])}
    if cfg.overlay_path:
        _overlay_picture(Segmenter(paths["fused"]), val, cfg.overlay_path, overlay)
    write_text_atomic(os.path.join(cfg.work_dir, "seg_demo.json"), json.dumps(result, indent=1))
    return result


def _check_summary(check: Any) -> dict[str, Any]:
    """Mapped / total ops of the Edge TPU check and every op it leaves on the CPU, with the reason."""
    return {"on_edgetpu": check.on_edgetpu, "total": check.total, "fully_mapped": check.fully_mapped,
            "cpu_ops": [f"{o.operator}: {o.reason or o.status}" for o in check.ops if not o.on_edgetpu]}


def _overlay_picture(seg: Any, val: Any, path: str, overlay_fn: Callable) -> None:
    """Four validation images: image | ground truth | int8 prediction overlays, stacked, as one PNG."""
    from PIL import Image

    from edgetpu_models.data import read_rgb
    from edgetpu_models.io_utils import atomic_path

    rows = []
    for img, mask in list(zip(val.images, val.masks))[:4]:
        rgb = np.asarray(read_rgb(img).resize((seg.size, seg.size)))
        gt = np.asarray(Image.open(mask).resize((seg.size, seg.size), Image.NEAREST))
        rows.append(np.concatenate([rgb, overlay_fn(rgb, gt), overlay_fn(rgb, seg.segment(img))], axis=1))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(np.concatenate(rows, axis=0)).save(tmp, format="PNG")


@dataclass(frozen=True)
class SegTrainConfig:
    model: str
    data_dir: str
    out: str
    """Weights file (.h5) of the float model; the QAT model's beside it (<stem>_qat.h5)."""
    size: int = 512
    classes: int = 32
    epochs: int = 10
    qat_epochs: int = 0
    batch_size: int = 8
    learning_rate: float = 1e-3
    limit: int | None = None
    export: str | None = None
    """Also export int8 here (representative data: the training images; QAT model when qat_epochs > 0)."""
    finaliser: str = "logits"


def run_seg_train(cfg: SegTrainConfig, say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Trains (and optionally QAT fine-tunes and exports) a zoo segmentation model on a segmentation folder."""
    from edgetpu_models.deploy.export import export_tflite
    from edgetpu_models.io_utils import atomic_path
    from edgetpu_models.quantize.qat import quantize_model
    from edgetpu_models.seg_data import list_segmentation_folder, load_segmentation
    from edgetpu_models.seg_train import fit_segmentation
    from edgetpu_models.segmentation import apply_finaliser, build_segmentation_model, preprocess_normalization

    folder = list_segmentation_folder(cfg.data_dir, limit=cfg.limit)
    say(f"{len(folder)} image + mask pairs ({len(folder.skipped)} skipped), layout {folder.layout}")
    norm = preprocess_normalization(cfg.model)
    x, y = load_segmentation(folder, cfg.size, norm, cfg.classes)
    model = build_segmentation_model(cfg.model, classes=cfg.classes, input_shape=(cfg.size, cfg.size, 3))
    stats = fit_segmentation(model, x, y, epochs=cfg.epochs, batch_size=cfg.batch_size,
                             learning_rate=cfg.learning_rate)
    with atomic_path(cfg.out) as tmp:
        model.save_weights(tmp)
    final = model
    if cfg.qat_epochs:
        final = quantize_model(model)
        stats["qat"] = fit_segmentation(final, x, y, epochs=cfg.qat_epochs, batch_size=cfg.batch_size,
                                        learning_rate=cfg.learning_rate / 4)
    if cfg.export:
        rep = [x[i:i + 1] for i in range(min(len(x), 200))]
        res = export_tflite(apply_finaliser(final, cfg.finaliser), cfg.export, representative=rep,
                            model_name=cfg.model, normalization=norm)
        stats["export"] = res.path
    return {"images": len(folder), "skipped": len(folder.skipped), **stats}
