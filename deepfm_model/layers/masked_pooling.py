"""Mean or sum of the embeddings of a multi-valued field, ignoring padding."""

from __future__ import annotations

import keras
from keras import ops

from deepfm_model.config import MULTI_VALUE_COMBINERS


@keras.saving.register_keras_serializable(package="deepfm")
class MaskedPooling(keras.layers.Layer):
    """Mean or sum over the values of a padded multi-valued field; padding positions contribute nothing.

        m_l = 1[index_l != padding_index]
        sum:  pooled = sum_l m_l * x_l
        mean: pooled = sum_l m_l * x_l / max(sum_l m_l, 1)

    A row with no value at all (only padding) pools to the zero vector.

    Args:
        combiner: `"mean"` (the default) or `"sum"`.
        padding_index: index that marks an empty slot.
        **kwargs: base `keras.layers.Layer` arguments.

    Inputs:
        values: `(..., length, channels)` float, the gathered rows of each slot.
        indices: `(..., length)` int, the slot indices the rows were gathered with.
    Output shape: `(..., channels)`.
    """

    def __init__(self, combiner: str = "mean", padding_index: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if combiner not in MULTI_VALUE_COMBINERS:
            raise ValueError(f"`combiner` must be one of {MULTI_VALUE_COMBINERS}. Received: `combiner={combiner!r}`")
        if not isinstance(padding_index, int) or padding_index < 0:
            raise ValueError(f"`padding_index` must be a non-negative int. Received: `padding_index={padding_index!r}`")
        self.combiner = combiner
        self.padding_index = padding_index

    def call(self, values, indices):
        mask = ops.cast(ops.not_equal(indices, self.padding_index), values.dtype)  # (..., length)
        total = ops.sum(values * ops.expand_dims(mask, -1), axis=-2)  # (..., channels)
        if self.combiner == "sum":
            return total
        count = ops.maximum(ops.sum(mask, axis=-1, keepdims=True), 1.0)  # (..., 1)
        return total / count

    def compute_output_shape(self, values_shape, indices_shape=None):
        return tuple(values_shape[:-2]) + (values_shape[-1],)

    def get_config(self) -> dict:
        return {**super().get_config(), "combiner": self.combiner, "padding_index": self.padding_index}
