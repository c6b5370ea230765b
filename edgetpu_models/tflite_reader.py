"""TF-free reader of TFLite flatbuffers: operators, tensors, quantization and buffer sizes of a .tflite model.

The one reader the project uses (Edge TPU compatibility check, latency estimate from a .tflite). It reads the file
with the `flatbuffers` runtime and the schema module generated from LiteRT's `schema.fbs` that ships inside the
`ai_edge_litert` wheel (pure Python, no TensorFlow import); only the conversion of enums and option tables into
plain names and dicts is written here.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from edgetpu_models.errors import ModelFileError

_IDENTIFIER = b"TFL3"
_NUMPY_DTYPES = {"FLOAT32": "<f4", "FLOAT16": "<f2", "FLOAT64": "<f8", "INT8": "i1", "UINT8": "u1", "INT16": "<i2",
                 "UINT16": "<u2", "INT32": "<i4", "UINT32": "<u4", "INT64": "<i8", "UINT64": "<u8", "BOOL": "?"}


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema  # pure Python: flatbuffers + numpy only
    except ImportError as e:  # a base install with tflite_runtime or pycoral only (a board): no schema module
        raise ModelFileError(f"reading a .tflite's operators needs the TFLite schema that ships in ai-edge-litert: "
                             f"pip install 'edgetpu-models[litert]' ({e})") from e
    return schema


@lru_cache(maxsize=None)
def _enum_names(enum_name: str) -> dict[int, str]:
    cls = getattr(_schema(), enum_name)
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


_ENUM_FIELDS = {"padding": "Padding", "fused_activation_function": "ActivationFunctionType",
                "weights_format": "FullyConnectedOptionsWeightsFormat", "lsh_projection_type": "LSHProjectionType",
                "combiner_type": "CombinerType", "mirror_pad_mode": "MirrorPadMode",
                "reduce_type": "ReduceWindowFunction", "in_data_type": "TensorType", "out_data_type": "TensorType",
                "out_type": "TensorType", "output_type": "TensorType", "idx_out_type": "TensorType",
                "index_out_type": "TensorType", "quantized_bias_type": "TensorType"}


def _snake(name: str) -> str:
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)  # dilationWFactor -> dilationW_Factor
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


@dataclass(frozen=True)
class TFLiteTensor:
    index: int
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    """Shape with -1 for dynamic dimensions (equal to `shape` for a static tensor)."""
    dtype: str
    """TensorType name: "INT8", "UINT8", "FLOAT32", "INT32", ..."""
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    quantized_dimension: int
    buffer: int
    buffer_size: int
    """Bytes of constant data held for this tensor (0 for activations)."""
    is_variable: bool = False

    @property
    def is_constant(self) -> bool:
        return self.buffer_size > 0

    @property
    def is_quantized(self) -> bool:
        return len(self.scale) > 0

    @property
    def is_dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature) or any(d < 0 for d in self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "shape": list(self.shape),
                "shape_signature": list(self.shape_signature), "dtype": self.dtype, "scale": list(self.scale),
                "zero_point": list(self.zero_point), "quantized_dimension": self.quantized_dimension,
                "buffer_size": self.buffer_size}


@dataclass(frozen=True)
class TFLiteOperator:
    index: int
    opcode: str
    """Builtin operator name ("CONV_2D", "DEPTHWISE_CONV_2D", ...), or the custom code of a CUSTOM op."""
    version: int
    inputs: tuple[int, ...]
    """Tensor indices; -1 marks an omitted optional input."""
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)
    """Builtin options, snake_case keys: stride_w, stride_h, padding ("SAME"/"VALID"), fused_activation_function
    ("NONE", "RELU", "RELU6", ...), depth_multiplier, dilation_w_factor, ..."""
    custom: bool = False


@dataclass(frozen=True)
class TFLiteSubgraph:
    name: str
    tensors: tuple[TFLiteTensor, ...]
    operators: tuple[TFLiteOperator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class TFLiteModel:
    """A parsed .tflite. `tensors`, `operators`, `inputs`, `outputs` are those of the main (first) subgraph."""

    source: str
    size_bytes: int
    version: int
    description: str
    subgraphs: tuple[TFLiteSubgraph, ...]
    buffer_bytes: int
    """Total bytes of constant data (weights, biases, other constants) in the model."""
    _data: bytes = field(default=b"", repr=False, compare=False)
    _spans: tuple[tuple[int, int], ...] = field(default=(), repr=False, compare=False)

    @property
    def subgraph_count(self) -> int:
        return len(self.subgraphs)

    @property
    def tensors(self) -> tuple[TFLiteTensor, ...]:
        return self.subgraphs[0].tensors

    @property
    def operators(self) -> tuple[TFLiteOperator, ...]:
        return self.subgraphs[0].operators

    @property
    def inputs(self) -> tuple[int, ...]:
        return self.subgraphs[0].inputs

    @property
    def outputs(self) -> tuple[int, ...]:
        return self.subgraphs[0].outputs

    def tensor(self, index: int) -> TFLiteTensor:
        return self.tensors[index]

    def input_tensors(self) -> list[TFLiteTensor]:
        return [self.tensors[i] for i in self.inputs]

    def output_tensors(self) -> list[TFLiteTensor]:
        return [self.tensors[i] for i in self.outputs]

    def producers(self) -> dict[int, int]:
        """{tensor index: index of the operator that writes it}."""
        return {t: op.index for op in self.operators for t in op.outputs if t >= 0}

    def constant(self, index: int) -> np.ndarray | None:
        """The value of a constant tensor (axes, paddings, shapes, weights) as a numpy array, or None for an
        activation or a type numpy cannot hold."""
        t = self.tensors[index]
        dtype = _NUMPY_DTYPES.get(t.dtype)
        if not t.buffer_size or dtype is None or t.buffer >= len(self._spans):
            return None
        start, length = self._spans[t.buffer]
        arr = np.frombuffer(self._data, dtype=dtype, count=length // np.dtype(dtype).itemsize, offset=start)
        return arr.reshape(t.shape) if int(np.prod(t.shape, dtype=np.int64)) == arr.size else arr

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.operators:
            counts[op.opcode] = counts.get(op.opcode, 0) + 1
        return counts


def _options(schema: Any, op: Any) -> dict[str, Any]:
    obj = None
    kind = op.BuiltinOptionsType()
    if kind:
        obj = schema.BuiltinOptionsCreator(kind, op.BuiltinOptions())
    else:
        kind2 = op.BuiltinOptions2Type() if hasattr(op, "BuiltinOptions2Type") else 0
        if kind2:
            obj = schema.BuiltinOptions2Creator(kind2, op.BuiltinOptions2())
    if obj is None:
        return {}
    out: dict[str, Any] = {}
    for key, value in vars(obj).items():
        key = _snake(key)
        if key in _ENUM_FIELDS and isinstance(value, (int, np.integer)):
            value = _enum_names(_ENUM_FIELDS[key]).get(int(value), int(value))
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def _buffer_spans(model: Any, size: int) -> list[tuple[int, int]]:
    """(start, length) in the file of every buffer's data; (0, 0) for an empty buffer."""
    spans = []
    for b in range(model.BuffersLength()):
        buf = model.Buffers(b)
        offset, length = (int(buf.Offset()), int(buf.Size())) if hasattr(buf, "Offset") else (0, 0)
        if offset > 1:  # data stored after the flatbuffer (models over 2 GB)
            start = offset
        else:
            o = buf._tab.Offset(4)  # the `data` vector (field 0 of Buffer)
            start, length = (buf._tab.Vector(o), buf._tab.VectorLen(o)) if o else (0, 0)
        if start < 0 or length < 0 or start + length > size:
            raise ValueError(f"buffer {b} lies beyond the end of the file")
        spans.append((int(start), int(length)))
    return spans


class _WorkBudget:
    """Bounds the reader's work by the file's size. A flatbuffer can point many entries at one table, so a small
    crafted file could describe millions of tensors or shape entries; a real model's tables are each stored once, so
    its element count stays within a small multiple of its size."""

    PER_BYTE = 4
    FLOOR = 100_000

    def __init__(self, size: int) -> None:
        self.left = self.FLOOR + self.PER_BYTE * size

    def spend(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise ValueError("its tables repeat far more data than the file holds (a crafted or corrupt file)")


def _opcodes(model: Any, builtin: dict[int, str]) -> list[tuple[str, bool, int]]:
    """(name, is custom, version) per operator code."""
    out = []
    for k in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(k)
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))  # see schema.fbs on the two fields
        name = builtin.get(code, f"BUILTIN_{code}")
        custom = name == "CUSTOM"
        if custom:
            name = (oc.CustomCode() or b"CUSTOM").decode("utf-8", "replace")
        out.append((name, custom, int(oc.Version())))
    return out


def _tensor(t: Any, i: int, dtypes: dict[int, str], buffer_sizes: list[int], budget: _WorkBudget) -> TFLiteTensor:
    budget.spend(8 + t.ShapeLength() + t.ShapeSignatureLength())
    shape = tuple(int(d) for d in (t.ShapeAsNumpy() if t.ShapeLength() else ()))
    sig = tuple(int(d) for d in (t.ShapeSignatureAsNumpy() if t.ShapeSignatureLength() else shape))
    q = t.Quantization()
    scale: tuple[float, ...] = ()
    zp: tuple[int, ...] = ()
    qdim = 0
    if q is not None and q.ScaleLength():
        budget.spend(q.ScaleLength() + q.ZeroPointLength())
        scale = tuple(float(x) for x in q.ScaleAsNumpy())
        zp = tuple(int(x) for x in q.ZeroPointAsNumpy()) if q.ZeroPointLength() else (0,) * len(scale)
        qdim = int(q.QuantizedDimension())
    b = int(t.Buffer())
    if not 0 <= b < max(len(buffer_sizes), 1):
        raise ValueError(f"tensor {i} refers to buffer {b} of {len(buffer_sizes)}")
    return TFLiteTensor(index=i, name=(t.Name() or b"").decode("utf-8", "replace"), shape=shape, shape_signature=sig,
                        dtype=dtypes.get(int(t.Type()), f"TYPE_{t.Type()}"), scale=scale, zero_point=zp,
                        quantized_dimension=qdim, buffer=b, buffer_size=buffer_sizes[b] if buffer_sizes else 0,
                        is_variable=bool(t.IsVariable()))


def _operator(schema: Any, op: Any, j: int, opcodes: list[tuple[str, bool, int]], n_tensors: int,
              budget: _WorkBudget) -> TFLiteOperator:
    budget.spend(8 + op.InputsLength() + op.OutputsLength())
    k = int(op.OpcodeIndex())
    if not 0 <= k < len(opcodes):
        raise ValueError(f"operator {j} refers to opcode {k} of {len(opcodes)}")
    ins = tuple(int(x) for x in op.InputsAsNumpy()) if op.InputsLength() else ()
    outs = tuple(int(x) for x in op.OutputsAsNumpy()) if op.OutputsLength() else ()
    for x in ins + outs:
        if not -1 <= x < n_tensors:
            raise ValueError(f"operator {j} refers to tensor {x} of {n_tensors}")
    name, custom, version = opcodes[k]
    return TFLiteOperator(index=j, opcode=name, version=version, inputs=ins, outputs=outs,
                          options={} if custom else _options(schema, op), custom=custom)


def _subgraph(schema: Any, sg: Any, opcodes: list[tuple[str, bool, int]], dtypes: dict[int, str],
              buffer_sizes: list[int], budget: _WorkBudget) -> TFLiteSubgraph:
    budget.spend(8 + sg.TensorsLength() + sg.OperatorsLength() + sg.InputsLength() + sg.OutputsLength())
    tensors = tuple(_tensor(sg.Tensors(i), i, dtypes, buffer_sizes, budget) for i in range(sg.TensorsLength()))
    operators = tuple(_operator(schema, sg.Operators(j), j, opcodes, len(tensors), budget)
                      for j in range(sg.OperatorsLength()))
    ins = tuple(int(x) for x in sg.InputsAsNumpy()) if sg.InputsLength() else ()
    outs = tuple(int(x) for x in sg.OutputsAsNumpy()) if sg.OutputsLength() else ()
    return TFLiteSubgraph(name=(sg.Name() or b"").decode("utf-8", "replace"), tensors=tensors, operators=operators,
                          inputs=ins, outputs=outs)


def _parse(data: bytes, source: str) -> TFLiteModel:
    schema = _schema()
    model = schema.Model.GetRootAs(data, 0)
    budget = _WorkBudget(len(data))
    spans = _buffer_spans(model, len(data))
    buffer_sizes = [n for _, n in spans]
    budget.spend(len(spans) + model.OperatorCodesLength() + model.SubgraphsLength())
    opcodes = _opcodes(model, _enum_names("BuiltinOperator"))
    dtypes = _enum_names("TensorType")
    subgraphs = tuple(_subgraph(schema, model.Subgraphs(s), opcodes, dtypes, buffer_sizes, budget)
                      for s in range(model.SubgraphsLength()))
    if not subgraphs:
        raise ValueError("no subgraph")
    return TFLiteModel(source=source, size_bytes=len(data), version=int(model.Version()),
                       description=(model.Description() or b"").decode("utf-8", "replace"),
                       subgraphs=subgraphs, buffer_bytes=sum(buffer_sizes), _data=data, _spans=tuple(spans))


def _flatbuffer_bytes(path_or_bytes: "str | os.PathLike[str] | bytes | bytearray | memoryview") -> tuple[bytes, str]:
    """(contents, name for messages) of a .tflite path or bytes that carry the TFLite file identifier; ModelFileError
    naming the file otherwise."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data, source = bytes(path_or_bytes), "<bytes>"
    else:
        source = os.fspath(path_or_bytes)
        try:
            with open(source, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ModelFileError(f"{source}: no such file") from None
        except OSError as e:
            raise ModelFileError(f"{source}: cannot read ({e.strerror or e})") from None
    if len(data) < 8:
        raise ModelFileError(f"{source}: not a TFLite flatbuffer (only {len(data)} bytes)")
    if data[4:8] != _IDENTIFIER:
        raise ModelFileError(f"{source}: not a TFLite flatbuffer (file identifier {data[4:8]!r}, expected b'TFL3')")
    return data, source


def read_tflite(path_or_bytes: "str | os.PathLike[str] | bytes | bytearray | memoryview") -> TFLiteModel:
    """Parses a .tflite file (path) or its contents (bytes). Raises ModelFileError naming the file when it is missing,
    not a TFLite flatbuffer, or truncated/corrupt."""
    data, source = _flatbuffer_bytes(path_or_bytes)
    _schema()  # its own one-line error (install the [litert] extra), not "corrupt"
    try:
        return _parse(data, source)
    except (struct.error, IndexError, ValueError, TypeError, AttributeError, UnicodeDecodeError, OverflowError) as e:
        raise ModelFileError(f"{source}: not a TFLite flatbuffer (truncated or corrupt: {e})") from None


def _table(data: bytes, pos: int) -> tuple[int, int, int]:
    """(table position, vtable position, vtable size) of the flatbuffer table at `pos` (bounds-checked by struct)."""
    vtable = pos - struct.unpack_from("<i", data, pos)[0]
    return pos, vtable, struct.unpack_from("<H", data, vtable)[0]


def _field(data: bytes, table: tuple[int, int, int], index: int) -> int | None:
    """Absolute position of field `index` of a table, None when absent."""
    pos, vtable, vsize = table
    at = 4 + 2 * index
    if at >= vsize:
        return None
    off = struct.unpack_from("<H", data, vtable + at)[0]
    return pos + off if off else None


def custom_op_names(path_or_bytes: "str | os.PathLike[str] | bytes") -> tuple[str, ...]:
    """The custom operator codes of a .tflite (e.g. "edgetpu-custom-op"), read with a few struct reads and no schema
    module, so a base install with only tflite_runtime or pycoral can tell a compiled file from a CPU one. schema.fbs:
    Model field 1 is operator_codes; OperatorCode field 1 is custom_code. ModelFileError as `read_tflite` raises."""
    data, source = _flatbuffer_bytes(path_or_bytes)
    try:
        model = _table(data, struct.unpack_from("<I", data, 0)[0])
        codes = _field(data, model, 1)
        if codes is None:
            return ()
        vec = codes + struct.unpack_from("<I", data, codes)[0]
        names = []
        for k in range(struct.unpack_from("<I", data, vec)[0]):
            item = vec + 4 + 4 * k
            name = _field(data, _table(data, item + struct.unpack_from("<I", data, item)[0]), 1)
            if name is not None:
                start = name + struct.unpack_from("<I", data, name)[0]
                length = struct.unpack_from("<I", data, start)[0]
                if start + 4 + length > len(data):
                    raise ValueError("string past the end of the file")
                names.append(data[start + 4:start + 4 + length].decode("utf-8"))
        return tuple(names)
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{source}: not a TFLite flatbuffer (truncated or corrupt: {e})") from None
