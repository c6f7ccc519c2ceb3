"""Training/serving skew report: the online feature vector of sampled entities against the offline value.

After materialization, the online store must serve for each (user, movie) exactly what the offline store's
point-in-time join gives as of the same instant; on-demand features included, since both sides run the same
transformation. `skew_report` samples pairs, reads the online side through the read ranking serves
(`online_reader.OnlineFeatureReader`, one call per user as `rank` makes it) and the offline side through the
feature service's point-in-time join, and counts the differences per feature. A DAG task runs it after
`update_feature_store` and fails on `ok == False`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureStore

from deepfm_model.spec.dates import to_utc
from deepfm_model.spec.features import (
    EVENT_TIMESTAMP,
    FEATURES,
    LABEL,
    MOVIE_KEY,
    MOVIE_PROFILE_VIEW,
    RATING,
    USER_KEY,
    USER_PROFILE_VIEW,
    Kind,
)
from deepfm_model.spec.files import to_python
from feature_repo import store as feature_store
from feature_repo.online_reader import OnlineFeatureReader

NUMERIC_TOLERANCE = 1e-9  # relative; both sides read the same float64 values, so only rounding may differ
EXAMPLES = 5  # mismatching pairs quoted per feature


def skew_report(store: FeatureStore, sample_size: int, as_of: dt.datetime | pd.Timestamp, seed: int = 0) -> dict:
    """Compare online and offline features of `sample_size` random (user, movie) pairs as of `as_of`.

    Args:
        store: the feature store, sources written and the window up to `as_of` materialized.
        sample_size: number of (user, movie) pairs, drawn from the profile sources.
        as_of: the instant the offline side is read at; the latest materialized rows must be the ones in
            force then (for the nightly run of `ds`: any time on the day `ds`).
        seed: seed of the sample.

    Returns:
        JSON-able dict: `ok` (no mismatch, nothing missing online), `as_of`, `pairs`, `mismatched_pairs`, and per
        feature `mismatches`, `max_abs_diff` (numerics) and up to `EXAMPLES` examples
        `{user_id, movie_id, online, offline}`.
    """
    if sample_size <= 0:
        raise ValueError(f"`sample_size` must be positive. Received: `sample_size={sample_size}`")
    as_of = to_utc(as_of)
    rng = np.random.default_rng(seed)
    users = _entity_ids(store, USER_PROFILE_VIEW, USER_KEY)
    movies = _entity_ids(store, MOVIE_PROFILE_VIEW, MOVIE_KEY)
    pairs = pd.DataFrame(
        {USER_KEY: rng.choice(users, sample_size), MOVIE_KEY: rng.choice(movies, sample_size)}
    ).drop_duplicates(ignore_index=True)
    online = _served(store, pairs)
    offline_rows = pairs.assign(**{EVENT_TIMESTAMP: as_of, RATING: 0, LABEL: 0})
    offline = feature_store.training_frame(store, offline_rows)
    offline = pairs.merge(offline, on=[USER_KEY, MOVIE_KEY], how="left", validate="one_to_one")

    features: dict[str, Any] = {}
    mismatched = np.zeros(len(pairs), dtype=bool)
    for feature in FEATURES:
        if feature.view is None:
            continue
        left, right = online[feature.name], offline[feature.name]
        if feature.kind is Kind.NUMERIC:
            a, b = left.to_numpy(dtype="float64"), right.to_numpy(dtype="float64")
            same = np.isclose(a, b, rtol=NUMERIC_TOLERANCE, atol=0.0) | (np.isnan(a) & np.isnan(b))
            both = ~np.isnan(a) & ~np.isnan(b)
            max_diff = float(np.max(np.abs(a[both] - b[both]))) if both.any() else 0.0
        else:
            same = ((left == right) | (left.isna() & right.isna())).to_numpy()
            max_diff = None
        mismatched |= ~same
        bad = np.flatnonzero(~same)
        features[feature.name] = {
            "mismatches": int(bad.size),
            "online_missing": int(left.isna().sum()),
            "max_abs_diff": max_diff,
            "examples": [
                {
                    USER_KEY: pairs.at[i, USER_KEY],
                    MOVIE_KEY: pairs.at[i, MOVIE_KEY],
                    "online": _plain(left.iat[i]),
                    "offline": _plain(right.iat[i]),
                }
                for i in bad[:EXAMPLES]
            ],
        }
    missing_online = sum(f["online_missing"] for f in features.values())
    return {
        "ok": bool(not mismatched.any() and missing_online == 0),
        "as_of": as_of.isoformat(),
        "pairs": len(pairs),
        "mismatched_pairs": int(mismatched.sum()),
        "features": features,
    }


def _entity_ids(store: FeatureStore, view: str, key: str) -> np.ndarray:
    """Every id of the profile source of `view` (the population the sample is drawn from)."""
    source = store.get_feature_view(view).batch_source
    return pd.read_parquet(source.path, columns=[key])[key].astype(str).unique()


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return to_python(value)


def _served(store: FeatureStore, pairs: pd.DataFrame) -> pd.DataFrame:
    """The features ranking would send for each pair, in the pairs' order: one reader call per user."""
    reader = OnlineFeatureReader(store, timeout_s=None)
    parts = []
    for user_id, group in pairs.groupby(USER_KEY, sort=False):
        parts.append(pd.DataFrame(reader(user_id, group[MOVIE_KEY].tolist()), index=group.index))
    return pd.concat(parts).loc[pairs.index].reset_index(drop=True)
