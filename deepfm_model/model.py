"""The DeepFM model on preprocessed inputs (integer indices and normalised floats).

Guo et al. (2017), "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction":

    y = sigmoid(bias + sum_i w_i + sum_{i<j} <v_i, v_j> + MLP([v_1, ..., v_F]))

with one embedding `v_i` per feature value shared by the FM and the deep part (`FieldEmbedding`).

With `ModelConfig.pick_head` (the default) the model has two heads over the same embeddings and FM term, each
with its own deep part and a learned mix of the FM logit and its deep logit:

    pick = sigmoid(a_p * fm + c_p * MLP_p(v) + b_p + prior)   the user picks (rates) the movie among all
    like = sigmoid(a_l * fm + c_l * MLP_l(v) + b_l)      the user likes it, given they rate it
    probability = sigmoid(logit(pick) + log(like))       what ranking sorts by: odds(pick) * like

where `fm = bias + sum_i w_i + sum_{i<j} <v_i, v_j>` and `prior` (only with `ModelConfig.pick_prior`, off by
default) the log of the movie's recent share of positive ratings, a fixed offset. With negatives drawn
uniformly, the pick logit estimates log P(movie | user, now) up to a constant; with the prior the model learns
the user's departure from what is popular now. `deepfm_model.objectives` says what each head learns. So
`odds(pick) = pick / (1 - pick)` is proportional to P(movie | user, now), and ranking by `odds(pick) * like`
ranks by P(the user picks the movie and likes it); `probability` is that score as the probability of a liked
pick against a sampled row (`PickOddsTimesLike`). The product `pick * like` ranked worse
wherever pick comes near 1: on generated nights of 1M events (10,000 movies) it put the most popular movies'
order at the like head's mercy and ranked at a third of the popularity chart's NDCG@10 (0.034 against 0.107; the
odds: 0.111); on MovieLens the two are within a few thousandths (deepfm_model/README.md).

With `ModelConfig.like_tower` (the default with two heads) the served `like` output is a second, one-head
DeepFM with embeddings of its own, trained on the rated rows alone and stopped early on its own validation AUC
(`build_like_tower`, `with_like_tower`): the signal for "will the user like it" (test AUC 0.76 on MovieLens
against the head's 0.73). `probability`, what ranking sorts by, stays the two heads': the head's like over-fits
the rated rows, but with pick it ranks the catalogue best, and with the tower's like instead the top-N fell
below popularity's on the synthetic source (deepfm_model/README.md). So with the tower, `probability` is the
heads' `odds(pick) * like_head`, and `like` is the tower's.
Numeric fields enter as their normalised value `x` times a learned vector (and first-order weight), see
`FieldEmbedding`. Under a mixed-precision policy only the MLP computes in 16 bits: the lookups, the first-order
term and the FM (whose two sums nearly cancel) stay float32. The core model is backend-agnostic; turning raw strings and floats into its inputs is
`preprocessing.FeaturePreprocessor`'s job (TensorFlow, in tf.data and in the exported graph).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras

from deepfm_model.config import ModelConfig
from deepfm_model.layers import MLP, FieldEmbedding, FirstOrder, FMInteraction
from deepfm_model.layout import LIKE_TOWER
from deepfm_model.spec.serving import LIKE, PICK, PROBABILITY

CATEGORICAL_INPUT = "categorical"
MULTI_CATEGORICAL_INPUT = "multi_categorical"
NUMERIC_INPUT = "numeric"
PRIOR_INPUT = "prior"  # (batch, 1): the pick head's fixed offset, `preprocessing`'s log of the recent share
OUTPUT_NAME, PICK_OUTPUT, LIKE_OUTPUT = PROBABILITY, PICK, LIKE
HEADS = "heads"  # the two-head model's name inside the served model when it has a like tower


def build_model(
    config: ModelConfig,
    categorical_sizes: Sequence[int],
    multi_categorical_sizes: Sequence[int],
    num_numeric: int,
    multi_shared_with: Sequence[int] = (),
    prior: bool = False,
    name: str = "deepfm",
) -> keras.Model:
    """Build the (uncompiled) DeepFM functional model.

    Args:
        config: architecture.
        categorical_sizes: rows per categorical field (vocabulary + OOV), in field order.
        multi_categorical_sizes: rows per multi-valued field (padding + OOV + vocabulary), in field order.
        num_numeric: number of numeric fields.
        multi_shared_with: per multi-valued field, the categorical field whose embedding rows it shares, or -1
            (`FieldEmbedding`); empty: none.
        prior: with the pick head, an input `"prior"` `(batch, 1)` added to the pick logit as it is (no weight).
        name: the model's name.

    `config.use_fm` / `config.use_dnn` drop the FM part or the deep part (the ablations of the paper).

    Returns:
        A `keras.Model` taking a dict with keys `"categorical"` `(batch, n_cat)` int32,
        `"multi_categorical"` `(batch, n_multi, multi_value_max_len)` int32 (0 = padding) and `"numeric"`
        `(batch, n_numeric)` float32 (keys with no field are left out), returning the probability
        `(batch, 1)` float32, or with `config.pick_head` the columns `(probability, pick, like)`, `(batch, 3)`.
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
    fields = dict(inputs)
    if prior and config.pick_head:
        inputs[PRIOR_INPUT] = keras.Input((1,), dtype="float32", name=PRIOR_INPUT)

    embeddings, first_order_weights = FieldEmbedding(
        categorical_sizes=categorical_sizes,
        multi_categorical_sizes=multi_categorical_sizes,
        num_numeric=num_numeric,
        embedding_dim=config.embedding_dim,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=config.embedding_init_stddev),
        l2=config.l2_embedding,
        multi_value_combiner=config.multi_value_combiner,
        multi_shared_with=multi_shared_with,
        name="field_embedding",
        dtype="float32",
    )(fields)  # (batch, fields, dim), (batch, fields)
    flat = keras.layers.Flatten(name="flatten")(embeddings)  # (batch, fields * dim)
    if config.pick_head:
        fm = keras.layers.Add(name="fm_logit")(
            [
                FirstOrder(name="first_order", dtype="float32")(first_order_weights),
                FMInteraction(name="fm_interaction", dtype="float32")(embeddings),
            ]
        )  # (batch, 1)
        logits = []
        for head in (PICK_OUTPUT, LIKE_OUTPUT):
            deep = _mlp(config, f"{head}_mlp")(flat)  # (batch, 1)
            mixed = keras.layers.Dense(1, dtype="float32", name=f"{head}_mix")(
                keras.layers.Concatenate(name=f"{head}_logits", dtype="float32")([fm, deep])
            )  # (batch, 1)
            if head == PICK_OUTPUT and PRIOR_INPUT in inputs:
                mixed = keras.layers.Add(name="pick_with_prior", dtype="float32")([mixed, inputs[PRIOR_INPUT]])
            logits.append(mixed)
        heads = [
            keras.layers.Activation("sigmoid", dtype="float32", name=head)(logit)
            for head, logit in zip((PICK_OUTPUT, LIKE_OUTPUT), logits, strict=True)
        ]
        probability = PickOddsTimesLike(name="pick_odds_times_like", dtype="float32")(logits)  # (batch, 1)
        outputs = keras.layers.Concatenate(name=OUTPUT_NAME, dtype="float32")([probability, *heads])  # (batch, 3)
        return keras.Model(inputs=inputs, outputs=outputs, name=name)
    terms = []  # (batch, 1) each
    if config.use_fm:
        terms.append(FirstOrder(name="first_order", dtype="float32")(first_order_weights))  # includes the bias
        terms.append(FMInteraction(name="fm_interaction", dtype="float32")(embeddings))
    if config.use_dnn:
        terms.append(_mlp(config, "mlp")(flat))
    logit = keras.layers.Add(name="logit")(terms) if len(terms) > 1 else terms[0]  # (batch, 1)
    probability = keras.layers.Activation("sigmoid", dtype="float32", name=OUTPUT_NAME)(logit)
    return keras.Model(inputs=inputs, outputs=probability, name=name)


def build_like_tower(
    config: ModelConfig,
    categorical_sizes: Sequence[int],
    multi_categorical_sizes: Sequence[int],
    num_numeric: int,
    multi_shared_with: Sequence[int] = (),
) -> keras.Model:
    """The like tower: a one-head DeepFM of `config`'s architecture (no prior), `(batch, 1)` "liked"."""
    one_head = dataclasses.replace(config, pick_head=False)
    return build_model(
        one_head, categorical_sizes, multi_categorical_sizes, num_numeric, multi_shared_with, name=LIKE_TOWER
    )


def with_like_tower(heads: keras.Model, tower: keras.Model) -> keras.Model:
    """The served model: `heads`' probability and pick, `tower`'s like, `(batch, 3)` as `build_model`'s outputs.

    Takes `heads`' inputs (the tower reads those it has); both models keep their trained weights.
    """
    # The same layers as uncompiled models: a compiled one would save its optimizer into the served model's file.
    heads = keras.Model(heads.input, heads.output, name=HEADS)
    tower = keras.Model(tower.input, tower.output, name=LIKE_TOWER)
    inputs = {name: keras.Input(t.shape[1:], dtype=t.dtype, name=name) for name, t in heads.input.items()}
    like = tower({name: inputs[name] for name in tower.input})  # (batch, 1)
    outputs = TowerLike(name=OUTPUT_NAME, dtype="float32")([heads(inputs), like])  # (batch, 3)
    return keras.Model(inputs=inputs, outputs=outputs, name="deepfm")


@keras.saving.register_keras_serializable(package="deepfm")
class PickOddsTimesLike(keras.layers.Layer):
    """`[pick logit, like logit]` `(batch, 1)` each -> `sigmoid(pick_logit + log(like))`, `(batch, 1)`.

    The odds of a liked pick against a sampled row, `odds(pick) * like`, as a probability: what ranking sorts
    by. Equal to `pick * like / (1 - pick + pick * like)`; computed from the logits (`log(like) =
    -softplus(-like_logit)`) so that it stays exact where pick is near 1.
    """

    def call(self, inputs):
        pick_logit, like_logit = inputs
        return keras.ops.sigmoid(pick_logit - keras.ops.softplus(-like_logit))

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@keras.saving.register_keras_serializable(package="deepfm")
class TowerLike(keras.layers.Layer):
    """`[heads (batch, 3), like (batch, 1)]` -> `(probability, pick, like)`: the tower's like in place of the head's."""

    def call(self, inputs):
        heads, like = inputs
        return keras.ops.concatenate([heads[:, :2], like], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 3)


def _mlp(config: ModelConfig, name: str) -> MLP:
    return MLP(
        units=config.mlp_units,
        activation=config.activation,
        dropout=config.dropout,
        batch_norm=config.batch_norm,
        l2=config.l2_dense,
        name=name,
    )
