"""Fixtures of the model tests: small synthetic labelled frames and their parquet splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepfm_model.spec import features as spec
from deepfm_model.spec.raw_data import RawData
from deepfm_model.synthetic import generate
from feature_repo.fresh_features import empty_state, fold, seed_rows
from feature_repo.ingest import PROFILE_TIMESTAMP


def labelled_frame(raw: RawData) -> pd.DataFrame:
    """Join events with user and movie profiles and add leak-free running stats: one row per event.

    Columns: `features.FEATURE_NAMES`, `event_timestamp`, `rating`, `label`; categoricals as str.
    """
    frame = raw.events.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    frame = frame.merge(raw.users, on=spec.USER_KEY, how="left").merge(raw.movies, on=spec.MOVIE_KEY, how="left")
    frame["zip_prefix"] = frame["zip_code"].str[:3]
    frame["age"] = frame["age"].astype("float32")
    frame["release_year"] = frame["release_year"].astype("float32")
    frame[spec.LABEL] = (frame[spec.RATING] >= spec.POSITIVE_RATING).astype("int64")
    for key, prefix in ((spec.USER_KEY, "user"), (spec.MOVIE_KEY, "movie")):
        groups = frame.groupby(key, sort=False)
        count = groups.cumcount().astype("float32")
        positives = groups[spec.LABEL].cumsum() - frame[spec.LABEL]
        rating_sum = groups[spec.RATING].cumsum() - frame[spec.RATING]
        frame[f"{prefix}_rating_count"] = count
        frame[f"{prefix}_pos_rate"] = ((positives + 1.0) / (count + 2.0)).astype("float32")
        frame[f"{prefix}_mean_rating"] = ((rating_sum + 3.5) / (count + 1.0)).astype("float32")
    # The movie's share (per 1000) of the earlier ratings in the last `RECENT_DAYS` days, leak-free like the others.
    window = pd.Timedelta(days=spec.RECENT_DAYS)
    for name, values in (
        ("movie_recent_share", np.ones(len(frame))),
        ("movie_recent_positive_share", frame[spec.LABEL]),
    ):
        frame[name] = _recent_share(frame, pd.Series(values, index=frame.index, dtype="float64"), window)
    # The model only needs a leak-free number in [0, 1] here; the real genre affinity is Feast's (feature_repo).
    frame["user_genre_affinity"] = frame["user_pos_rate"]
    frame = _with_fresh_features(frame, raw)
    return frame[[*spec.FEATURE_NAMES, spec.EVENT_TIMESTAMP, spec.RATING, spec.LABEL]]


def _recent_share(frame: pd.DataFrame, values: pd.Series, window: pd.Timedelta) -> np.ndarray:
    """Per event, 1000 x the sum of `values` over the movie's earlier events no older than `window`, over that of
    every movie's."""
    stamps = pd.to_datetime(frame[spec.EVENT_TIMESTAMP], utc=True).astype("int64").to_numpy()
    weights = values.to_numpy()

    def window_sums(rows: np.ndarray) -> np.ndarray:
        before = np.r_[0.0, np.cumsum(weights[rows])]  # sums of the events before each one
        start = np.searchsorted(stamps[rows], stamps[rows] - window.value, side="left")
        return before[np.arange(len(rows))] - before[start]

    movie = np.zeros(len(frame))
    for rows in frame.groupby(spec.MOVIE_KEY, sort=False).indices.values():
        movie[rows] = window_sums(rows)
    return 1000.0 * movie / np.maximum(window_sums(np.arange(len(frame))), 1.0)


def _with_fresh_features(frame: pd.DataFrame, raw: RawData) -> pd.DataFrame:
    """Each event's `user_fresh` features: the fold's latest row stamped at or before it, as Feast joins them."""
    genres = raw.movies.set_index(spec.MOVIE_KEY)["genres"].fillna("")
    rows = pd.concat([seed_rows(raw.users[spec.USER_KEY], PROFILE_TIMESTAMP), fold(empty_state(), raw.events, genres)])
    fresh = [f.name for f in spec.view_features(spec.USER_FRESH_VIEW)]
    rows = rows[[spec.USER_KEY, spec.EVENT_TIMESTAMP, *fresh]].sort_values(spec.EVENT_TIMESTAMP, kind="stable")
    frame = frame.assign(**{spec.EVENT_TIMESTAMP: frame[spec.EVENT_TIMESTAMP].astype(rows[spec.EVENT_TIMESTAMP].dtype)})
    joined = pd.merge_asof(frame, rows, on=spec.EVENT_TIMESTAMP, by=spec.USER_KEY, direction="backward")
    return joined.sort_values(spec.EVENT_TIMESTAMP, kind="stable").reset_index(drop=True)


def time_split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Time-ordered 80/10/10 split (DESIGN.md evaluation protocol)."""
    n = len(frame)
    a, b = int(n * 0.8), int(n * 0.9)
    return frame.iloc[:a].copy(), frame.iloc[a:b].copy(), frame.iloc[b:].copy()


@pytest.fixture(scope="session")
def frame() -> pd.DataFrame:
    return labelled_frame(generate(n_users=200, n_movies=150, n_events=6000, seed=0))


@pytest.fixture(scope="session")
def splits(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return time_split(frame)


@pytest.fixture(scope="session")
def split_paths(splits, tmp_path_factory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("splits")
    paths = []
    for name, part in zip(("train", "valid", "test"), splits, strict=True):
        path = folder / f"{name}.parquet"
        part.to_parquet(path, index=False)
        paths.append(path)
    return tuple(paths)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
