"""The package's command line: the `--blank` ablation blanks exactly the named features."""

from __future__ import annotations

import pandas as pd
import pytest

from deepfm_model.cli import _blank_features


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
