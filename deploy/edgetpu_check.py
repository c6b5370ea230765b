"""Edge TPU compatibility check without the compiler: which ops of a .tflite the Edge TPU compiler would map.

Rules (see shared/reference/edgetpu_hardware.md, from Coral's model requirements and compiler logs):
- only 8-bit quantized tensors (int8/uint8 with quantization parameters; int32 only for constants such as biases,
  axes and shapes);
- static shapes with batch 1, and no tensor with more than 3 dimensions larger than 1;
- a fixed set of operators, some with constraints (no fused activation on pools/concatenation, equal dilations, ...);
- one partition: the first op that cannot map and every op after it in the graph run on the CPU ("More than one
  subgraph is not supported").
The report has the compiler's layout and the same structure as a parsed compiler log (`compiler.py`), so the two
can be compared. The check is TF-free: it reads the flatbuffer with `tflite_reader`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgetpu_models.tflite_reader import TFLiteModel, TFLiteOperator, TFLiteTensor, read_tflite

MAPPED = "Mapped to Edge TPU"
NOT_SUPPORTED = "Operation not supported"
UNSUPPORTED_TYPE = "Operation is working on an unsupported data type"
UNSUPPORTED_RANK = "Tensor has unsupported rank"
UNSPECIFIED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
SUBGRAPH = "More than one subgraph is not supported"

#: Operators the Edge TPU compiler maps (with the constraints checked in `_op_constraint`).
SUPPORTED_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS", "FULLY_CONNECTED",
    "L2_NORMALIZATION", "LOGISTIC", "UNIDIRECTIONAL_SEQUENCE_LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL",
    "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE",
    "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE_CONV", "HARD_SWISH",
})
COMPILED_OP = "edgetpu-custom-op"
"""The custom op of a model the compiler already produced: it runs on the Edge TPU."""

COMPILER_NOTE = ("Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of "
                 "the model will instead run on the CPU, which is slower. If possible, consider updating your model "
                 "to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.")


@dataclass(frozen=True)
class OpStatus:
    index: int
    operator: str
    status: str
    reason: str = ""
    """Why an op is not mapped, in our words (the compiler's status strings are terse)."""

    @property
    def on_edgetpu(self) -> bool:
        return self.status == MAPPED


@dataclass(frozen=True)
class OpRow:
    """One line of the compiler's table: operator, count, status."""

    operator: str
    count: int
    status: str


@dataclass(frozen=True)
class CompatibilityReport:
    model: str
    tool: str
    """"check" (this module) or "edgetpu_compiler" (a parsed compiler run)."""
    rows: tuple[OpRow, ...]
    ops: tuple[OpStatus, ...] = ()
    """Per-op statuses in graph order (the check has them; the compiler's log only has grouped rows)."""
    issues: tuple[str, ...] = ()
    """Model-level problems (float input, dynamic batch, several subgraphs) the compiler would reject outright."""
    edgetpu_subgraphs: int = 1
    stats: dict[str, Any] = field(default_factory=dict)
    """Compiler-only figures: on/off-chip memory, output model, compile time."""

    @property
    def total(self) -> int:
        return sum(r.count for r in self.rows)

    @property
    def on_edgetpu(self) -> int:
        return sum(r.count for r in self.rows if r.status == MAPPED)

    @property
    def on_cpu(self) -> int:
        return self.total - self.on_edgetpu

    @property
    def fraction_on_edgetpu(self) -> float:
        return self.on_edgetpu / self.total if self.total else 0.0

    @property
    def fully_mapped(self) -> bool:
        return self.total > 0 and self.on_cpu == 0 and not self.issues

    @property
    def first_cpu_op(self) -> OpStatus | None:
        return next((o for o in self.ops if not o.on_edgetpu), None)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "tool": self.tool, "total": self.total, "on_edgetpu": self.on_edgetpu,
                "on_cpu": self.on_cpu, "fraction_on_edgetpu": self.fraction_on_edgetpu,
                "fully_mapped": self.fully_mapped, "edgetpu_subgraphs": self.edgetpu_subgraphs,
                "issues": list(self.issues),
                "rows": [{"operator": r.operator, "count": r.count, "status": r.status} for r in self.rows],
                "ops": [{"index": o.index, "operator": o.operator, "status": o.status, "reason": o.reason}
                        for o in self.ops],
                "stats": dict(self.stats)}

    def format(self) -> str:
        """The report in the layout edgetpu_compiler prints."""
        lines = []
        if self.tool == "check":
            lines.append("Edge TPU compatibility check (edgetpu-models rules, no compiler)")
        else:
            lines.append(self.stats.get("compiler_version_line", "Edge TPU Compiler"))
        lines.append("")
        lines.append(f"Input model: {self.model}")
        for key, label in (("input_size", "Input size"), ("output_model", "Output model"),
                           ("output_size", "Output size"),
                           ("on_chip_available", "On-chip memory available for caching model parameters"),
                           ("on_chip_used", "On-chip memory used for caching model parameters"),
                           ("on_chip_remaining", "On-chip memory remaining for caching model parameters"),
                           ("off_chip_used", "Off-chip memory used for streaming uncached model parameters")):
            if key in self.stats:
                lines.append(f"{label}: {self.stats[key]}")
        lines.append(f"Number of Edge TPU subgraphs: {self.edgetpu_subgraphs}")
        lines.append(f"Total number of operations: {self.total}")
        lines.append("")
        for issue in self.issues:
            lines.append(f"Model problem: {issue}")
        if self.on_cpu:
            lines.append(COMPILER_NOTE)
        lines.append(f"Number of operations that will run on Edge TPU: {self.on_edgetpu}")
        lines.append(f"Number of operations that will run on CPU: {self.on_cpu}")
        lines.append("")
        lines.append(f"{'Operator':<31}{'Count':<11}Status")
        lines.append("")
        for r in self.rows:
            lines.append(f"{r.operator:<31}{r.count:<11}{r.status}")
        first = self.first_cpu_op
        if first is not None:
            lines.append("")
            lines.append(f"First op on the CPU: #{first.index} {first.operator}: {first.reason or first.status}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# Rules

def _dims_over_one(t: TFLiteTensor) -> int:
    return sum(1 for d in t.shape if d > 1)


def _tensor_problem(m: TFLiteModel, t: TFLiteTensor) -> tuple[str, str] | None:
    """(status, reason) when a tensor an op touches rules the op out."""
    if t.is_constant:
        if t.dtype not in ("INT8", "UINT8", "INT32"):
            return UNSUPPORTED_TYPE, f"tensor {t.name!r} is {t.dtype} (only 8-bit quantized tensors map)"
        if t.dtype in ("INT8", "UINT8") and not t.is_quantized:
            return UNSUPPORTED_TYPE, f"tensor {t.name!r} is {t.dtype} without quantization parameters"
        return None
    if t.dtype not in ("INT8", "UINT8"):
        return UNSUPPORTED_TYPE, f"tensor {t.name!r} is {t.dtype} (only 8-bit quantized tensors map)"
    if not t.is_quantized:
        return UNSUPPORTED_TYPE, f"tensor {t.name!r} is {t.dtype} without quantization parameters"
    if t.is_dynamic:
        return UNSPECIFIED, (f"tensor {t.name!r} has a dynamic shape {list(t.shape_signature)} "
                             "(the Edge TPU needs static shapes, batch 1)")
    if _dims_over_one(t) > 3:
        return UNSUPPORTED_RANK, (f"tensor {t.name!r} has shape {list(t.shape)}: more than 3 dimensions larger "
                                  "than 1 (batch must be 1)")
    return None


def _axes(m: TFLiteModel, op: TFLiteOperator) -> list[int] | None:
    if len(op.inputs) < 2 or op.inputs[1] < 0:
        return None
    value = m.constant(op.inputs[1])
    if value is None:
        return None
    rank = len(m.tensor(op.inputs[0]).shape)
    return [int(a) % rank if rank else int(a) for a in np.ravel(value)]


def _conv_constraint(m: TFLiteModel, op: TFLiteOperator) -> str | None:
    o = op.options
    if o.get("dilation_w_factor", 1) != o.get("dilation_h_factor", 1):
        return "dilation differs in x and y"
    if len(op.inputs) > 1 and not m.tensor(op.inputs[1]).is_constant:
        return "weights are not constant"
    if op.opcode == "CONV_2D" and len(op.inputs) > 1:
        depth, channels = m.tensor(op.inputs[1]).shape[-1], m.tensor(op.inputs[0]).shape[-1]
        if depth != channels:
            return (f"grouped convolution ({channels // depth} groups; filter depth {depth} < input depth "
                    f"{channels}): the compiler maps only full convolutions (split + per-group conv + concat do)")
    return None


def _fully_connected_constraint(m: TFLiteModel, op: TFLiteOperator) -> str | None:
    if op.options.get("weights_format", "DEFAULT") != "DEFAULT":
        return f"weights format {op.options['weights_format']} (only DEFAULT maps)"
    out = m.tensor(op.outputs[0])
    if _dims_over_one(out) > 1:
        return f"output shape {list(out.shape)} is not 1-D"
    if len(op.inputs) > 1 and not m.tensor(op.inputs[1]).is_constant:
        return "weights are not constant"
    return None


def _reduction_constraint(m: TFLiteModel, op: TFLiteOperator) -> str | None:
    axes = _axes(m, op)
    if axes is None:
        return "reduction axes are not constant"
    if 0 in axes:
        return "reduces over the batch dimension"
    shape = m.tensor(op.inputs[0]).shape
    if op.opcode == "MEAN" and len(shape) >= 2 and len(shape) - 1 in axes and shape[-1] % 4:
        return f"reduces over {shape[-1]} channels (must be a multiple of 4)"
    return None


def _pad_constraint(m: TFLiteModel, op: TFLiteOperator) -> str | None:
    if len(op.inputs) < 2:
        return None
    pads = m.constant(op.inputs[1])
    if pads is None:
        return "paddings are not constant"
    if np.ravel(pads)[:2].any():
        return "pads the batch dimension"
    return None


def _fused_activation_constraint(m: TFLiteModel, op: TFLiteOperator) -> str | None:
    act = op.options.get("fused_activation_function", "NONE")
    return f"fused activation {act} (not allowed on {op.opcode})" if act != "NONE" else None


def _prelu_constraint(m: TFLiteModel, op: TFLiteOperator) -> str | None:
    return "alpha is not 1-D" if len(op.inputs) > 1 and _dims_over_one(m.tensor(op.inputs[1])) > 1 else None


def _softmax_constraint(m: TFLiteModel, op: TFLiteOperator) -> str | None:
    shape = m.tensor(op.inputs[0]).shape
    return f"input shape {list(shape)} is not 1-D" if _dims_over_one(m.tensor(op.inputs[0])) > 1 else None


_CONSTRAINTS = {
    "CONV_2D": _conv_constraint, "DEPTHWISE_CONV_2D": _conv_constraint,
    "AVERAGE_POOL_2D": _fused_activation_constraint, "MAX_POOL_2D": _fused_activation_constraint,
    "CONCATENATION": _fused_activation_constraint, "FULLY_CONNECTED": _fully_connected_constraint,
    "MEAN": _reduction_constraint, "REDUCE_MAX": _reduction_constraint, "REDUCE_MIN": _reduction_constraint,
    "SUM": _reduction_constraint, "PAD": _pad_constraint, "PRELU": _prelu_constraint, "SOFTMAX": _softmax_constraint,
}
"""Per op, the rule that an otherwise supported op must also meet to map (edgetpu_hardware.md)."""


def _op_constraint(m: TFLiteModel, op: TFLiteOperator) -> str | None:
    """Reason an otherwise supported op does not map, or None."""
    rule = _CONSTRAINTS.get(op.opcode)
    return rule(m, op) if rule is not None else None


def _classify(m: TFLiteModel, op: TFLiteOperator) -> tuple[str, str]:
    if op.custom:
        if op.opcode == COMPILED_OP:
            return MAPPED, ""
        return NOT_SUPPORTED, f"custom op {op.opcode!r}"
    if op.opcode not in SUPPORTED_OPS:
        return NOT_SUPPORTED, f"{op.opcode} has no Edge TPU implementation"
    for idx in op.inputs + op.outputs:
        if idx < 0:
            continue
        problem = _tensor_problem(m, m.tensor(idx))
        if problem is not None:
            return problem
    reason = _op_constraint(m, op)
    if reason is not None:
        return UNSPECIFIED, reason
    return MAPPED, ""


def _model_issues(m: TFLiteModel) -> list[str]:
    issues = []
    for t in m.input_tensors():
        if t.dtype not in ("INT8", "UINT8"):
            issues.append(f"input {t.name!r} is {t.dtype}: the model is not fully 8-bit quantized")
        if t.is_dynamic or (t.shape and t.shape_signature and t.shape_signature[0] != 1):
            issues.append(f"input {t.name!r} has shape {list(t.shape_signature)}: the Edge TPU needs a static shape "
                          "with batch 1")
    if m.subgraph_count > 1:
        issues.append(f"{m.subgraph_count} subgraphs (control flow): only the main subgraph can map")
    return issues


def _group(ops: list[OpStatus]) -> tuple[OpRow, ...]:
    counts: dict[tuple[str, str], int] = {}
    for o in ops:  # first-occurrence order, like the compiler
        counts[(o.operator, o.status)] = counts.get((o.operator, o.status), 0) + 1
    return tuple(OpRow(op, n, status) for (op, status), n in counts.items())


def check_model(m: TFLiteModel, name: str | None = None) -> CompatibilityReport:
    """Applies the rules to a parsed model; the single partition ends at the first op that cannot map."""
    ops: list[OpStatus] = []
    cut: OpStatus | None = None
    for op in m.operators:
        if cut is not None:
            ops.append(OpStatus(op.index, op.opcode, SUBGRAPH, f"after #{cut.index} {cut.operator}, which runs on "
                                                                "the CPU (single partition)"))
            continue
        status, reason = _classify(m, op)
        ops.append(OpStatus(op.index, op.opcode, status, reason))
        if status != MAPPED:
            cut = ops[-1]
    mapped_any = any(o.on_edgetpu for o in ops)
    return CompatibilityReport(model=name or os.path.basename(m.source), tool="check", rows=_group(ops),
                               ops=tuple(ops), issues=tuple(_model_issues(m)),
                               edgetpu_subgraphs=1 if mapped_any else 0)


def check_tflite(path_or_bytes: "str | os.PathLike[str] | bytes") -> CompatibilityReport:
    """Reads a .tflite (path or bytes) and checks it against the Edge TPU's rules (ModelFileError on a bad file)."""
    m = read_tflite(path_or_bytes)
    source = None if isinstance(path_or_bytes, (bytes, bytearray, memoryview)) else os.fspath(path_or_bytes)
    return check_model(m, source)
