"""Keras 3 layers of DeepFM, one per module. They use `keras.ops` only and run on any Keras backend."""

from deepfm_model.layers.field_embedding import FieldEmbedding
from deepfm_model.layers.first_order import FirstOrder
from deepfm_model.layers.fm_interaction import FMInteraction
from deepfm_model.layers.masked_mean_pooling import MaskedMeanPooling
from deepfm_model.layers.mlp import MLP

__all__ = ["MLP", "FMInteraction", "FieldEmbedding", "FirstOrder", "MaskedMeanPooling"]
