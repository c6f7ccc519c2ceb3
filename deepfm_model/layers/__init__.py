"""Keras 3 layers of DeepFM, one per module. They use `keras.ops` and run on any Keras backend; under TensorFlow,
training steps on the CPU run `FieldEmbedding` and `FMInteraction` in compiled kernels (`deepfm_model.kernels`)
that compute the same values up to float rounding."""

from deepfm_model.layers.field_embedding import FieldEmbedding
from deepfm_model.layers.first_order import FirstOrder
from deepfm_model.layers.fm_interaction import FMInteraction
from deepfm_model.layers.masked_pooling import MaskedPooling
from deepfm_model.layers.mlp import MLP

__all__ = ["MLP", "FMInteraction", "FieldEmbedding", "FirstOrder", "MaskedPooling"]
