"""The on-demand genre affinity: exact values, missing inputs, and point-in-time correctness end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepfm_model.spec.features import GENRES, USER_GENRE_COUNTS, USER_GENRE_POSITIVES
from feature_repo.transformations import AFFINITY_PSEUDO_COUNT, genre_affinity

from .test_point_in_time import planted  # noqa: F401 - shared module fixture


def _inputs(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def _stats(**per_genre: tuple[float, float]) -> dict:
    """The two per-genre lists of a user with (count, positives) for the named genres, zero for the others."""
    counts = [float(per_genre.get(g, (0, 0))[0]) for g in GENRES]
    positives = [float(per_genre.get(g, (0, 0))[1]) for g in GENRES]
    return {USER_GENRE_COUNTS: counts, USER_GENRE_POSITIVES: positives}


def test_affinity_sums_the_movie_genres_and_shrinks_to_the_user_rate():
    k = AFFINITY_PSEUDO_COUNT
    stats = _stats(Action=(4, 3), **{"Sci-Fi": (2, 0)}, Drama=(7, 7))
    frame = genre_affinity(
        _inputs(
            [
                {**stats, "genres": "Action|Sci-Fi", "user_pos_rate": 0.6},
                {**stats, "genres": "Comedy", "user_pos_rate": 0.6},  # no earlier comedy: the user's own rate
                {**stats, "genres": "", "user_pos_rate": 0.4},  # no genres: likewise
            ]
        )
    )
    np.testing.assert_allclose(frame["user_genre_affinity"], [(3 + k * 0.6) / (6 + k), 0.6, 0.4])


def test_missing_inputs_give_nan_not_a_default():
    unknown_user = {USER_GENRE_COUNTS: None, USER_GENRE_POSITIVES: None, "genres": "Action", "user_pos_rate": None}
    unknown_movie = {"genres": None, "user_pos_rate": 0.5}
    frame = genre_affinity(pd.DataFrame([unknown_user, {**_stats(Action=(1, 1)), **unknown_movie}]))
    assert frame["user_genre_affinity"].isna().all()


def test_planted_affinity_counts_only_earlier_days(planted):  # noqa: F811
    raw, frame = planted
    genres = raw.movies.set_index("movie_id")["genres"].str.split("|")
    events = raw.events[raw.events["user_id"] == "u1"]
    k = AFFINITY_PSEUDO_COUNT
    for _, row in frame[frame["user_id"] == "u1"].iterrows():
        day = row["event_timestamp"].floor("D")
        earlier = events[events["event_timestamp"] < day]
        wanted = set(genres[row["movie_id"]])
        shared = [
            (len(wanted & set(genres[m])), r >= 4) for m, r in zip(earlier["movie_id"], earlier["rating"], strict=False)
        ]
        count = sum(n for n, _ in shared)
        positives = sum(n for n, positive in shared if positive)
        expected = (positives + k * row["user_pos_rate"]) / (count + k)
        assert row["user_genre_affinity"] == pytest.approx(expected), row.to_dict()
