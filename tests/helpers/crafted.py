"""Small hostile inputs made in the tests: a flatbuffer that reuses one table many times, alias-bomb YAML, images."""

from __future__ import annotations


def reused_table_tflite(entries: int = 2000) -> bytes:
    """A valid-looking .tflite of a few KB whose subgraph lists `entries` tensors that are all one table, and
    `entries` operators that are all one operator with `entries` inputs: a naive reader does entries^2 work."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    b = flatbuffers.Builder(1024)
    s.TensorStartShapeVector(b, 4)
    for d in (1, 8, 8, 3):
        b.PrependInt32(d)
    shape = b.EndVector()
    s.TensorStart(b)
    s.TensorAddShape(b, shape)
    s.TensorAddType(b, s.TensorType.INT8)
    s.TensorAddBuffer(b, 0)
    tensor = s.TensorEnd(b)
    s.OperatorStartInputsVector(b, entries)
    for _ in range(entries):
        b.PrependInt32(0)
    inputs = b.EndVector()
    s.OperatorStart(b)
    s.OperatorAddOpcodeIndex(b, 0)
    s.OperatorAddInputs(b, inputs)
    op = s.OperatorEnd(b)
    tensors = _offsets(b, s.SubGraphStartTensorsVector, [tensor] * entries)
    ops = _offsets(b, s.SubGraphStartOperatorsVector, [op] * entries)
    s.SubGraphStart(b)
    s.SubGraphAddTensors(b, tensors)
    s.SubGraphAddOperators(b, ops)
    subgraph = s.SubGraphEnd(b)
    s.OperatorCodeStart(b)
    s.OperatorCodeAddBuiltinCode(b, s.BuiltinOperator.ADD)
    code = s.OperatorCodeEnd(b)
    s.BufferStart(b)
    buffer = s.BufferEnd(b)
    subgraphs = _offsets(b, s.ModelStartSubgraphsVector, [subgraph])
    codes = _offsets(b, s.ModelStartOperatorCodesVector, [code])
    buffers = _offsets(b, s.ModelStartBuffersVector, [buffer])
    s.ModelStart(b)
    s.ModelAddVersion(b, 3)
    s.ModelAddSubgraphs(b, subgraphs)
    s.ModelAddOperatorCodes(b, codes)
    s.ModelAddBuffers(b, buffers)
    b.Finish(s.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _offsets(b, start, items) -> int:
    start(b, len(items))
    for item in reversed(items):
        b.PrependUOffsetTRelative(item)
    return b.EndVector()


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """A few hundred bytes of YAML that expand to width**levels strings."""
    lines = [f'l0: &l0 [{", ".join(["lol"] * width)}]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"
