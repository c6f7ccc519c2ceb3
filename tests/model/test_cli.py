"""The package's command line: flags reach the configurations; the `--blank` ablation blanks exactly the named features."""

from __future__ import annotations

import pandas as pd
import pytest

from deepfm_model.cli import _blank_features, _configs, _parser
from deepfm_model.config import ModelConfig


def test_train_flags_reach_the_model_and_training_configs() -> None:
    splits = ["--train", "a", "--valid", "b", "--test", "c", "--out", "d"]
    flags = ["--activation", "gelu", "--batch-norm", "--l2-embedding", "0.01", "--multi-value-combiner", "sum",
             "--mlp-units", "64,32", "--mixed-precision", "--jit-compile", "off"]  # fmt: skip
    model_config, train_config = _configs(_parser().parse_args(["train", *splits, *flags]))
    assert (model_config.activation, model_config.batch_norm, model_config.l2_embedding) == ("gelu", True, 0.01)
    assert model_config.multi_value_combiner == "sum" and model_config.mlp_units == (64, 32)
    assert train_config.mixed_precision and train_config.jit_compile is False
    defaults, _ = _configs(_parser().parse_args(["train", *splits]))
    assert defaults == ModelConfig()


def test_blank_sets_named_features_to_one_constant(split_paths, tmp_path) -> None:
    blanked = _blank_features([str(p) for p in split_paths], ["user_pos_rate", "gender"], tmp_path)
    for original, copy in zip(split_paths, blanked, strict=True):
        before, after = pd.read_parquet(original), pd.read_parquet(copy)
        assert (after["user_pos_rate"] == 0.0).all() and (after["gender"] == "").all()
        untouched = after.columns.difference(["user_pos_rate", "gender"])
        pd.testing.assert_frame_equal(after[untouched], before[untouched])


def test_blank_refuses_unknown_features(split_paths, tmp_path) -> None:
    with pytest.raises(ValueError, match="no_such_feature"):
        _blank_features([str(p) for p in split_paths], ["no_such_feature"], tmp_path)
