"""The blessing rules, one at a time, on hand-made evidence (the pipeline's gates run them end to end)."""

from __future__ import annotations

import math

import pytest

from dags.pipeline.blessing import Candidate, decide, non_finite_losses
from deepfm_model.signature import describe_diff, signature_diff

SIGNATURE = {"inputs": {"user_id": "string[?]", "age": "float32[?]"}, "outputs": {"probability": "float32[?,1]"}}
GATES = {"auc_floor": 0.6, "auc_tolerance": 0.01, "allow_signature_change": False}


def candidate(auc: float = 0.72, **overrides) -> Candidate:
    return Candidate(**{"auc": auc, "logloss": 0.6, "non_finite_epochs": [], "signature": SIGNATURE, **overrides})


def test_first_model_needs_only_the_floor() -> None:
    blessed, reason = decide(candidate(0.61), serving_version=None, serving_auc=None, signature_changed=None, **GATES)
    assert blessed and "no model serving yet" in reason
    blessed, reason = decide(candidate(0.59), serving_version=None, serving_auc=None, signature_changed=None, **GATES)
    assert not blessed and "below the floor 0.6000" in reason


@pytest.mark.parametrize(("auc", "blessed"), [(0.7101, True), (0.7100, True), (0.7099, False), (0.75, True)])
def test_tolerance_against_the_serving_model(auc: float, blessed: bool) -> None:
    result, reason = decide(candidate(auc), serving_version=3, serving_auc=0.72, signature_changed=None, **GATES)
    assert result is blessed, reason
    if not blessed:
        assert "trails serving version 3 (0.7200)" in reason


@pytest.mark.parametrize(
    "bad",
    [{"auc": math.nan}, {"logloss": math.inf}, {"auc": None}, {"non_finite_epochs": [2]}, {"signature": None}],
    ids=["nan-auc", "inf-logloss", "no-auc", "nan-loss-epoch", "no-signature"],
)
def test_broken_candidates_are_rejected_with_a_reason(bad: dict) -> None:
    blessed, reason = decide(candidate(**bad), serving_version=None, serving_auc=None, signature_changed=None, **GATES)
    assert not blessed and reason.startswith("candidate ")


def test_signature_change_is_a_rejection_unless_allowed() -> None:
    changed = {**SIGNATURE, "inputs": {"user_id": "int64[?]", "zip": "string[?]"}}
    diff = signature_diff(SIGNATURE, changed)
    assert diff == {"inputs": {"added": ["zip"], "removed": ["age"], "changed": {"user_id": ["string[?]", "int64[?]"]}}}
    assert (
        describe_diff(diff) == "inputs added: zip; inputs removed: age; inputs changed: user_id string[?] -> int64[?]"
    )
    blessed, reason = decide(candidate(0.9), serving_version=2, serving_auc=None, signature_changed=diff, **GATES)
    assert not blessed and "differs from serving version 2: inputs added: zip" in reason
    allowed = {**GATES, "allow_signature_change": True}
    blessed, reason = decide(candidate(0.9), serving_version=2, serving_auc=None, signature_changed=diff, **allowed)
    assert blessed and "serving version 2 was not compared" in reason


def test_non_finite_losses_names_the_epochs() -> None:
    assert non_finite_losses({"loss": [0.7, 0.6, math.nan, "NaN", 0.5]}) == [2, 3]
    assert non_finite_losses({"loss": [0.7, 0.6], "like_tower_loss": [0.5, math.inf]}) == [1]  # the served like
    assert non_finite_losses({}) == []


def test_a_candidate_losing_to_popularity_at_top_n_is_rejected_naming_the_metric() -> None:
    losing = candidate(
        0.76, ndcg=0.28, whole_catalogue_ndcg=0.29, popularity_ndcg=0.31, popularity_gap_ci=(-0.05, -0.01)
    )
    blessed, reason = decide(losing, serving_version=None, serving_auc=None, signature_changed=None, **GATES)
    assert not blessed
    assert reason == (
        "candidate full-catalogue NDCG@10 0.2800 (recommend) is below popularity's 0.3100 in the same run "
        "(paired 95% interval of the difference [-0.0500, -0.0100])"
    )
    winning = candidate(0.76, ndcg=0.33, whole_catalogue_ndcg=0.32, popularity_ndcg=0.31, popularity_gap_ci=(0.0, 0.04))
    blessed, reason = decide(winning, serving_version=None, serving_auc=None, signature_changed=None, **GATES)
    assert blessed and "full-catalogue NDCG@10 0.3300 >= popularity's 0.3100" in reason


def test_a_deficit_within_the_noise_is_not_a_rejection() -> None:
    close = candidate(
        0.76, ndcg=0.305, whole_catalogue_ndcg=0.30, popularity_ndcg=0.31, popularity_gap_ci=(-0.04, 0.03)
    )
    blessed, reason = decide(close, serving_version=None, serving_auc=None, signature_changed=None, **GATES)
    assert blessed and "0.3050 < (within the interval) popularity's 0.3100" in reason
    no_interval = candidate(0.76, ndcg=0.305, whole_catalogue_ndcg=0.30, popularity_ndcg=0.31)
    assert not decide(no_interval, serving_version=None, serving_auc=None, signature_changed=None, **GATES)[0]


@pytest.mark.parametrize(("whole", "blessed"), [(0.315, True), (0.310, True), (0.3099, False)])
def test_top_n_tolerance_against_the_serving_model(whole: float, blessed: bool) -> None:
    evaluated = candidate(0.76, ndcg=0.35, whole_catalogue_ndcg=whole, popularity_ndcg=0.30)
    result, reason = decide(evaluated, serving_version=4, serving_auc=0.76, signature_changed=None, serving_ndcg=0.32,
                            ndcg_tolerance=0.01, **GATES)  # fmt: skip
    assert result is blessed, reason
    if not blessed:
        assert reason.startswith("candidate full-catalogue NDCG@10 0.3099 trails serving version 4 (0.3200) by more")


def test_trailing_the_serving_model_within_the_noise_is_not_a_rejection() -> None:
    evaluated = candidate(0.76, ndcg=0.35, whole_catalogue_ndcg=0.30, popularity_ndcg=0.29)
    gates = {**GATES, "serving_ndcg": 0.32, "ndcg_tolerance": 0.01}
    noisy = decide(evaluated, serving_version=4, serving_auc=0.76, signature_changed=None, serving_gap_ci=(-0.05, 0.01),
                   **gates)  # fmt: skip
    assert noisy[0], noisy[1]
    real = decide(evaluated, serving_version=4, serving_auc=0.76, signature_changed=None, serving_gap_ci=(-0.04, -0.001),
                  **gates)  # fmt: skip
    assert not real[0] and "trails serving version 4 (0.3200)" in real[1]


def test_popularity_tolerance_lets_a_candidate_trail_by_that_much_and_no_more() -> None:
    trailing = candidate(0.76, ndcg=0.53, popularity_ndcg=0.59, popularity_gap_ci=(-0.12, -0.002))
    gates = {"serving_version": None, "serving_auc": None, "signature_changed": None, **GATES}
    blessed, reason = decide(trailing, **gates)
    assert not blessed and "below popularity's 0.5900" in reason and "tolerance" not in reason
    blessed, reason = decide(trailing, popularity_tolerance=0.07, **gates)
    assert blessed and "0.5300 < (within the tolerance 0.0700) popularity's 0.5900" in reason
    blessed, reason = decide(trailing, popularity_tolerance=0.05, **gates)
    assert not blessed and reason.endswith("[-0.1200, -0.0020]), by more than the tolerance 0.0500")
