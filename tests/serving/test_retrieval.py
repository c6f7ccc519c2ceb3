"""The retrieval index: neighbours of the recent movies first, then popular ones, never a rated movie."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from serving.retrieval import RetrievalIndex

ITEMS = ["m0", "m1", "m2", "m3", "m4", "m5"]


def _index() -> RetrievalIndex:
    similarity = np.zeros((6, 6))
    similarity[0, 1], similarity[0, 2] = 0.9, 0.5  # liking m0 says m1, then m2
    similarity[3, 2] = 0.6  # liking m3 says m2
    popularity = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # m5 most popular
    return RetrievalIndex.build(ITEMS, similarity, popularity, {"u": np.array([4]), "v": np.array([], dtype=int)})


def test_neighbours_of_recent_movies_by_summed_weight_then_popular():
    index = _index()
    # m2 gets 0.5 + 0.6 = 1.1 > m1's 0.9; then popular movies the user has not rated (m4 rated, m0/m3 recent).
    assert index.candidates("u", ["m0", "m3"], n=4) == ["m2", "m1", "m5"]
    assert index.candidates("u", ["m0", "m3"], n=2) == ["m2", "m1"]


def test_unknown_user_gets_popular_movies_and_rated_ones_never_come_back():
    index = _index()
    assert index.candidates("nobody", [], n=3) == ["m5", "m4", "m3"]
    assert "m4" not in index.candidates("u", [], n=6)
    assert index.candidates("u", ["unknown-movie"], n=2) == ["m5", "m3"]


def test_save_load_round_trip(tmp_path):
    index = _index()
    loaded = RetrievalIndex.load(index.save(tmp_path / "assets.extra" / "retrieval.npz"))
    for name in ("items", "neighbours", "weights", "popular", "users", "seen_start", "seen"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(index, name))
    assert loaded.candidates("u", ["m0"], n=3) == index.candidates("u", ["m0"], n=3)


def test_a_sparse_similarity_builds_the_index_a_dense_one_does():
    rng = np.random.default_rng(0)
    dense = np.where(rng.random((40, 40)) < 0.3, rng.integers(1, 5, (40, 40)) / 4.0, 0.0)  # ties included
    dense[3, 7] = -0.5  # negative weights are never neighbours
    np.fill_diagonal(dense, 0.7)  # nor is the movie itself
    items, popularity = [f"m{i}" for i in range(40)], rng.random(40)
    seen = {"u": np.array([1, 2])}
    for k in (3, 100):
        built = [
            RetrievalIndex.build(items, s, popularity, seen, neighbours=k) for s in (dense, sparse.csr_array(dense))
        ]
        np.testing.assert_array_equal(built[0].neighbours, built[1].neighbours)
        np.testing.assert_array_equal(built[0].weights, built[1].weights)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="similarity"):
        RetrievalIndex.build(ITEMS, np.zeros((2, 2)), np.zeros(6), {})
    with pytest.raises(ValueError, match="`n` must be positive"):
        _index().candidates("u", [], n=0)


def test_recommend_ranks_the_retrieved_movies_and_unknown_users_get_popular_ones():
    from dags.ops.bench.sample_model import sample_columns
    from deepfm_model.spec import features as fs
    from serving.ranking import Ranker
    from serving.recommend import Recommender

    recent = {"u": "m0|m3"}
    asked = []

    def read(user_id, movie_ids):
        asked.append(list(movie_ids))
        columns = sample_columns(len(movie_ids))
        columns[fs.MOVIE_KEY] = np.array(movie_ids, dtype=object)
        columns[fs.RECENT_MOVIES] = np.array([recent.get(user_id)] * len(movie_ids), dtype=object)
        return columns

    score = {"m1": 0.2, "m2": 0.1, "m5": 0.9, "m4": 0.5, "m3": 0.3}
    client = type("Client", (), {"predict": staticmethod(lambda c: np.array([score[m] for m in c[fs.MOVIE_KEY]]))})
    recommender = Recommender(Ranker(client, read), _index(), candidates=3)
    # u: m2, m1 (neighbours of m0 and m3) and m5 (popular) are retrieved; the model puts m5 first.
    assert recommender.recommend("u", 2) == [("m5", 0.9), ("m1", 0.2)]
    assert sorted(asked[-1]) == ["m1", "m2", "m5"]
    assert [m for m, _ in recommender.recommend("stranger", 3)] == ["m5", "m4", "m3"]  # popular, ranked
    with pytest.raises(ValueError, match="`k` must be positive"):
        recommender.recommend("u", 0)
