"""The layers' compiled kernels: the same values and gradients as the keras.ops path, in training steps only."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest

from deepfm_model.config import ModelConfig, TrainConfig
from deepfm_model.layers import FieldEmbedding, FMInteraction
from deepfm_model.model import build_model
from deepfm_model.train import compile_model

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow CPU kernels")

DIM = 5
LAYOUTS = {  # categorical sizes, multi-valued sizes, numeric fields, multi-valued combiner
    "all kinds": ([7, 3], [6, 4], 3, "mean"),
    "all kinds, sum pooling": ([7, 3], [6, 4], 3, "sum"),
    "categorical only": ([7], [], 0, "mean"),
    "numeric only": ([], [], 4, "mean"),
    "multi-valued only": ([], [5], 0, "mean"),
}


@pytest.fixture(autouse=True)
def kernels_built():
    from deepfm_model.kernels import layer_ops

    for name in ("field_embedding", "fm_interaction"):
        assert layer_ops.training_kernel(name, training=True) is not None, f"the `{name}` kernel did not build"


def _layer_and_inputs(rng, categorical_sizes, multi_sizes, num_numeric, combiner, batch=37, length=4):
    layer = FieldEmbedding(
        categorical_sizes, multi_sizes, num_numeric, embedding_dim=DIM, multi_value_combiner=combiner
    )
    layer.build()
    layer.table.assign(rng.normal(size=tuple(layer.table.shape)).astype("float32"))
    inputs = {}
    if categorical_sizes:
        inputs["categorical"] = np.stack([rng.integers(0, s, batch) for s in categorical_sizes], 1).astype("int32")
    if multi_sizes:
        multi = np.stack([rng.integers(0, s, (batch, length)) for s in multi_sizes], 1).astype("int32")
        multi[0] = 0  # an example with no value at all pools to zeros
        multi[1, :, 1:] = 0  # one value and padding
        inputs["multi_categorical"] = multi
    if num_numeric:
        inputs["numeric"] = rng.normal(size=(batch, num_numeric)).astype("float32")
    return layer, {k: tf.constant(v) for k, v in inputs.items()}


def _forward_and_gradients(layer, inputs, training, upstream):
    """Outputs of FieldEmbedding -> FMInteraction and the gradients of a planted loss w.r.t. table and numeric."""
    up_embeddings, up_first_order, up_pairwise = upstream
    with tf.GradientTape(persistent=True) as tape:
        if "numeric" in inputs:
            tape.watch(inputs["numeric"])
        embeddings, first_order = layer(inputs, training=training)
        pairwise = FMInteraction()(embeddings, training=training)
        loss = (
            tf.reduce_sum(embeddings * up_embeddings)
            + tf.reduce_sum(first_order * up_first_order)
            + tf.reduce_sum(pairwise * up_pairwise)
        )
    table_gradient = tape.gradient(loss, layer.table.value)
    numeric_gradient = tape.gradient(loss, inputs["numeric"]) if "numeric" in inputs else tf.zeros(())
    return {
        "embeddings": embeddings.numpy(),
        "first_order": first_order.numpy(),
        "pairwise": pairwise.numpy(),
        "table_gradient": tf.convert_to_tensor(table_gradient).numpy(),
        "table_gradient_is_row_sparse": isinstance(table_gradient, tf.IndexedSlices),
        "numeric_gradient": numeric_gradient.numpy(),
    }


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_kernels_give_the_keras_ops_values_and_gradients(layout, rng):
    layer, inputs = _layer_and_inputs(rng, *layout)
    batch, fields = next(iter(inputs.values())).shape[0], layer.num_fields
    upstream = [
        tf.constant(rng.normal(size=shape).astype("float32")) for shape in ((batch, fields, DIM), (batch, fields), (batch, 1))
    ]  # fmt: skip
    kernel = _forward_and_gradients(layer, inputs, True, upstream)
    reference = _forward_and_gradients(layer, inputs, False, upstream)
    assert kernel["table_gradient_is_row_sparse"] and reference["table_gradient_is_row_sparse"]
    for name in ("embeddings", "first_order", "pairwise", "table_gradient", "numeric_gradient"):
        np.testing.assert_allclose(kernel[name], reference[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_fm_kernel_equals_the_sum_of_pairwise_dot_products_and_its_derivative(rng):
    embeddings = tf.constant(rng.normal(size=(6, 5, 3)).astype("float32"))
    upstream = rng.normal(size=(6, 1)).astype("float32")
    with tf.GradientTape() as tape:
        tape.watch(embeddings)
        pairwise = FMInteraction()(embeddings, training=True)
        total = tf.reduce_sum(pairwise * upstream)
    values = embeddings.numpy()
    brute = [sum(row[i] @ row[j] for i, j in itertools.combinations(range(5), 2)) for row in values]
    np.testing.assert_allclose(pairwise.numpy()[:, 0], brute, rtol=1e-5, atol=1e-5)
    by_hand = upstream[:, :, None] * (values.sum(axis=1, keepdims=True) - values)
    np.testing.assert_allclose(tape.gradient(total, embeddings).numpy(), by_hand, rtol=1e-5, atol=1e-6)


def _op_types(model, inputs, training):
    function = tf.function(lambda x: model(x, training=training))
    graph = function.get_concrete_function({k: tf.TensorSpec(v.shape, v.dtype) for k, v in inputs.items()}).graph
    types = {op.type for op in graph.get_operations()}
    for function_def in graph.as_graph_def().library.function:
        types.update(node.op for node in function_def.node_def)
    return types


def test_training_steps_use_the_kernels_and_inference_does_not(rng):
    model = build_model(
        ModelConfig(embedding_dim=DIM, mlp_units=(8,), multi_value_max_len=6, pick_head=False), [7, 3], [6], 2
    )
    inputs = {
        "categorical": np.zeros((4, 2), "int32"),
        "multi_categorical": np.zeros((4, 1, 6), "int32"),
        "numeric": np.zeros((4, 2), "float32"),
    }
    assert {"DeepfmFieldEmbedding", "DeepfmFmInteraction"} <= _op_types(model, inputs, training=True)
    assert not any(t.startswith("Deepfm") for t in _op_types(model, inputs, training=False))


@pytest.mark.parametrize("shared", [False, True], ids=["own-rows", "shared-rows"])
def test_training_with_and_without_the_kernels_gives_the_same_model(rng, monkeypatch, shared):
    from deepfm_model.kernels import layer_ops

    # Shared: the multi-valued field uses field 1's rows (as the recent movie ids use `movie_id`'s).
    sizes, multi_sizes, num_numeric = [50, 20], [21 if shared else 12], 3
    n = 512
    inputs = {
        "categorical": np.stack([rng.integers(0, s, n) for s in sizes], 1).astype("int32"),
        "multi_categorical": rng.integers(0, multi_sizes[0], (n, 1, 6)).astype("int32"),
        "numeric": rng.normal(size=(n, num_numeric)).astype("float32"),
    }
    labels = (rng.random((n, 1)) < 0.3).astype("float32")
    predictions = []
    for use_kernels in (True, False):
        if not use_kernels:
            monkeypatch.setattr(layer_ops, "training_kernel", lambda name, training: None)
        keras.utils.set_random_seed(3)
        model = build_model(
            ModelConfig(embedding_dim=DIM, mlp_units=(16,), dropout=0.0, multi_value_max_len=6, pick_head=False),
            sizes, multi_sizes, num_numeric, [1] if shared else [],
        )  # fmt: skip
        compile_model(model, TrainConfig(learning_rate=1e-2), metrics=False)
        model.fit(inputs, labels, batch_size=128, epochs=2, shuffle=False, verbose=0)
        assert (_op_types(model, inputs, training=True) >= {"DeepfmFieldEmbedding"}) == use_kernels
        predictions.append(model.predict(inputs, verbose=0))
    np.testing.assert_allclose(predictions[0], predictions[1], rtol=1e-4, atol=1e-5)


def test_a_lookup_out_of_the_table_names_the_index():
    from deepfm_model import kernels

    kernel = kernels.load("field_embedding")
    table = tf.Variable(np.ones((10, DIM + 1), "float32"))
    arguments = dict(categorical_offsets=[0, 4], multi_offsets=[], numeric_offset=10, embedding_dim=DIM)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"categorical\[1, 1\] = 6 names row 10, not in \[0, 10\)"):
        kernel.deepfm_field_embedding(
            table.handle, tf.constant([[0, 1], [2, 6]]), tf.zeros((2, 0, 1), tf.int32), tf.zeros((2, 0)), **arguments
        )
    float64 = tf.Variable(np.ones((10, DIM + 1)))
    held = float64.read_value()  # a second reference to the buffer: the variable's copy-on-write path
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`table` must be float32"):
        kernel.deepfm_field_embedding(
            float64.handle, tf.constant([[0, 1]]), tf.zeros((1, 0, 1), tf.int32), tf.zeros((1, 0)), **arguments
        )
    del held
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"do not match 2 categorical"):
        kernel.deepfm_field_embedding(
            table.handle, tf.constant([[0], [2]]), tf.zeros((2, 0, 1), tf.int32), tf.zeros((2, 0)), **arguments
        )
