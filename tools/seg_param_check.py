"""How our segmentation parameter counts were compared with tensorflow/models (official/projects/edgetpu/vision).

tf-models-official on PyPI ships official/vision but not the edgetpu project, so the reference cannot be imported.
Instead this script counts the reference analytically, independently of our YAML specs: its block tables are
transcribed below as tensorflow/models writes them (`mobilenet_edgetpu_v2_model_blocks.py`: the default topology with
`filter_size_overrides` for V2 XS/S/M; `autoseg_edgetpu_backbone_xs/_s` block lists), and every layer is counted the
way the reference's code builds it (`_MbConvBlock`, `round_filters` with depth_divisor 8 / 4, grouped convs with
group_base_size 64; official/vision's ASPP v1 + SegmentationHead with deeplabv3plus fusion; bifpn_head.py's
ResampleFeatureMap / FNode / OpAfterCombine / SegClassNet and tasks/semantic_segmentation.py's AutosegEdgeTPU).
Counts are trainable parameters (kernels, biases, BN gamma/beta); `+ BN statistics` adds the moving mean/variance that
Keras' count_params() includes.

Run: `.venv/bin/python tools/seg_param_check.py` (TF-free, < 1 s). tests/test_segmentation.py asserts equality.

Result: ours == reference for all five. The README's rounded "#Parameters" are larger and are NOT reproduced by the
code: DeepLabV3+ XS/S/M 3.6/5.2/7.7M vs 3.28/4.76/7.12M (3.32/4.81/7.18M with BN statistics), about 8% more in each;
Autoseg XS/S 2.9/3.1M vs 2.35/2.55M: 0.51M more in both, which is exactly what 5 more BiFPN cells would add (9 cells:
2.87/3.07M -> 2.9/3.1) - a hypothesis about the published checkpoints (EfficientDet's deeper BiFPN repeats), not
something the code does (FPNCells' default, which AutosegEdgeTPU does not override, is 4). We keep the code's
architecture.
"""

from __future__ import annotations

import sys

# (op, kernel, expand, stride) per block and the group widths: _default_mobilenet_edgetpu_v2_topology
_V2_TOPOLOGY = [[("fused", 3, 1, 1)], [("fused", 3, 8, 2), ("fused_grouped", 3, 4, 1)],
                [("fused", 3, 8, 2), ("fused_grouped", 3, 4, 1), ("fused", 3, 4, 1), ("fused_grouped", 3, 4, 1)],
                [("fused", 3, 8, 2)] + [("dw", 3, 4, 1)] * 3, [("dw", 3, 8, 1)] + [("dw", 3, 4, 1)] * 3,
                [("dw", 3, 8, 2)] + [("dw", 3, 4, 1)] * 3, [("dw", 3, 8, 1)]]
_V2 = {"xs": (32, [16, 32, 48, 96, 144, 160, 192]), "s": (64, [24, 48, 64, 128, 160, 192, 256]),
       "m": (64, [32, 64, 80, 160, 192, 240, 320])}
# BlockConfig.from_args(in, out, kernel, repeats, expand, stride, fused_expand=?, conv_type='full'?, id_skip=?)
F, FULL, NOSKIP = "fused", "full", "noskip"
_AUTOSEG = {
    "s": [(32, 12, 3, 1, 1, 1, F, FULL), (12, 36, 3, 1, 6, 2, F, FULL), (36, 18, 5, 1, 3, 1),
          (18, 60, 5, 1, 6, 2, F, FULL), (60, 60, 3, 1, 3, 1), (60, 120, 5, 1, 6, 2), (120, 120, 3, 1, 3, 1),
          (120, 120, 5, 1, 6, 1), (120, 112, 3, 1, 6, 1), (112, 112, 5, 2, 6, 1), (112, 112, 5, 1, 1, 2, NOSKIP),
          (112, 192, 1, 1, 6, 1, F, NOSKIP), (192, 192, 5, 1, 1, 1, NOSKIP), (192, 96, 1, 1, 6, 1, F, NOSKIP),
          (96, 96, 5, 1, 3, 1), (96, 96, 5, 1, 1, 1, NOSKIP), (96, 192, 1, 1, 6, 1, F, NOSKIP),
          (192, 192, 5, 1, 1, 1, NOSKIP), (192, 160, 1, 1, 3, 1, F, NOSKIP)],
    "xs": [(32, 12, 3, 1, 1, 1, F, FULL), (12, 24, 3, 1, 6, 2, F, FULL), (24, 24, 3, 1, 3, 1),
           (24, 60, 3, 1, 3, 2, F, FULL), (60, 40, 3, 1, 6, 1), (40, 40, 5, 1, 3, 2), (40, 40, 3, 1, 6, 1),
           (40, 120, 3, 1, 6, 1, F, FULL), (120, 168, 3, 1, 6, 1), (168, 84, 5, 1, 6, 1), (84, 84, 5, 1, 3, 1),
           (84, 84, 5, 1, 1, 2, NOSKIP), (84, 288, 1, 1, 6, 1, F, NOSKIP), (288, 288, 5, 1, 1, 1, NOSKIP),
           (288, 96, 1, 1, 3, 1, F, NOSKIP), (96, 96, 5, 1, 1, 1, NOSKIP), (96, 96, 1, 1, 6, 1, F, NOSKIP),
           (96, 96, 5, 1, 1, 1, NOSKIP), (96, 96, 1, 1, 6, 1, F, NOSKIP), (96, 480, 5, 1, 3, 1)]}


def round_filters(f: int, divisor: int) -> int:
    new = max(divisor, int(f + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * f else new


def conv_bn(k: int, cin: int, cout: int, groups: int = 1) -> int:
    return k * k * cin // groups * cout + 2 * cout


def mb_conv(cin: int, cout: int, k: int, e: int, fused: bool, conv_type: str) -> int:
    """_MbConvBlock: fused expansion (full or grouped), or 1x1 expansion + depthwise/grouped conv; 1x1 projection."""
    filters, n = cin * e, 0
    if fused and e != 1:
        n += conv_bn(k, cin, filters, filters // 64 if conv_type == "group" else 1)
    else:
        if e != 1:
            n += conv_bn(1, cin, filters)
        if conv_type == "depthwise":
            n += k * k * filters + 2 * filters
    return n + conv_bn(1, filters, cout)


def v2_backbone(size: str) -> tuple[int, int, int]:
    """(params, channels at stride 16, channels at stride 32) of mobilenet_edgetpu_v2_<size>, backbone_only."""
    stem, widths = _V2[size]
    n, cin, chans = conv_bn(5, 3, stem), stem, {}
    stride = 2
    for group, width in zip(_V2_TOPOLOGY, widths):
        for op, k, e, s in group:
            conv_type = {"fused": "full", "fused_grouped": "group", "dw": "depthwise"}[op]
            n += mb_conv(cin, width, k, e, op != "dw", conv_type)
            cin, stride = width, stride * s
            chans[stride] = width
    return n, chans[16], chans[32]


def autoseg_backbone(size: str) -> tuple[int, dict[int, int]]:
    """(params, channels per stride) of autoseg_edgetpu_backbone_<size> (depth_divisor 4)."""
    n, stride, chans = conv_bn(3, 3, 32), 2, {}
    for b in _AUTOSEG[size]:
        cin, cout = round_filters(b[0], 4), round_filters(b[1], 4)
        k, reps, e, s, flags = b[2], b[3], b[4], b[5], b[6:]
        conv_type = FULL if FULL in flags else "depthwise"
        for r in range(reps):
            n += mb_conv(cin if r == 0 else cout, cout, k, e, F in flags, conv_type)
        stride *= s
        chans[stride] = cout
    return n, chans


def deeplab_head(c_aspp: int, c_low: int, classes: int = 32) -> int:
    """ASPP v1 (128 filters, 3 separable atrous branches, pooling branch, projection) + SegmentationHead."""
    aspp = conv_bn(1, c_aspp, 128) + 3 * (9 * c_aspp + conv_bn(1, c_aspp, 128)) + conv_bn(1, c_aspp, 128)
    aspp += conv_bn(1, 5 * 128, 128)
    head = conv_bn(1, c_low, 48)
    cin = 128 + 48
    for _ in range(2):
        head += 9 * cin + 2 * cin + conv_bn(1, cin, 256)
        cin = 256
    return aspp + head + 256 * classes + classes


def bifpn_head(chans: dict[int, int], cells: int = 4, classes: int = 32, f: int = 96) -> int:
    """AutosegEdgeTPU: resample (1x1 conv + bias + BN) of narrower levels 3-5, one 1x1 conv + bias before pooling
    level 6, `cells` FPN cells of 10 nodes (separable 3x3 + BN), the fusion node and a separable classifier."""
    n = sum(c * f + f + 2 * f for c in (chans[8], chans[16], chans[32]) if c != f)
    n += chans[32] * f + f if chans[32] != f else 0
    sep_bn = 9 * f + f * f + 2 * f
    return n + cells * 10 * sep_bn + sep_bn + 9 * f + f * classes + classes


def reference_counts() -> dict[str, int]:
    out = {}
    for size in ("xs", "s", "m"):
        n, c16, c32 = v2_backbone(size)
        out[f"deeplabv3plus_mobilenet_edgetpu_v2_{size}"] = n + deeplab_head(c32, c16)
    for size in ("xs", "s"):
        n, chans = autoseg_backbone(size)
        out[f"autoseg_edgetpu_{size}"] = n + bifpn_head(chans)
    return out


def main() -> int:
    from edgetpu_models.seg_graph import seg_zoo, segmentation_graph

    ok = True
    print(f"{'model':40s} {'ours':>10s} {'reference':>10s}  README  note")
    for name, ref in reference_counts().items():
        ours = segmentation_graph(name).params
        m = seg_zoo()[name]
        ok &= ours == ref
        note = "equal" if ours == ref else "DIFFERENT"
        if name.startswith("autoseg"):
            note += f"; with 9 BiFPN cells {(ref + 5 * 10 * (9 * 96 + 96 * 96 + 2 * 96)) / 1e6:.2f}M"
        print(f"{name:40s} {ours:10,d} {ref:10,d}  {m.reference['reference_params_m']:.1f}M  {note}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
