"""Request-time transformations: the code of the on-demand feature views, shared by online and offline reads.

Feast runs `genre_affinity` inside the on-demand view `GENRE_AFFINITY_VIEW` on every online read, and
`store.training_frame` runs the same function on the joined training frame, so the value served is the value
trained on by construction (no second implementation to drift).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from deepfm_model.spec.features import GENRES, MULTI_VALUE_SEPARATOR, USER_GENRE_COUNTS, USER_GENRE_POSITIVES

# Shrinkage of the affinity towards the user's overall positive rate: as many imaginary ratings as the stats'
# own smoothing (daily_stats.PSEUDO_COUNT), kept equal on purpose.
AFFINITY_PSEUDO_COUNT = 5.0
AFFINITY_FEATURE = "user_genre_affinity"


def genre_affinity(inputs: pd.DataFrame) -> pd.DataFrame:
    """The user's smoothed positive rate over earlier ratings of movies sharing a genre with the candidate.

    `affinity = (sum_g pos_g + k * user_pos_rate) / (sum_g count_g + k)` over the candidate's genres g, where
    count_g / pos_g are the user's ratings / positive ratings of genre-g movies before the day
    (`USER_GENRE_STATS_VIEW`) and k = `AFFINITY_PSEUDO_COUNT`. A user with no such rating gets their own
    `user_pos_rate`; a movie without genres likewise. Any missing input (unknown user or movie) gives NaN.

    Args:
        inputs: columns `genres`, `user_pos_rate` and `features.USER_GENRE_STAT_COLUMNS`, one row per
            (user, movie) pair.

    Returns:
        One float64 column `user_genre_affinity`, aligned with `inputs`.
    """
    genres = inputs["genres"]
    counts = per_genre(inputs[USER_GENRE_COUNTS])  # (rows, genres)
    positives = per_genre(inputs[USER_GENRE_POSITIVES])  # (rows, genres)
    prior = pd.to_numeric(inputs["user_pos_rate"], errors="coerce").to_numpy(dtype="float64")  # (rows,)
    affinity = affinity_values(genre_indicators(genres), genres.notna().to_numpy(), counts, positives, prior)
    return pd.DataFrame({AFFINITY_FEATURE: affinity}, index=inputs.index)


def genre_indicators(genres: pd.Series) -> np.ndarray:
    """(rows, `GENRES`) float64 0/1: the movie has the genre; a movie without genres (or unknown) has none."""
    # Split each distinct genres string once (a training chunk has few distinct ones among many rows).
    codes, distinct = pd.factorize(genres.fillna("").astype(str))
    table = (
        pd.Series(distinct, dtype=object).str.get_dummies(sep=MULTI_VALUE_SEPARATOR)
        .reindex(columns=list(GENRES), fill_value=0).to_numpy(dtype="float64")
    )  # fmt: skip
    return table[codes]


def affinity_values(
    has_genre: np.ndarray, known_movie: np.ndarray, counts: np.ndarray, positives: np.ndarray, prior: np.ndarray
) -> np.ndarray:
    """The formula of `genre_affinity` on arrays; the online reader calls it with the user's row broadcast.

    Args:
        has_genre: (rows, genres) 0/1, from `genre_indicators`.
        known_movie: (rows,) bool, the movie's genres are known (not null); NaN where not.
        counts: (rows or 1, genres) the user's earlier ratings per genre; NaN for an unknown user.
        positives: (rows or 1, genres) the user's earlier positive ratings per genre.
        prior: (rows,) or a scalar, the user's `user_pos_rate`.

    Returns:
        (rows,) float64 affinity.
    """
    # Plain sums, not nansum: 0 * NaN is NaN, so a missing stats row (unknown user) stays missing instead of
    # reading as "no earlier ratings".
    count = (has_genre * counts).sum(axis=1)  # (rows,)
    positive = (has_genre * positives).sum(axis=1)  # (rows,)
    affinity = (positive + AFFINITY_PSEUDO_COUNT * prior) / (count + AFFINITY_PSEUDO_COUNT)
    return np.where(known_movie, affinity, np.nan)


def per_genre(values: pd.Series | list) -> np.ndarray:
    """(rows, genres) float64 of a per-genre list column (`USER_GENRE_COUNTS`, ...).

    Rows without a list of one value per genre read as missing (NaN): an unknown user, and the one-value
    sample lists Feast passes when it infers the on-demand view's schema.
    """
    values = pd.Series(values, dtype=object).to_numpy()
    out = np.full((len(values), len(GENRES)), np.nan)
    lengths = np.fromiter((len(v) if hasattr(v, "__len__") else -1 for v in values), np.int64, len(values))
    whole = lengths == len(GENRES)
    if whole.any():  # one concatenation, not an array per row: a training chunk has a million rows
        out[whole] = np.concatenate(values[whole]).astype("float64").reshape(-1, len(GENRES))
    return out
