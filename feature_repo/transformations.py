"""Request-time transformations: the code of the on-demand feature views, shared by online and offline reads.

Feast runs `genre_affinity` inside the on-demand view `GENRE_AFFINITY_VIEW` on every online read, and
`store.training_frame` runs the same function on the joined training frame, so the value served is the value
trained on by construction (no second implementation to drift).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from deepfm_model.spec.features import GENRES, MULTI_VALUE_SEPARATOR, genre_stat_columns

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
    # (rows, genres) 0/1: the candidate movie has the genre; a movie without genres has none.
    has_genre = (
        genres.fillna("").astype(str).str.get_dummies(sep=MULTI_VALUE_SEPARATOR)
        .reindex(columns=list(GENRES), fill_value=0).to_numpy(dtype="float64")
    )  # fmt: skip
    counts = _numeric(inputs[[genre_stat_columns(g)[0] for g in GENRES]])  # (rows, genres)
    positives = _numeric(inputs[[genre_stat_columns(g)[1] for g in GENRES]])  # (rows, genres)
    # Plain sums, not nansum: 0 * NaN is NaN, so a missing stats row (unknown user) stays missing instead of
    # reading as "no earlier ratings".
    count = (has_genre * counts).sum(axis=1)  # (rows,)
    positive = (has_genre * positives).sum(axis=1)  # (rows,)
    prior = _numeric(inputs[["user_pos_rate"]])[:, 0]
    affinity = (positive + AFFINITY_PSEUDO_COUNT * prior) / (count + AFFINITY_PSEUDO_COUNT)
    return pd.DataFrame({AFFINITY_FEATURE: np.where(genres.notna(), affinity, np.nan)}, index=inputs.index)


def _numeric(columns: pd.DataFrame) -> np.ndarray:
    return columns.apply(pd.to_numeric, errors="coerce").to_numpy(dtype="float64")
