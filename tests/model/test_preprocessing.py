"""Preprocessing: vocabularies with OOV, multi-valued padding, numeric scaling, frame checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from deepfm_model.config import ModelConfig
from deepfm_model.preprocessing import (
    FeaturePreprocessor,
    NumericStats,
    PreprocessingState,
    check_frame,
    fit_preprocessing,
    frame_to_raw,
)
from deepfm_model.spec import features as spec


@pytest.fixture(scope="module")
def preprocessor(splits) -> FeaturePreprocessor:
    return FeaturePreprocessor(fit_preprocessing(splits[0], ModelConfig(multi_value_max_len=3, vocab_min_count=1)))


def _transform(preprocessor: FeaturePreprocessor, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    raw = {k: tf.constant(v) for k, v in frame_to_raw(frame).items()}
    return {k: v.numpy() for k, v in preprocessor(raw).items()}


def test_vocabularies_come_from_the_train_split_only(splits, preprocessor):
    train, _, test = splits
    vocabulary = preprocessor.state.categorical["user_id"]
    assert set(vocabulary) == set(train["user_id"])
    assert preprocessor.categorical_sizes[0] == len(vocabulary) + 1
    unseen = set(test["user_id"]) - set(train["user_id"])
    assert not unseen & set(vocabulary)


def test_unknown_values_go_to_the_oov_bucket(splits, preprocessor):
    rows = splits[2].head(2).copy()
    rows["user_id"] = ["no-such-user", rows["user_id"].iloc[1]]
    rows["genres"] = ["NoSuchGenre|Action", ""]
    out = _transform(preprocessor, rows)
    assert out["categorical"][0, 0] == 0
    assert out["categorical"][1, 0] > 0
    genres = out["multi_categorical"][:, 0, :]
    action = preprocessor.state.multi_categorical["genres"].index("Action") + 2
    np.testing.assert_array_equal(genres, [[1, action, 0], [0, 0, 0]])


def test_multi_valued_field_is_padded_and_truncated(splits, preprocessor):
    rows = splits[2].head(1).copy()
    rows["genres"] = ["Action|Comedy|Drama|War|Western"]
    out = _transform(preprocessor, rows)["multi_categorical"]
    genres = preprocessor.multi_names.index("genres")
    assert out.shape == (1, len(preprocessor.multi_names), 3)
    assert (out[:, genres] > 1).all()


def test_numeric_features_are_log_scaled_normalised_and_imputed(splits, preprocessor):
    train = splits[0]
    rows = splits[2].head(3).copy()
    rows["movie_rating_count"] = np.array([0.0, 10.0, np.nan], "float32")
    out = _transform(preprocessor, rows)["numeric"]
    column = preprocessor.numeric_names.index("movie_rating_count")
    logged = np.log1p(train["movie_rating_count"].to_numpy(np.float64))
    expected = (np.log1p([0.0, 10.0]) - logged.mean()) / logged.std()
    np.testing.assert_allclose(out[:2, column], expected, rtol=1e-5)
    assert out[2, column] == 0.0
    age = preprocessor.numeric_names.index("age")
    ages = train["age"].to_numpy(np.float64)
    np.testing.assert_allclose(out[:, age], (rows["age"].to_numpy() - ages.mean()) / ages.std(), rtol=1e-5)


def test_hashed_feature_uses_bins(splits):
    state = fit_preprocessing(splits[0], ModelConfig())
    hashed = PreprocessingState(
        categorical={**state.categorical, "zip_prefix": []},
        hash_bins={**state.hash_bins, "zip_prefix": 7},
        multi_categorical=state.multi_categorical,
        numeric=state.numeric,
        multi_value_max_len=state.multi_value_max_len,
    )
    preprocessor = FeaturePreprocessor(hashed)
    column = preprocessor.categorical_names.index("zip_prefix")
    assert preprocessor.categorical_sizes[column] == 7
    out = _transform(preprocessor, splits[2].head(50))["categorical"][:, column]
    assert out.min() >= 0 and out.max() < 7


def test_state_json_round_trip(tmp_path, preprocessor):
    preprocessor.save(tmp_path / "p.json")
    loaded = FeaturePreprocessor.load(tmp_path / "p.json")
    assert loaded.state == preprocessor.state
    assert isinstance(loaded.state.numeric["age"], NumericStats)


def test_missing_feature_is_named(splits):
    with pytest.raises(KeyError, match="genres"):
        check_frame(splits[2].drop(columns=["genres"]))


@pytest.mark.parametrize(("name", "bad"), [("user_id", 196), ("age", "thirty")])
def test_wrong_dtype_is_named(splits, name, bad):
    rows = splits[2].head(2).copy()
    rows[name] = bad
    with pytest.raises(TypeError, match=f"`{name}`"):
        check_frame(rows)


def test_every_spec_feature_is_used(preprocessor):
    names = preprocessor.categorical_names + preprocessor.multi_names + preprocessor.numeric_names
    assert sorted(names) == sorted(spec.FEATURE_NAMES)
