"""The retrieval index: neighbours of the recent movies first, then popular ones, never a rated movie."""

from __future__ import annotations

import numpy as np
import pytest

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


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="similarity"):
        RetrievalIndex.build(ITEMS, np.zeros((2, 2)), np.zeros(6), {})
    with pytest.raises(ValueError, match="`n` must be positive"):
        _index().candidates("u", [], n=0)
