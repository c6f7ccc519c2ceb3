"""Configuration dataclasses: defaults, validation, dict round-trip."""

from __future__ import annotations

import dataclasses

import pytest

from deepfm_model.config import ModelConfig, TrainConfig


def test_defaults_match_the_documented_recipe():
    model, train = ModelConfig(), TrainConfig()
    assert (model.embedding_dim, model.mlp_units, model.dropout) == (8, (256, 128), 0.3)
    assert (train.batch_size, train.epochs, train.learning_rate, train.seed) == (1024, 10, 1e-3, 42)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().embedding_dim = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: ModelConfig(embedding_dim=0), "`embedding_dim=0`"),
        (lambda: ModelConfig(dropout=1.0), "`dropout=1.0`"),
        (lambda: TrainConfig(batch_size=0), "`batch_size=0`"),
        (lambda: TrainConfig(learning_rate=-1.0), "`learning_rate=-1.0`"),
    ],
)
def test_bad_values_raise(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_dict_round_trip():
    model = ModelConfig(mlp_units=(64, 32, 16), batch_norm=True)
    assert ModelConfig.from_dict(model.to_dict()) == model
    assert TrainConfig.from_dict(TrainConfig(epochs=3).to_dict()) == TrainConfig(epochs=3)
    with pytest.raises(ValueError, match="nope"):
        TrainConfig.from_dict({"nope": 1})
