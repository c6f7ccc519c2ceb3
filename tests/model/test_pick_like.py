"""The two-head DeepFM: probability = odds(pick) * like as a probability, what each head learns from, the shared movie embeddings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepfm_model.config import ModelConfig, TrainConfig
from deepfm_model.layers import FieldEmbedding
from deepfm_model.model import build_model
from deepfm_model.objectives import NOT_PICKED, HeadAUC, PickLikeLoss, training_target
from deepfm_model.spec.features import LABEL, PICKED

CONFIG = ModelConfig(embedding_dim=4, mlp_units=(8,), multi_value_max_len=3)


def _inputs(rng, batch=6):
    return {
        "categorical": rng.integers(0, 5, (batch, 2)).astype("int32"),
        "multi_categorical": rng.integers(0, 6, (batch, 1, 3)).astype("int32"),
        "numeric": rng.normal(size=(batch, 3)).astype("float32"),
    }


def test_probability_is_the_odds_of_pick_times_like(rng):
    model = build_model(CONFIG, [5, 5], [6], 3)
    out = model.predict(_inputs(rng), verbose=0).astype("float64")
    assert out.shape == (6, 3)
    probability, pick, like = out.T
    np.testing.assert_allclose(probability / (1 - probability), pick / (1 - pick) * like, rtol=1e-5)
    assert ((out > 0) & (out < 1)).all()


def test_target_is_the_label_on_rated_rows_and_not_picked_on_sampled_ones():
    frame = pd.DataFrame({LABEL: [1, 0, 0, 0], PICKED: [1, 1, 0, 0]})
    np.testing.assert_array_equal(training_target(frame), [1, 0, NOT_PICKED, NOT_PICKED])
    np.testing.assert_array_equal(training_target(frame.drop(columns=PICKED)), [1, 0, 0, 0])


def _bce(y, p):
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_the_like_loss_ignores_sampled_rows_and_is_a_mean_over_rated_ones():
    y = np.array([[1.0], [0.0], [NOT_PICKED], [NOT_PICKED]], dtype="float32")
    pred = np.array([[0.3, 0.6, 0.5], [0.1, 0.5, 0.2], [0.2, 0.4, 0.9], [0.05, 0.1, 0.5]], dtype="float32")
    loss = float(PickLikeLoss(pick_head=True, like_weight=2.0)(y, pred))
    pick = _bce(np.array([1, 1, 0, 0]), pred[:, 1]).mean()
    like = _bce(np.array([1, 0]), pred[:2, 2]).mean()  # the sampled rows' like predictions (0.9, 0.5) play no part
    assert loss == pytest.approx(pick + 2.0 * like, rel=1e-5)
    one_head = float(PickLikeLoss(pick_head=False)(y, pred[:, :1]))
    assert one_head == pytest.approx(_bce(np.array([1, 0, 0, 0]), pred[:, 0]).mean(), rel=1e-5)


def test_like_auc_is_over_rated_rows_and_pick_auc_over_all():
    y = np.array([[1.0], [0.0], [NOT_PICKED], [NOT_PICKED]], dtype="float32")
    # like ranks the liked row above the disliked one (AUC 1) although a sampled row has the top like score.
    pred = np.array([[0.3, 0.9, 0.8], [0.1, 0.8, 0.2], [0.2, 0.1, 0.99], [0.05, 0.2, 0.0]], dtype="float32")
    like, pick = HeadAUC(2), HeadAUC(1)
    like.update_state(y, pred)
    pick.update_state(y, pred)
    assert float(like.result()) == pytest.approx(1.0) and float(pick.result()) == pytest.approx(1.0)


def test_a_multi_valued_field_can_share_a_categorical_fields_rows(rng):
    # Field 1 (movies, 4 ids + OOV) is shared by the multi-valued field: its index k + 1 is the movie's index k.
    layer = FieldEmbedding(
        categorical_sizes=[3, 5], multi_categorical_sizes=[6], embedding_dim=4, multi_shared_with=[1]
    )
    inputs = {"categorical": np.array([[0, 2]], "int32"), "multi_categorical": np.array([[[3, 0, 0]]], "int32")}
    embeddings, first_order = layer(inputs)
    assert layer.total_rows == 3 + 5  # no rows of its own
    np.testing.assert_allclose(embeddings[0, 2], embeddings[0, 1])  # recent movie (local 3) is movie index 2
    np.testing.assert_allclose(first_order[0, 2], first_order[0, 1])
    restored = FieldEmbedding.from_config(layer.get_config())
    assert restored.multi_shared_with == (1,)
    with pytest.raises(ValueError, match="multi_shared_with"):
        FieldEmbedding(categorical_sizes=[3, 5], multi_categorical_sizes=[6], embedding_dim=4, multi_shared_with=[2])
    with pytest.raises(ValueError, match="plus one"):
        FieldEmbedding(categorical_sizes=[3, 5], multi_categorical_sizes=[7], embedding_dim=4, multi_shared_with=[1])


def test_two_heads_learn_picks_and_likes_from_planted_rows(rng):
    """Rows whose numeric feature 0 is high are picked, with logistic noise (the pick's log-odds are 4 x feature
    0); among picked rows, feature 1 decides the like. The served probability ranks "liked among everything"
    nearly as well as the planted truth, `odds(pick) * like`, does."""
    from deepfm_model.train import compile_model

    n = 4000
    data = {
        "categorical": rng.integers(0, 5, (n, 2)).astype("int32"),
        "numeric": rng.normal(size=(n, 2)).astype("float32"),
    }
    picked = data["numeric"][:, 0] + rng.logistic(scale=0.25, size=n) > 0
    target = np.where(picked, (data["numeric"][:, 1] > 0).astype("float32"), NOT_PICKED).reshape(-1, 1)
    model = build_model(ModelConfig(embedding_dim=4, mlp_units=(16,), dropout=0.0), [5, 5], [], 2)
    compile_model(model, TrainConfig(learning_rate=1e-2, steps_per_execution=1))
    model.fit(data, target, batch_size=128, epochs=8, verbose=0)
    out = model.predict(data, verbose=0)
    from deepfm_model.evaluate import roc_auc

    planted_pick_odds = np.exp(4.0 * data["numeric"][:, 0])
    planted = planted_pick_odds * (data["numeric"][:, 1] > 0)
    assert roc_auc(picked, out[:, 1]) > roc_auc(picked, planted_pick_odds) - 0.02
    assert roc_auc(target[picked, 0] == 1, out[picked, 2]) > 0.95
    liked = target[:, 0] == 1
    assert roc_auc(liked, out[:, 0]) > roc_auc(liked, planted) - 0.02  # liked among everything


def test_the_prior_shifts_the_pick_logit_by_itself_and_leaves_like_alone(rng):
    model = build_model(CONFIG, [5, 5], [6], 3, prior=True)
    data = _inputs(rng)
    base = model.predict({**data, "prior": np.zeros((6, 1), "float32")}, verbose=0)
    shifted = model.predict({**data, "prior": np.full((6, 1), -2.5, "float32")}, verbose=0)

    def logit(p):
        return np.log(p / (1 - p))

    np.testing.assert_allclose(logit(shifted[:, 1]) - logit(base[:, 1]), -2.5, atol=1e-4)
    np.testing.assert_allclose(shifted[:, 2], base[:, 2], rtol=1e-6)


def test_the_preprocessed_prior_is_the_log_of_the_recent_share(splits):
    from deepfm_model.preprocessing import PRIOR_SMOOTHING, FeaturePreprocessor, fit_preprocessing, frame_to_raw
    from deepfm_model.spec.features import PICK_PRIOR

    rows = splits[0].head(5).copy()
    rows[PICK_PRIOR] = [0.0, 1.0, 10.0, np.nan, 999.0]
    with_prior = FeaturePreprocessor(fit_preprocessing(splits[0], ModelConfig(pick_prior=True)))
    prior = with_prior(frame_to_raw(rows))["prior"].numpy()[:, 0]
    expected = np.log((np.array([0.0, 1.0, 10.0, 0.0, 999.0]) + PRIOR_SMOOTHING) / 1000.0)
    np.testing.assert_allclose(prior, expected, rtol=1e-5, atol=1e-6)
    without = FeaturePreprocessor(fit_preprocessing(splits[0], ModelConfig()))  # the default
    assert "prior" not in without(frame_to_raw(rows))


def _with_sampled_rows(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """`frame` (rated rows) plus as many sampled rows: the same users, shuffled movies, label 0."""
    sampled = frame.copy()
    sampled["movie_id"] = np.random.default_rng(seed).permutation(sampled["movie_id"].to_numpy())
    sampled[LABEL] = 0
    return pd.concat([frame.assign(**{PICKED: 1}), sampled.assign(**{PICKED: 0})], ignore_index=True)


def test_the_served_like_is_the_tower_trained_on_the_rated_rows_alone(splits, tmp_path):
    from deepfm_model.layout import LIKE_TOWER
    from deepfm_model.model import HEADS
    from deepfm_model.predict import predict_outputs
    from deepfm_model.preprocessing import FeaturePreprocessor, fit_preprocessing, frame_to_raw, make_parquet_dataset
    from deepfm_model.train import train_model

    train, valid, test = (_with_sampled_rows(frame, seed) for seed, frame in enumerate(splits))
    small = ModelConfig(embedding_dim=4, mlp_units=(8,))
    settings = TrainConfig(epochs=2, verbose=0, steps_per_execution=1)
    trained, history = train_model(train, valid, small, settings)
    tower = trained.model.get_layer(LIKE_TOWER)
    outputs = predict_outputs(trained, test)
    inputs = {name: t.numpy() for name, t in trained.preprocessor(frame_to_raw(test)).items() if name in tower.input}
    np.testing.assert_allclose(outputs["like"], tower.predict(inputs, verbose=0)[:, 0], rtol=1e-5, atol=1e-6)
    heads = trained.model.get_layer(HEADS).predict(trained.preprocessor(frame_to_raw(test)), verbose=0)
    np.testing.assert_allclose(outputs["probability"], heads[:, 0], rtol=1e-5, atol=1e-7)  # the heads' probability
    np.testing.assert_allclose(outputs["pick"], heads[:, 1], rtol=1e-5, atol=1e-7)
    assert len(history[f"{LIKE_TOWER}_val_auc"]) >= 1 and len(history["val_auc"]) >= 1

    # The tower's streamed rows: the rated ones, each once, with their labels.
    path = tmp_path / "train.parquet"
    train.to_parquet(path, index=False)
    preprocessor = FeaturePreprocessor(fit_preprocessing(train, small))
    streamed = make_parquet_dataset(path, preprocessor, 256, record_batch_rows=1000, rated_only=True)
    targets = np.concatenate([y.numpy()[:, 0] for _, y in streamed])
    np.testing.assert_array_equal(np.sort(targets), np.sort(train.loc[train[PICKED] == 1, LABEL].to_numpy()))

    without = ModelConfig(embedding_dim=4, mlp_units=(8,), like_tower=False)
    plain, plain_history = train_model(train, valid, without, settings)
    assert LIKE_TOWER not in [layer.name for layer in plain.model.layers]
    assert not any(name.startswith(LIKE_TOWER) for name in plain_history)
