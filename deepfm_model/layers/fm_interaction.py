"""Second-order factorisation machine term."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="deepfm")
class FMInteraction(keras.layers.Layer):
    """Sum of all pairwise dot products of field embeddings, in O(fields x dim).

    Rendle (2010), "Factorization Machines"; Guo et al. (2017), DeepFM, eq. (2):

        y_fm2 = sum_{i<j} <v_i, v_j> = 0.5 * sum_d ((sum_i v_id)^2 - sum_i v_id^2)

    Args:
        keepdims: keep a trailing axis of size 1 in the output.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Input shape: `(batch, fields, dim)`.
    Output shape: `(batch, 1)` when `keepdims`, else `(batch,)`.
    """

    def __init__(self, keepdims: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(keepdims, bool):
            raise TypeError(f"`keepdims` must be a bool. Received: `keepdims={keepdims!r}`")
        self.keepdims = keepdims

    def build(self, input_shape) -> None:
        if len(input_shape) != 3:
            raise ValueError(
                f"`FMInteraction` expects inputs of shape (batch, fields, dim). Received: `input_shape={input_shape}`"
            )
        self.built = True

    def call(self, embeddings):
        # The two sums nearly cancel, so they are formed in float32 even under a mixed (16-bit) policy.
        embeddings = ops.cast(embeddings, "float32")  # (batch, fields, dim)
        square_of_sum = ops.square(ops.sum(embeddings, axis=1))  # (batch, dim)
        sum_of_square = ops.sum(ops.square(embeddings), axis=1)  # (batch, dim)
        pairwise = 0.5 * ops.sum(square_of_sum - sum_of_square, axis=-1, keepdims=self.keepdims)  # (batch, 1)
        return ops.cast(pairwise, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1) if self.keepdims else (input_shape[0],)

    def get_config(self) -> dict:
        return {**super().get_config(), "keepdims": self.keepdims}
