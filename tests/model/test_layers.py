"""Layers: exact outputs against brute force or hand computation, shapes, bad arguments, config and saving."""

from __future__ import annotations

import itertools
import re

import keras
import numpy as np
import pytest

from deepfm_model.layers import (
    MLP,
    FieldEmbedding,
    FirstOrder,
    FMInteraction,
    MaskedPooling,
)


def test_fm_interaction_equals_sum_of_pairwise_dot_products(rng):
    embeddings = rng.normal(size=(4, 5, 3)).astype("float32")
    brute = np.array([sum(row[i] @ row[j] for i, j in itertools.combinations(range(5), 2)) for row in embeddings])
    out = keras.ops.convert_to_numpy(FMInteraction()(embeddings))
    assert out.shape == (4, 1)
    np.testing.assert_allclose(out[:, 0], brute, rtol=1e-5, atol=1e-5)
    flat = keras.ops.convert_to_numpy(FMInteraction(keepdims=False)(embeddings))
    assert flat.shape == (4,)


def _gradient(function, x):
    """d sum(function(x)) / dx under the running backend."""
    if keras.backend.backend() == "jax":
        import jax

        return np.asarray(jax.grad(lambda t: function(t).sum())(x))
    import tensorflow as tf

    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(function(x))
    return tape.gradient(total, x).numpy()


def test_fm_interaction_gradient_equals_the_pairwise_sums_derivative(rng):
    # d/dv_bi of sum_b u_b sum_{i<j} <v_bi, v_bj> is u_b * sum_{j != i} v_bj (upstream u_b planted per row).
    embeddings = rng.normal(size=(4, 5, 3)).astype("float32")
    upstream = rng.normal(size=(4, 1)).astype("float32")
    by_hand = upstream[:, :, None] * (embeddings.sum(axis=1, keepdims=True) - embeddings)
    np.testing.assert_allclose(
        _gradient(lambda x: FMInteraction()(x) * upstream, embeddings), by_hand, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        _gradient(lambda x: FMInteraction(keepdims=False)(x) * upstream[:, 0], embeddings),
        by_hand,
        rtol=1e-5,
        atol=1e-6,
    )


def test_masked_pooling_ignores_padding():
    values = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [7.0, 7.0], [9.0, 9.0]]], "float32")
    indices = np.array([[4, 2, 0], [0, 0, 0]], "int32")
    mean = keras.ops.convert_to_numpy(MaskedPooling()(values, indices))
    np.testing.assert_allclose(mean, [[2.0, 3.0], [0.0, 0.0]])
    total = keras.ops.convert_to_numpy(MaskedPooling(combiner="sum")(values, indices))
    np.testing.assert_allclose(total, [[4.0, 6.0], [0.0, 0.0]])


def test_first_order_adds_bias_to_sum():
    layer = FirstOrder(bias_initializer=keras.initializers.Constant(0.5))
    out = keras.ops.convert_to_numpy(layer(np.array([[1.0, 2.0], [-1.0, 0.0]], "float32")))
    np.testing.assert_allclose(out, [[3.5], [-0.5]])
    assert [tuple(w.shape) for w in layer.weights] == [(1,)]


def test_field_embedding_offsets_pooling_and_numeric_scaling():
    dim = 2
    layer = FieldEmbedding(categorical_sizes=[3, 2], multi_categorical_sizes=[4], num_numeric=2, embedding_dim=dim)
    layer.build()
    assert tuple(layer.table.shape) == (3 + 2 + 4 + 2, dim + 1)
    table = np.arange(11 * 3, dtype="float32").reshape(11, 3)
    layer.table.assign(table)
    inputs = {
        "categorical": np.array([[2, 1]], "int32"),
        "multi_categorical": np.array([[[1, 3, 0]]], "int32"),
        "numeric": np.array([[2.0, -1.0]], "float32"),
    }
    embeddings, first_order = (keras.ops.convert_to_numpy(t) for t in layer(inputs))
    expected = np.stack(
        [
            table[0 + 2],  # categorical field 0, offset 0
            table[3 + 1],  # categorical field 1, offset 3
            (table[5 + 1] + table[5 + 3]) / 2,  # multi-valued field, offset 5, padding slot left out
            2.0 * table[9],  # numeric field 0, row 9, scaled by its value
            -1.0 * table[10],  # numeric field 1
        ]
    )[None]
    np.testing.assert_allclose(embeddings, expected[..., :dim])
    np.testing.assert_allclose(first_order, expected[..., dim])


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: FieldEmbedding(categorical_sizes=[3], embedding_dim=0), "`embedding_dim=0`"),
        (lambda: FieldEmbedding(categorical_sizes=[3, 0]), "`categorical_sizes=[3, 0]`"),
        (lambda: FieldEmbedding(num_numeric=-1), "`num_numeric=-1`"),
        (lambda: FieldEmbedding(), "at least one field"),
        (lambda: FieldEmbedding(categorical_sizes=[3], l2=-1.0), "`l2=-1.0`"),
        (lambda: MaskedPooling(padding_index=-1), "`padding_index=-1`"),
        (lambda: MaskedPooling(combiner="max"), "`combiner='max'`"),
        (
            lambda: FieldEmbedding(multi_categorical_sizes=[3], multi_value_combiner="max"),
            "`multi_value_combiner='max'`",
        ),
        (lambda: MLP(units=(8, 0)), "`units=(8, 0)`"),
        (lambda: MLP(dropout=1.5), "`dropout=1.5`"),
    ],
)
def test_bad_arguments_raise_quoting_the_value(factory, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        factory()


def test_fm_interaction_rejects_non_bool_keepdims():
    with pytest.raises(TypeError, match="`keepdims='yes'`"):
        FMInteraction(keepdims="yes")


def test_fm_interaction_rejects_wrong_rank():
    with pytest.raises(ValueError, match="batch, fields, dim"):
        FMInteraction()(np.zeros((2, 3), "float32"))


@pytest.mark.parametrize(
    "layer",
    [
        FMInteraction(keepdims=False, name="fm"),
        MaskedPooling(combiner="sum", padding_index=1),
        FirstOrder(bias_initializer="ones"),
        MLP(units=(4, 2), activation="gelu", dropout=0.2, batch_norm=True, l2=1e-4),
        FieldEmbedding(
            categorical_sizes=[3],
            multi_categorical_sizes=[5],
            num_numeric=2,
            embedding_dim=4,
            l2=1e-6,
            multi_value_combiner="sum",
        ),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config


def test_mlp_output_shape_and_weights():
    layer = MLP(units=(8, 4), batch_norm=True, dropout=0.1)
    out = layer(np.zeros((3, 6), "float32"))
    assert tuple(out.shape) == (3, 1)
    kernels = [tuple(w.shape) for w in layer.trainable_weights if len(w.shape) == 2]
    assert kernels == [(6, 8), (8, 4), (4, 1)]


def test_layers_save_and_load_round_trip(tmp_path, rng):
    inputs = {
        "categorical": keras.Input((2,), dtype="int32", name="categorical"),
        "multi_categorical": keras.Input((1, 3), dtype="int32", name="multi_categorical"),
        "numeric": keras.Input((1,), dtype="float32", name="numeric"),
    }
    embeddings, weights = FieldEmbedding(categorical_sizes=[4, 3], multi_categorical_sizes=[5], num_numeric=1,
                                         embedding_dim=3)(inputs)  # fmt: skip
    deep = MLP(units=(4,), batch_norm=True)(keras.layers.Flatten()(embeddings))
    out = keras.layers.Add()([FirstOrder()(weights), FMInteraction()(embeddings), deep])
    model = keras.Model(inputs, out)
    data = {
        "categorical": rng.integers(0, 3, (5, 2)).astype("int32"),
        "multi_categorical": rng.integers(0, 5, (5, 1, 3)).astype("int32"),
        "numeric": rng.normal(size=(5, 1)).astype("float32"),
    }
    before = model.predict(data, verbose=0)
    model.save(tmp_path / "layers.keras")
    after = keras.saving.load_model(tmp_path / "layers.keras").predict(data, verbose=0)
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)


def test_fm_interaction_sums_in_float32_under_mixed_precision():
    # Two orthogonal fields cancel in the pairwise sum: (sum)^2 and the sum of squares agree to ~1e-3, which
    # bfloat16 arithmetic cannot resolve; float32 can. The inputs are exact in bfloat16.
    x, y, small = 3.140625, 2.71875, 0.0078125
    embeddings = np.array([[[x, y], [y, -x], [small, 0.0]]], "float32")
    layer = FMInteraction(dtype="mixed_bfloat16")
    out = keras.ops.convert_to_numpy(keras.ops.cast(layer(embeddings), "float32"))
    np.testing.assert_allclose(out[:, 0], [small * (x + y)], rtol=2**-7)  # bfloat16 output rounding only


def test_field_embedding_under_mixed_precision_casts_the_gathered_rows_not_the_table():
    layer = FieldEmbedding(categorical_sizes=[1000], num_numeric=1, embedding_dim=4, dtype="mixed_bfloat16")
    inputs = {"categorical": np.array([[3], [7]], "int32"), "numeric": np.array([[2.0], [-1.0]], "float32")}
    embeddings, first_order = layer(inputs)
    assert layer.table.dtype == "float32"
    assert keras.backend.standardize_dtype(embeddings.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(first_order.dtype) == "bfloat16"
    table = keras.ops.convert_to_numpy(layer.table)
    expected = np.stack([[table[3], 2.0 * table[1000]], [table[7], -1.0 * table[1000]]])  # (batch, fields, d + 1)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(keras.ops.cast(embeddings, "float32")), expected[..., :4], rtol=2**-8
    )
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        graph = tf.function(layer).get_concrete_function(inputs).graph
        cast_shapes = [tuple(op.inputs[0].shape) for op in graph.get_operations() if op.type == "Cast"]
        assert tuple(layer.table.shape) not in cast_shapes, cast_shapes
