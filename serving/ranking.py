"""Ranking: score one user's candidate movies with their online features, best first.

`Ranker` composes two parts that know nothing of each other: a feature reader (user id, movie ids) -> one row of
model inputs per movie, and a `ServingClient` that scores rows over gRPC. The reader of the nightly stack is
`feature_repo.store.online_features` bound to a Feast store, the same online read that the pipeline's skew
check compares with the offline point-in-time values, so that what is ranked is what was verified:

    from functools import partial
    from feature_repo.store import online_features, open_store

    ranker = Ranker(client, partial(online_features, open_store("feature_repo")))
    ranker.rank("196", ["242", "302"])   # [("302", 0.81), ("242", 0.64)]

Serving imports nothing of the feature repository: the reader is passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from deepfm_model.spec import features as fs
from serving.client import ServingClient
from serving.errors import InputError

log = logging.getLogger(__name__)

# (user id, candidate movie ids) -> a frame (or mapping) with a column per model input, one row per movie.
FeatureReader = Callable[[str, list[str]], Any]


class Ranker:
    """Ranks candidates for a user: features from `read_features`, scores from `client`.

    Args:
        client: an open `ServingClient` (its model, version or label chosen by the caller).
        read_features: the feature reader; see the module docstring.
    """

    def __init__(self, client: ServingClient, read_features: FeatureReader) -> None:
        self.client = client
        self.read_features = read_features

    def rank(self, user_id: str | int, movie_ids: Sequence[str | int]) -> list[tuple[str | int, float]]:
        """Score candidate movies for one user, best first.

        Returns:
            `(movie_id, probability)` pairs sorted by probability, descending (ties keep the input order); the
            movie ids as given.

        Raises:
            InputError: the reader has no value of some feature for some candidates (named in the message).
            ServingError: the server refused or failed the request.
        """
        if not movie_ids:
            return []
        rows = self.read_features(str(user_id), [str(m) for m in movie_ids])
        columns: dict[str, np.ndarray] = {}
        for feature in fs.FEATURES:
            if feature.name not in rows:
                raise InputError(f"The feature reader returned no `{feature.name}`")
            values = np.asarray(rows[feature.name], dtype=object)
            if len(values) != len(movie_ids):
                raise InputError(f"The feature reader returned {len(values)} rows of `{feature.name}`, "
                                 f"expected {len(movie_ids)}")  # fmt: skip
            absent = [movie_ids[i] for i, value in enumerate(values) if _missing(value)]
            if absent:
                raise InputError(f"No online value of `{feature.name}` for user {user_id!r}, movies {absent[:10]}")
            columns[feature.name] = values
        scores = self.client.predict(columns)
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
        return [(movie_ids[i], float(scores[i])) for i in order]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)
