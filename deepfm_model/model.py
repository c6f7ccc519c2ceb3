"""The DeepFM model on preprocessed inputs (integer indices and normalised floats).

Guo et al. (2017), "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction":

    y = sigmoid(bias + sum_i w_i + sum_{i<j} <v_i, v_j> + MLP([v_1, ..., v_F]))

with one embedding `v_i` per feature value shared by the FM and the deep part (`FieldEmbedding`).
Numeric fields enter as their normalised value `x` times a learned vector (and first-order weight), see
`FieldEmbedding`. Under a mixed-precision policy only the MLP computes in 16 bits: the lookups, the first-order
term and the FM (whose two sums nearly cancel) stay float32. The core model is backend-agnostic; turning raw strings and floats into its inputs is
`preprocessing.FeaturePreprocessor`'s job (TensorFlow, in tf.data and in the exported graph).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from deepfm_model.config import ModelConfig
from deepfm_model.layers import MLP, FieldEmbedding, FirstOrder, FMInteraction

CATEGORICAL_INPUT = "categorical"
MULTI_CATEGORICAL_INPUT = "multi_categorical"
NUMERIC_INPUT = "numeric"
OUTPUT_NAME = "probability"


def build_model(
    config: ModelConfig,
    categorical_sizes: Sequence[int],
    multi_categorical_sizes: Sequence[int],
    num_numeric: int,
) -> keras.Model:
    """Build the (uncompiled) DeepFM functional model.

    Args:
        config: architecture.
        categorical_sizes: rows per categorical field (vocabulary + OOV), in field order.
        multi_categorical_sizes: rows per multi-valued field (padding + OOV + vocabulary), in field order.
        num_numeric: number of numeric fields.

    `config.use_fm` / `config.use_dnn` drop the FM part or the deep part (the ablations of the paper).

    Returns:
        A `keras.Model` taking a dict with keys `"categorical"` `(batch, n_cat)` int32,
        `"multi_categorical"` `(batch, n_multi, multi_value_max_len)` int32 (0 = padding) and `"numeric"`
        `(batch, n_numeric)` float32 (keys with no field are left out), returning the probability
        `(batch, 1)` float32.
    """
    inputs: dict[str, keras.KerasTensor] = {}
    if categorical_sizes:
        inputs[CATEGORICAL_INPUT] = keras.Input((len(categorical_sizes),), dtype="int32", name=CATEGORICAL_INPUT)
    if multi_categorical_sizes:
        inputs[MULTI_CATEGORICAL_INPUT] = keras.Input(
            (len(multi_categorical_sizes), config.multi_value_max_len), dtype="int32", name=MULTI_CATEGORICAL_INPUT
        )
    if num_numeric:
        inputs[NUMERIC_INPUT] = keras.Input((num_numeric,), dtype="float32", name=NUMERIC_INPUT)

    embeddings, first_order_weights = FieldEmbedding(
        categorical_sizes=categorical_sizes,
        multi_categorical_sizes=multi_categorical_sizes,
        num_numeric=num_numeric,
        embedding_dim=config.embedding_dim,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=config.embedding_init_stddev),
        l2=config.l2_embedding,
        multi_value_combiner=config.multi_value_combiner,
        name="field_embedding",
        dtype="float32",
    )(inputs)  # (batch, fields, dim), (batch, fields)
    terms = []  # (batch, 1) each
    if config.use_fm:
        terms.append(FirstOrder(name="first_order", dtype="float32")(first_order_weights))  # includes the bias
        terms.append(FMInteraction(name="fm_interaction", dtype="float32")(embeddings))
    if config.use_dnn:
        terms.append(
            MLP(
                units=config.mlp_units,
                activation=config.activation,
                dropout=config.dropout,
                batch_norm=config.batch_norm,
                l2=config.l2_dense,
                name="mlp",
            )(keras.layers.Flatten(name="flatten")(embeddings))
        )
    logit = keras.layers.Add(name="logit")(terms) if len(terms) > 1 else terms[0]  # (batch, 1)
    probability = keras.layers.Activation("sigmoid", dtype="float32", name=OUTPUT_NAME)(logit)
    return keras.Model(inputs=inputs, outputs=probability, name="deepfm")
