"""First-order (linear) term of the factorisation machine, with the global bias."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="deepfm")
class FirstOrder(keras.layers.Layer):
    """Global bias plus the sum of the per-field first-order weights.

        y_1 = b + sum_i w_i

    The `w_i` come from `FieldEmbedding` (already scaled by the value for numeric fields and pooled for
    multi-valued fields); this layer owns only the bias `b`.

    Args:
        bias_initializer: initialiser of the scalar bias.
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape: `(batch, fields)`.
    Output shape: `(batch, 1)`.
    """

    def __init__(self, bias_initializer="zeros", **kwargs) -> None:
        super().__init__(**kwargs)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape) -> None:
        if len(input_shape) != 2:
            raise ValueError(
                f"`FirstOrder` expects inputs of shape (batch, fields). Received: `input_shape={input_shape}`"
            )
        self.bias = self.add_weight(name="bias", shape=(1,), initializer=self.bias_initializer)
        self.built = True

    def call(self, weights):
        return ops.sum(weights, axis=-1, keepdims=True) + self.bias  # (batch, 1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self) -> dict:
        return {**super().get_config(), "bias_initializer": keras.initializers.serialize(self.bias_initializer)}
