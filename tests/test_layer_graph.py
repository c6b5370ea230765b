"""The layer graph's op vocabulary is one enumerated set; the builder names an op it cannot build."""

import pytest

from edgetpu_models.errors import SpecError
from edgetpu_models.layer_graph import OPS, SPEC_OPS, Layer, LayerGraph, Op
from edgetpu_models.profiler import profile


def test_ops_are_one_enumerated_set_that_spec_graphs_stay_inside():
    assert set(OPS) == set(Op) and SPEC_OPS < set(Op)
    g = profile("efficientnet_edgetpu_s")
    assert {layer.op for layer in g.layers} <= SPEC_OPS
    assert all(isinstance(layer.op, Op) for layer in g.layers)
    assert Layer("x", "conv2d", ("input",), (8, 8, 3), (8, 8, 4)).op is Op.CONV2D  # names coerce to members


def test_unknown_op_is_refused_when_the_layer_is_made():
    with pytest.raises(ValueError, match="layer x: unknown op 'conv3d'"):
        Layer("x", "conv3d", ("input",), (8, 8, 3), (8, 8, 4))


def test_builder_names_an_op_it_cannot_build():
    from edgetpu_models.builder import build_graph_model
    from edgetpu_models.spec import resolve
    from edgetpu_models.zoo import resolve_spec

    arch = resolve(resolve_spec("efficientnet_edgetpu_s")[0], "S")
    pool = Layer("pool", Op.MAX_POOL2D, ("input",), (32, 32, 3), (16, 16, 3), kernel=3, stride=2)
    graph = LayerGraph("imported", (32, 32, 3), (pool,))
    with pytest.raises(SpecError, match="layer pool: op 'max_pool2d' cannot be built from a spec"):
        build_graph_model(graph, arch)
