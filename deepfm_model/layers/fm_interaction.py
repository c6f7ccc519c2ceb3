"""Second-order factorisation machine term."""

from __future__ import annotations

import keras
from keras import ops


@ops.custom_gradient
def pairwise_interactions(embeddings):
    """`0.5 * sum_d ((sum_i v_id)^2 - sum_i v_id^2)` of `(batch, fields, dim)` embeddings, as `(batch, 1)`.

    The gradient is written out, `d/dv_i = upstream * (sum_j v_j - v_i)`: one pass over the embeddings,
    where autodiff of the formula takes two broadcasts (tiles), two squares' derivatives and a sum.
    """
    field_sum = ops.sum(embeddings, axis=1)  # (batch, dim)
    pairwise = 0.5 * (
        ops.sum(ops.square(field_sum), axis=-1, keepdims=True)
        - ops.expand_dims(ops.sum(ops.square(embeddings), axis=(1, 2)), -1)
    )  # (batch, 1)

    def gradient(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        with keras.name_scope("fm_interaction_gradient"):  # named for profiles: it runs outside the layer's scope
            return ops.expand_dims(upstream, -1) * (ops.expand_dims(field_sum, 1) - embeddings)  # (batch, fields, dim)

    return pairwise, gradient


@keras.saving.register_keras_serializable(package="deepfm")
class FMInteraction(keras.layers.Layer):
    """Sum of all pairwise dot products of field embeddings, in O(fields x dim).

    Rendle (2010), "Factorization Machines"; Guo et al. (2017), DeepFM, eq. (2):

        y_fm2 = sum_{i<j} <v_i, v_j> = 0.5 * sum_d ((sum_i v_id)^2 - sum_i v_id^2)

    Args:
        keepdims: keep a trailing axis of size 1 in the output.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Training steps under TensorFlow on the CPU compute the term and its gradient in a compiled kernel
    (`kernels/fm_interaction.cc`, one pass over the embeddings each); inference and exports use `keras.ops`.

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

    def call(self, embeddings, training=None):
        # The two sums nearly cancel, so they are formed in float32 even under a mixed (16-bit) policy.
        embeddings = ops.cast(embeddings, "float32")
        kernel = None
        if keras.backend.backend() == "tensorflow":
            from deepfm_model.kernels import layer_ops

            kernel = layer_ops.training_kernel("fm_interaction", training)
        if kernel is not None:
            pairwise = kernel.deepfm_fm_interaction(embeddings)  # (batch, 1)
        else:
            pairwise = pairwise_interactions(embeddings)  # (batch, 1)
        return ops.cast(pairwise if self.keepdims else ops.squeeze(pairwise, -1), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1) if self.keepdims else (input_shape[0],)

    def get_config(self) -> dict:
        return {**super().get_config(), "keepdims": self.keepdims}
