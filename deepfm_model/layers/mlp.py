"""Deep part of DeepFM: a multilayer perceptron ending in one logit."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="deepfm")
class MLP(keras.layers.Layer):
    """Hidden layers `Dense -> [BatchNorm] -> activation -> Dropout`, then `Dense(1)` without activation.

        h_0 = x;  h_k = dropout(act(BN(W_k h_{k-1} + b_k)));  y_dnn = w_out . h_K + b_out

    Args:
        units: widths of the hidden layers, input side first (may be empty: a linear logit).
        activation: activation of the hidden layers.
        dropout: dropout rate after each hidden layer, in [0, 1).
        batch_norm: batch-normalise before each hidden activation.
        l2: L2 penalty on the kernels.
        **kwargs: base `keras.layers.Layer` arguments.

    Input shape: `(batch, features)`.
    Output shape: `(batch, 1)`.
    """

    def __init__(
        self,
        units=(256, 128),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        l2: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        units = tuple(units)
        if any(not isinstance(u, int) or u <= 0 for u in units):
            raise ValueError(f"`units` must be positive ints. Received: `units={units}`")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1). Received: `dropout={dropout}`")
        if l2 < 0:
            raise ValueError(f"`l2` must be non-negative. Received: `l2={l2}`")
        self.units = units
        self.activation = activation
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.l2 = l2
        regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
        self.hidden = []
        for i, width in enumerate(units):
            block = [keras.layers.Dense(width, kernel_regularizer=regularizer, name=f"dense_{i}")]
            if batch_norm:
                block.append(keras.layers.BatchNormalization(name=f"batch_norm_{i}"))
            block.append(keras.layers.Activation(activation, name=f"activation_{i}"))
            if dropout > 0:
                block.append(keras.layers.Dropout(dropout, name=f"dropout_{i}"))
            self.hidden.append(block)
        self.logit = keras.layers.Dense(1, kernel_regularizer=regularizer, name="logit")

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        for block in self.hidden:
            for layer in block:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
        self.logit.build(shape)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs  # (batch, features)
        for block in self.hidden:
            for layer in block:
                x = layer(x, training=training)  # (batch, units[k])
        return self.logit(x)  # (batch, 1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "units": list(self.units),
            "activation": self.activation,
            "dropout": self.dropout,
            "batch_norm": self.batch_norm,
            "l2": self.l2,
        }
