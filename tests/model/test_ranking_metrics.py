"""Per-user ranking metrics on planted rankings: exact NDCG@k and recall@k, and the popularity baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepfm_model.evaluate import popularity_scores, ranking_metrics


def test_a_perfect_ranking_scores_one_and_a_reversed_one_the_formula() -> None:
    users = np.array(["u"] * 4)
    labels = np.array([1, 1, 0, 0])
    assert ranking_metrics(users, labels, np.array([4.0, 3.0, 2.0, 1.0]), k=2) == {
        "ndcg_at_2": 1.0, "recall_at_2": 1.0, "ranking_users": 1,
    }  # fmt: skip
    reversed_ = ranking_metrics(users, labels, np.array([1.0, 2.0, 3.0, 4.0]), k=3)
    ideal = 1 + 1 / math.log2(3)
    assert reversed_["ndcg_at_3"] == pytest.approx((1 / math.log2(4)) / ideal)
    assert reversed_["recall_at_3"] == pytest.approx(0.5)


def test_users_are_averaged_and_users_without_positives_left_out() -> None:
    users = np.array(["a", "b", "a", "c", "b", "c"])
    labels = np.array([1, 0, 0, 1, 0, 0])
    scores = np.array([0.9, 0.9, 0.1, 0.2, 0.5, 0.8])  # a: hit at rank 1; c: its positive at rank 2
    metrics = ranking_metrics(users, labels, scores, k=1)
    assert metrics == {"ndcg_at_1": 0.5, "recall_at_1": 0.5, "ranking_users": 2}


def test_ties_keep_row_order_and_bad_input_is_refused() -> None:
    users = np.array(["u", "u"])
    assert ranking_metrics(users, np.array([0, 1]), np.array([0.5, 0.5]), k=1)["recall_at_1"] == 0.0
    with pytest.raises(ValueError, match="`k` must be positive"):
        ranking_metrics(users, np.array([0, 1]), np.array([0.5, 0.5]), k=0)
    with pytest.raises(ValueError, match="one row each"):
        ranking_metrics(users, np.array([0, 1, 1]), np.array([0.5, 0.5]))


def test_popularity_counts_training_positives_per_item() -> None:
    scores = popularity_scores(np.array(["m1", "m1", "m2", "m1"]), np.array([1, 1, 1, 0]), np.array(["m2", "m1", "m9"]))
    np.testing.assert_array_equal(scores, [1.0, 2.0, 0.0])
