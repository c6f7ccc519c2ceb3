"""Ranking: score one user's candidate movies with their online features, best first.

`Ranker` composes two parts that know nothing of each other: a feature reader (user id, movie ids) -> one row of
model inputs per movie, and a `ServingClient` that scores rows over gRPC. The readers of the nightly stack are in
the feature repository: `feature_repo.online_reader.OnlineFeatureReader` (the fast one: the user's rows read once
per call, the movies' kept in process) and `feature_repo.store.online_features` bound to a store (the plain
`get_online_features` read that the pipeline's skew check compares with the offline values); both return the
same features, a test keeps them equal:

    from feature_repo.online_reader import OnlineFeatureReader
    from feature_repo.store import open_store

    ranker = Ranker(client, OnlineFeatureReader(open_store("feature_repo")))
    ranker.rank("196", ["242", "302"])   # [("302", 0.81), ("242", 0.64)]

Unknown users and movies are scored, never refused (cold start): a feature the reader has no value of is sent as
the serving signature's "no value", which the model's preprocessing maps as it maps a value unseen in training:
an empty string for categorical and multi-valued features (the out-of-vocabulary bucket; no genre), NaN for
numeric ones (the training mean after normalisation; `deepfm_model.preprocessing`). These are the forms training
feeds for nulls too (`preprocessing.frame_to_raw`).

Serving imports nothing of the feature repository: the reader is passed in, and what it raises (an unreachable
store) reaches the caller before anything is sent, so a failed read never gives a partial ranking.
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

# (user id, candidate movie ids) -> a frame (or mapping) with a column per model input, one row per movie;
# missing values as None or NaN.
FeatureReader = Callable[[str, list[str]], Any]
MISSING_STRING = ""  # the signature's "no value" of a string feature: OOV for categoricals, no value for lists


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
        """Score candidate movies for one user, best first; unknown users and movies included (cold start).

        Returns:
            `(movie_id, probability)` pairs sorted by probability, descending (ties keep the input order); the
            movie ids as given.

        Raises:
            InputError: the reader returned no column of some feature, or one of the wrong length.
            ServingError: the server refused or failed the request.
            Exception: whatever the reader raises (say the feature store's error for an unreachable store);
                nothing has been sent then.
        """
        if not len(movie_ids):
            return []
        rows = self.read_features(str(user_id), [str(m) for m in movie_ids])
        scores = self.client.predict(request_columns(rows, len(movie_ids)))
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
        return [(movie_ids[i], float(scores[i])) for i in order]


def request_columns(rows: Any, n_rows: int) -> dict[str, np.ndarray]:
    """The serving signature's columns from a reader's output, missing values filled as the module says.

    Args:
        rows: a frame or mapping with a column per feature of the spec (extra columns ignored).
        n_rows: rows expected in every column.

    Returns:
        `features.FEATURE_NAMES` -> float32 (numeric, NaN where missing) or object arrays of `str`.

    Raises:
        InputError: a feature has no column, a column has the wrong length, or a numeric column holds a non-number.
    """
    columns: dict[str, np.ndarray] = {}
    for feature in fs.FEATURES:
        if feature.name not in rows:
            raise InputError(f"The feature reader returned no `{feature.name}`")
        values = np.asarray(rows[feature.name])
        if values.shape != (n_rows,):
            raise InputError(f"The feature reader returned {values.shape} values of `{feature.name}`, "
                             f"expected ({n_rows},)")  # fmt: skip
        if feature.kind is fs.Kind.NUMERIC:
            try:
                columns[feature.name] = values.astype(np.float32)  # None -> NaN for object arrays
            except (TypeError, ValueError) as error:
                raise InputError(f"Feature `{feature.name}` is numeric; the reader returned {error}") from error
        else:
            values = values.astype(object)  # a copy: the reader's arrays stay as they are
            values[_missing(values).astype(bool)] = MISSING_STRING
            columns[feature.name] = values
    return columns


def _is_missing(value: Any) -> bool:
    return value is None or value != value  # None, or NaN (pandas' missing value in object columns)


_missing = np.frompyfunc(_is_missing, 1, 1)
