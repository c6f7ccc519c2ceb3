"""Full-catalogue top-N evaluation: hand-computed metrics, the task protocol, bootstrap and the tuned baselines."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from deepfm_model import topn
from deepfm_model.spec.features import EVENT_TIMESTAMP, MOVIE_KEY, RATING, USER_KEY
from deepfm_model.spec.raw_data import EVENT_COLUMNS

T0 = pd.Timestamp("2024-01-01", tz="UTC")


def events_frame(rows: list[tuple[str, str, float, int]]) -> pd.DataFrame:
    """Events from (user, item, days after T0, rating) tuples."""
    users, items, days, ratings = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            USER_KEY: list(users),
            MOVIE_KEY: list(items),
            EVENT_TIMESTAMP: T0 + pd.to_timedelta(list(days), unit="D"),
            RATING: list(ratings),
        }
    )


def hand_task(exclude: list[list[int]], relevant: list[list[int]]) -> topn.RankingTask:
    """A task built directly from 0/1 matrices (users "u0", "u1", ..., items "i0", "i1", ...)."""
    exclude_, relevant_ = np.array(exclude, dtype=bool), np.array(relevant, dtype=bool)
    users = np.array([f"u{i}" for i in range(exclude_.shape[0])], dtype=object)
    items = np.array([f"i{j}" for j in range(exclude_.shape[1])], dtype=object)
    history = pd.DataFrame(columns=[USER_KEY, MOVIE_KEY, EVENT_TIMESTAMP, RATING])
    return topn.RankingTask(users, items, history, exclude_, relevant_, T0, T0 + pd.Timedelta(days=1), len(users))


def dcg(ranks: list[int]) -> float:
    return sum(1 / math.log2(r + 1) for r in ranks)


# Metrics.


def test_metrics_match_the_formulas_on_a_hand_ranked_task() -> None:
    # u0: i0 excluded despite the top score; candidates ranked i1 i2 i3 i4 i5; relevant i2, i4 at ranks 2 and 4.
    # u1: all scores tie, so the column order ranks; its one relevant item i5 comes 6th.
    task = hand_task(exclude=[[1, 0, 0, 0, 0, 0], [0] * 6], relevant=[[0, 0, 1, 0, 1, 0], [0, 0, 0, 0, 0, 1]])
    scores = np.array([[9.0, 5.0, 4.0, 3.0, 2.0, 1.0], [0.0] * 6])
    metrics = topn.per_user_metrics(scores, task)
    assert list(metrics) == ["ndcg_at_10", "recall_at_10", "recall_at_50", "mrr"]
    np.testing.assert_allclose(metrics["ndcg_at_10"], [dcg([2, 4]) / dcg([1, 2]), dcg([6]) / dcg([1])])
    np.testing.assert_allclose(metrics["recall_at_10"], [1.0, 1.0])
    np.testing.assert_allclose(metrics["recall_at_50"], [1.0, 1.0])
    np.testing.assert_allclose(metrics["mrr"], [1 / 2, 1 / 6])


def test_recall_divides_by_all_relevant_items_and_ndcg_ideal_by_min_of_them_and_k() -> None:
    # 70 items, the first 60 relevant and ranked first: a perfect ranking.
    task = hand_task(exclude=[[0] * 70], relevant=[[1] * 60 + [0] * 10])
    metrics = topn.per_user_metrics(np.arange(70, 0, -1, dtype=float)[None, :], task)
    assert metrics["recall_at_10"][0] == pytest.approx(10 / 60)
    assert metrics["recall_at_50"][0] == pytest.approx(50 / 60)  # never 1: 60 relevant items, 50 slots
    assert metrics["ndcg_at_10"][0] == pytest.approx(1.0)
    assert metrics["mrr"][0] == 1.0
    # Reversed: the 10 irrelevant items first; the first relevant item is 11th.
    reversed_ = topn.per_user_metrics(np.arange(70, dtype=float)[None, :], task)
    assert reversed_["ndcg_at_10"][0] == 0.0
    assert reversed_["recall_at_50"][0] == pytest.approx(40 / 60)
    assert reversed_["mrr"][0] == pytest.approx(1 / 11)


def test_excluded_items_are_never_ranked_whatever_their_score() -> None:
    # i1 is relevant; everything else it could lose to is excluded, even a relevant-and-excluded i0 at +inf.
    task = hand_task(exclude=[[1, 0, 1, 1]], relevant=[[1, 1, 0, 0]])
    scores = np.array([[np.inf, -np.inf, 1e9, 5.0]])
    metrics = topn.per_user_metrics(scores, task)
    assert metrics["mrr"][0] == 1.0 and metrics["ndcg_at_10"][0] == 1.0
    assert metrics["recall_at_10"][0] == 1.0  # |R(u)| = 1: the excluded i0 is not a relevant item


def test_ties_are_broken_by_column_order() -> None:
    task = hand_task(exclude=[[0, 0, 0], [0, 0, 0]], relevant=[[1, 0, 0], [0, 0, 1]])
    metrics = topn.per_user_metrics(np.ones((2, 3)), task)
    np.testing.assert_allclose(metrics["mrr"], [1.0, 1 / 3])


def test_bad_scores_are_refused_quoting_the_value() -> None:
    task = hand_task(exclude=[[0, 0]], relevant=[[1, 0]])
    with pytest.raises(ValueError, match=r"Received: `scores.shape=\(2, 2\)`"):
        topn.per_user_metrics(np.zeros((2, 2)), task)
    with pytest.raises(ValueError, match="must not be NaN"):
        topn.per_user_metrics(np.array([[np.nan, 0.0]]), task)
    with pytest.raises(ValueError, match="needs a relevant item"):
        topn.per_user_metrics(np.zeros((1, 2)), hand_task(exclude=[[1, 0]], relevant=[[1, 0]]))


# Bootstrap.


def test_summarize_interval_contains_the_mean_and_is_seeded() -> None:
    per_user = {"ndcg_at_10": np.random.default_rng(0).random(200), "mrr": np.linspace(0, 1, 200)}
    summary = topn.summarize(per_user, n_bootstrap=500, seed=3)
    for name in per_user:
        low, high = summary[f"{name}_ci"]
        assert low < summary[name] < high
        assert summary[name] == pytest.approx(per_user[name].mean())
        assert high - low < 0.2
    assert summary == topn.summarize(per_user, n_bootstrap=500, seed=3)
    assert summary != topn.summarize(per_user, n_bootstrap=500, seed=4)
    assert summary["users"] == 200
    assert all(type(v) is float for k, v in summary.items() if not k.endswith("_ci") and k != "users")
    assert json.loads(json.dumps(summary)) == summary


def test_summarize_interval_is_degenerate_when_every_user_scores_the_same() -> None:
    summary = topn.summarize({"recall_at_10": np.full(50, 0.25)})
    assert summary["recall_at_10"] == 0.25
    assert summary["recall_at_10_ci"] == [0.25, 0.25]
    with pytest.raises(ValueError, match="Received: `n_bootstrap=0`"):
        topn.summarize({"recall_at_10": np.full(5, 0.25)}, n_bootstrap=0)


def test_paired_bootstrap_sees_a_consistent_gain_and_no_gain() -> None:
    rng = np.random.default_rng(1)
    b = rng.random(300)
    better = topn.paired_bootstrap(b + 0.05 + 0.01 * rng.standard_normal(300), b)
    assert better["difference"] == pytest.approx(0.05, abs=0.01)
    assert 0 < better["ci"][0] < better["difference"] < better["ci"][1]
    assert better["p_a_not_better"] == 0.0
    same = topn.paired_bootstrap(b, b)
    assert same == {"difference": 0.0, "ci": [0.0, 0.0], "p_a_not_better": 1.0}
    with pytest.raises(ValueError, match="one shape"):
        topn.paired_bootstrap(b, b[:10])


# The task.


def test_ranking_task_masks_history_and_marks_window_positives() -> None:
    events = events_frame(
        [
            ("u1", "m1", 0, 5), ("u1", "m2", 1, 2),  # history: excluded whatever the rating
            ("u1", "m3", 10, 4), ("u1", "m4", 11, 3),  # window: m3 relevant, m4 (rating 3) not
            ("u1", "m5", 20, 5),  # at `end`: outside the window
            ("u2", "m3", 12, 3),  # only a negative in the window: not a task user
            ("u3", "m1", 1, 5), ("u3", "m1", 12, 5),  # re-rates a history item: not relevant, not a task user
            ("u4", "zz", 12, 5), ("u4", "m2", 10, 5),  # zz is not in the catalogue; m2 exactly at `start`
        ]
    )  # fmt: skip
    catalogue = ["m5", "m4", "m3", "m2", "m1"]
    task = topn.ranking_task(events, catalogue, T0 + pd.Timedelta(days=10), T0 + pd.Timedelta(days=20))
    assert task.users.tolist() == ["u1", "u4"]
    assert task.items.tolist() == catalogue
    assert task.sampled_from == 2
    np.testing.assert_array_equal(task.exclude, [[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(task.relevant, [[0, 0, 1, 0, 0], [0, 0, 0, 1, 0]])
    assert (task.history[EVENT_TIMESTAMP] < task.start).all() and len(task.history) == 3
    assert list(task.history.columns) == list(EVENT_COLUMNS)
    assert task.start == pd.Timestamp("2024-01-11", tz="UTC")
    with pytest.raises(ValueError, match="`start` must be before `end`"):
        topn.ranking_task(events, catalogue, T0, T0)


def test_ranking_task_samples_users_with_a_seed_and_records_it() -> None:
    events = events_frame([(f"u{i:02d}", "m1", 5, 5) for i in range(20)])
    full = topn.ranking_task(events, ["m1", "m2"], T0, T0 + pd.Timedelta(days=10))
    assert len(full.users) == full.sampled_from == 20
    sample = topn.ranking_task(events, ["m1", "m2"], T0, T0 + pd.Timedelta(days=10), max_users=5, seed=1)
    assert len(sample.users) == 5 and sample.sampled_from == 20
    assert sample.users.tolist() == sorted(sample.users.tolist())
    assert set(sample.users) <= set(full.users)
    again = topn.ranking_task(events, ["m1", "m2"], T0, T0 + pd.Timedelta(days=10), max_users=5, seed=1)
    assert again.users.tolist() == sample.users.tolist()
    other = topn.ranking_task(events, ["m1", "m2"], T0, T0 + pd.Timedelta(days=10), max_users=5, seed=2)
    assert other.users.tolist() != sample.users.tolist()
    with pytest.raises(ValueError, match="Received: `max_users=0`"):
        topn.ranking_task(events, ["m1"], T0, T0 + pd.Timedelta(days=10), max_users=0)


# Baselines.


def random_task(seed: int = 0, n_users: int = 40, n_items: int = 12) -> tuple[topn.RankingTask, np.ndarray]:
    """History of random positives and one window positive per user; returns the task and the history X."""
    rng = np.random.default_rng(seed)
    x = (rng.random((n_users, n_items)) < 0.3).astype(float)
    x[:, -1] = 0.0  # the last item is never in a history: every user has it to find in the window
    rows = [(f"u{u:02d}", f"i{i:02d}", 1.0, 5) for u, i in zip(*np.nonzero(x), strict=True)]
    rows += [(f"u{u:02d}", f"i{n_items - 1:02d}", 10.0, 5) for u in range(n_users)]
    items = [f"i{i:02d}" for i in range(n_items)]
    return topn.ranking_task(events_frame(rows), items, T0 + pd.Timedelta(days=5), T0 + pd.Timedelta(days=20)), x


def test_ease_weights_are_the_constrained_least_squares_solution() -> None:
    task, x = random_task()
    l2 = 5.0
    weights = topn.item_similarity(task, "ease", l2=l2)
    np.testing.assert_array_equal(np.diag(weights), 0.0)
    # Column j of B minimises ||x_j - X_{-j} b||^2 + l2 ||b||^2 over the other items (B_jj = 0).
    for j in range(x.shape[1]):
        others = np.delete(np.arange(x.shape[1]), j)
        xo = x[:, others]
        direct = np.linalg.solve(xo.T @ xo + l2 * np.eye(len(others)), xo.T @ x[:, j])
        np.testing.assert_allclose(weights[others, j], direct, atol=1e-10)
    np.testing.assert_allclose(topn.ease_scores(task, l2), x @ weights, atol=1e-8)


def test_scores_are_the_history_times_the_item_similarity() -> None:
    task, x = random_task(seed=1)
    for method, scorer, params in (
        ("ease", topn.ease_scores, {"l2": 20.0}),
        ("item_knn", topn.item_knn_scores, {"neighbours": 3, "shrink": 2.0}),
    ):
        weights = topn.item_similarity(task, method, **params)
        weights = weights.toarray() if sparse.issparse(weights) else weights
        difference = scorer(task, **params) - x @ weights
        np.testing.assert_allclose(difference, difference[:1].repeat(len(x), axis=0), atol=1e-13)  # the tie-break
        assert -1e-13 <= difference.min() and difference.max() < 1e-8
    with pytest.raises(ValueError, match="Received: `method='svd'`"):
        topn.item_similarity(task, "svd")


def test_ease_on_a_catalogue_over_its_limit_is_refused_naming_the_limit(monkeypatch) -> None:
    task, _ = random_task(seed=3)
    monkeypatch.setattr(topn, "EASE_MAX_ITEMS", 5)
    with pytest.raises(topn.CatalogueTooLarge, match="over EASE_MAX_ITEMS=5"):
        topn.ease_scores(task, 10.0)
    assert topn.item_knn_scores(task, neighbours=3).shape == task.exclude.shape  # item-kNN stays sparse: no limit


def test_item_knn_is_the_shrunk_cosine_keeping_each_items_nearest_neighbours() -> None:
    task, x = random_task(seed=2)
    weights = topn.item_similarity(task, "item_knn", neighbours=4, shrink=1.5).toarray()  # sparse: k per row
    counts = x.T @ x
    norms = np.sqrt(np.diag(counts))
    cosine = np.divide(counts, np.outer(norms, norms) + 1.5, out=np.zeros_like(counts), where=counts > 0)
    np.fill_diagonal(cosine, 0.0)
    kept = weights > 0
    np.testing.assert_array_equal(kept.sum(axis=1), np.minimum((cosine > 0).sum(axis=1), 4))
    np.testing.assert_allclose(weights[kept], cosine[kept])
    for row, weight in zip(cosine[kept.any(axis=1)], weights[kept.any(axis=1)], strict=True):
        assert weight[weight > 0].min() >= np.sort(row)[-4] - 1e-12  # what is kept is the largest of the row


def test_item_knn_forms_the_rows_a_score_reads_block_by_block(monkeypatch) -> None:
    """At 10M events the whole (items x items) product took 9.5 GB: rows are formed in blocks, and only those of
    items the task's users rated unless the task has no users (the served index)."""
    task, _ = random_task(seed=5)
    task = topn.RankingTask(task.users[:3], task.items, task.history, task.exclude[:3], task.relevant[:3], task.start,
                            task.end, len(task.users))  # fmt: skip
    empty = np.zeros((0, len(task.items)), dtype=bool)
    served = topn.RankingTask(
        np.array([], dtype=object), task.items, task.history, empty, empty, task.start, task.end, 0
    )
    whole = topn.item_similarity(served, "item_knn", neighbours=5).toarray()
    rated = task.exclude.any(axis=0)
    assert 0 < rated.sum() < len(task.items) and (whole[~rated] > 0).any()
    monkeypatch.setattr(topn, "COSINE_BLOCK_ROWS", 2)
    topn._ranked_cosine.cache_clear()
    np.testing.assert_array_equal(topn.item_similarity(served, "item_knn", neighbours=5).toarray(), whole)
    for_users = topn.item_similarity(task, "item_knn", neighbours=5).toarray()
    np.testing.assert_array_equal(for_users[rated], whole[rated])
    np.testing.assert_array_equal(for_users[~rated], 0.0)


def test_popularity_counts_positives_or_all_ratings_over_the_last_days() -> None:
    events = events_frame(
        [("u1", "old", 0, 5), ("u2", "old", 1, 5), ("u3", "old", 1, 5), ("u1", "new", 8, 5), ("u2", "new", 9, 2),
         ("u3", "low", 9, 1), ("u3", "low", 9.5, 1), ("u3", "low", 9.6, 1), ("u9", "new", 12, 5)]
    )  # fmt: skip
    task = topn.ranking_task(events, ["low", "new", "old"], T0 + pd.Timedelta(days=10), T0 + pd.Timedelta(days=20))
    assert topn.popularity_scores(task).shape == (1, 3)
    np.testing.assert_allclose(topn.popularity_scores(task)[0], [0, 1, 3], atol=1e-8)
    np.testing.assert_allclose(topn.popularity_scores(task, days=5)[0], [0, 1, 0], atol=1e-8)
    np.testing.assert_allclose(topn.popularity_scores(task, days=5, positives_only=False)[0], [3, 2, 0], atol=1e-8)
    # Equal recent counts: the all-history positives break the tie ("old" before "low").
    recent = topn.popularity_scores(task, days=1)[0]
    assert recent[2] > recent[0]
    with pytest.raises(ValueError, match="Received: `days=0`"):
        topn.popularity_scores(task, days=0)


def planted_events(seed: int, n_pairs: int = 20, n_fillers: int = 30) -> tuple[pd.DataFrame, list[str]]:
    """Items come in planted pairs: who watched a_p watches b_p. Fillers are popular and unrelated.

    History (days 0-9): 300 users watch both items of 3 pairs and 8 Zipf-popular fillers; 60 test users watch
    a_p of one pair (rating 5) and 3 fillers (rating 3), plus 20 test users with no history at all. Window (day 10+): each test user
    watches b_p (the cold users b_0 .. b_19).
    """
    rng = np.random.default_rng(seed)
    fillers = [f"f{i:02d}" for i in range(n_fillers)]
    zipf = 1.0 / np.arange(1, n_fillers + 1)
    rows = []
    for u in range(300):
        for p in rng.choice(n_pairs, size=3, replace=False):
            rows += [(f"h{u}", f"a{p:02d}", rng.random() * 9, 5), (f"h{u}", f"b{p:02d}", rng.random() * 9, 5)]
        rows += [
            (f"h{u}", f, rng.random() * 9, 5) for f in rng.choice(fillers, size=8, replace=False, p=zipf / zipf.sum())
        ]
    for u in range(60):
        p = u % n_pairs
        rows += [(f"t{u:02d}", f"a{p:02d}", 9.0, 5), (f"t{u:02d}", f"b{p:02d}", 10.0 + rng.random(), 5)]
        rows += [(f"t{u:02d}", f, rng.random() * 9, 3) for f in rng.choice(fillers, size=3, replace=False)]
    rows += [(f"c{u:02d}", f"b{u:02d}", 10.0 + rng.random(), 5) for u in range(20)]
    items = [f"a{p:02d}" for p in range(n_pairs)] + [f"b{p:02d}" for p in range(n_pairs)] + fillers
    return events_frame(rows), items


@pytest.fixture(scope="module")
def planted() -> topn.RankingTask:
    events, items = planted_events(seed=0)
    return topn.ranking_task(events, items, T0 + pd.Timedelta(days=10), T0 + pd.Timedelta(days=11))


def test_item_models_recover_planted_pairs_far_above_popularity(planted: topn.RankingTask) -> None:
    warm = planted.exclude.any(axis=1)
    assert warm.sum() == 60
    popularity = topn.per_user_metrics(topn.popularity_scores(planted), planted)["ndcg_at_10"][warm].mean()
    ease = topn.per_user_metrics(topn.ease_scores(planted, l2=10.0), planted)["ndcg_at_10"][warm].mean()
    knn = topn.per_user_metrics(topn.item_knn_scores(planted, neighbours=20), planted)["ndcg_at_10"][warm].mean()
    assert popularity < 0.2
    assert ease > 0.9 and knn > 0.9


def test_tune_picks_a_grid_point_that_works_and_the_first_of_ties(planted: topn.RankingTask) -> None:
    for name in ("item_knn", "ease"):
        params, best, trials = topn.tune(name, planted)
        assert params in topn.GRIDS[name] and len(trials) == len(topn.GRIDS[name])
        assert best == max(t["ndcg_at_10"] for t in trials)
        warm = planted.exclude.any(axis=1)
        chosen = topn.per_user_metrics(topn.BASELINES[name](planted, **params), planted)["ndcg_at_10"]
        assert chosen[warm].mean() > 0.9
    grid = [{"days": None}, {"days": None, "positives_only": True}, {"days": 1000}]
    assert topn.tune("popularity", planted, grid)[0] == {"days": None}
    with pytest.raises(ValueError, match="Received: `name='svd'`"):
        topn.tune("svd", planted)


def test_cold_users_get_exactly_the_popularity_order(planted: topn.RankingTask) -> None:
    cold = ~planted.exclude.any(axis=1)
    assert cold.sum() == 20
    order = np.argsort(-topn.popularity_scores(planted)[0], kind="stable")
    for scores in (
        topn.item_knn_scores(planted, neighbours=10),
        topn.item_knn_scores(planted, neighbours=50, positives_only=False, shrink=10.0),
        topn.ease_scores(planted, l2=100.0),
        topn.ease_scores(planted, l2=10.0, positives_only=False),
    ):
        for row in scores[cold]:
            np.testing.assert_array_equal(np.argsort(-row, kind="stable"), order)
    # The tie-break makes that order the all-history positive counts, not the catalogue order.
    assert order.tolist() != list(range(len(order)))


def test_every_grid_point_gives_finite_float64_scores() -> None:
    task, _ = random_task(seed=3)
    for name, grid in topn.GRIDS.items():
        scores = topn.BASELINES[name](task, **grid[0])
        assert scores.shape == task.exclude.shape and scores.dtype == np.float64
        assert np.isfinite(scores).all()


def test_tuning_item_knn_forms_the_cosine_once_per_rows_and_shrink() -> None:
    """At 10M events one cosine took tens of seconds: the grid's six neighbourhoods share it."""
    task, _ = random_task(seed=4)
    topn._ranked_cosine.cache_clear()
    topn.tune("item_knn", task)
    combinations = {(p["positives_only"], p["shrink"]) for p in topn.GRIDS["item_knn"]}
    assert topn._ranked_cosine.cache_info().misses == len(combinations) < len(topn.GRIDS["item_knn"])
