"""Ranking over a real Feast store: the fast reader scores exactly as the plain path, cold start, a store down.

The plain path is every candidate row through `get_online_features` (`feature_repo.store.online_features`), then
Predict; the fast one `feature_repo.online_reader.OnlineFeatureReader`. The model served is the conformance
tests' `endpoint` (the sample model, or real TF Serving with TFSERVING_GRPC_ADDR).
"""

from __future__ import annotations

import functools
import socket

import numpy as np
import pytest

from deepfm_model.spec.dates import data_cutoff, last_data_day
from deepfm_model.synthetic import generate
from feature_repo import store
from feature_repo.online_reader import OnlineFeatureReader, OnlineStoreError
from serving.client import ServingClient
from serving.ranking import Ranker
from tests.features.conftest import DS, repo_with


@pytest.fixture(scope="module")
def raw():
    return generate(seed=0)


@pytest.fixture(scope="module")
def feature_store(raw, tmp_path_factory):
    feature_store = repo_with(raw, DS, tmp_path_factory.mktemp("ranking_repo"))
    store.materialize(feature_store, last_data_day(DS), data_cutoff(DS))
    return feature_store


@pytest.fixture
def client(endpoint):
    with ServingClient(endpoint.address, endpoint.model_name, timeout=10.0) as client:
        yield client


def test_fast_path_scores_exactly_as_the_plain_path(client, feature_store, raw):
    fast = Ranker(client, OnlineFeatureReader(feature_store))
    plain = Ranker(client, functools.partial(store.online_features, feature_store))
    rng = np.random.default_rng(2)
    movies = [str(m) for m in rng.choice(raw.movies["movie_id"], 40, replace=False)]
    users = [str(u) for u in rng.choice(raw.users["user_id"], 3, replace=False)]
    requests = [(user, movies) for user in users]
    requests.append(("no-such-user", movies[:8]))  # cold start: an unknown user ...
    requests.append((users[0], [*movies[:5], "no-such-movie"]))  # ... and an unknown movie, scored all the same
    for user_id, movie_ids in requests:
        ranked, expected = fast.rank(user_id, movie_ids), plain.rank(user_id, movie_ids)
        assert [m for m, _ in ranked] == [m for m, _ in expected]
        np.testing.assert_array_equal([s for _, s in ranked], [s for _, s in expected])  # NaN-aware, exact
        assert sorted(m for m, _ in ranked) == sorted(movie_ids)
        if user_id in users and "no-such-movie" not in movie_ids:
            assert np.isfinite([s for _, s in ranked]).all()


class NoPredictClient:
    """A client that records the Predict calls sent through it (and answers none)."""

    def __init__(self) -> None:
        self.predicts: list[dict] = []

    def predict(self, columns: dict, *args, **kwargs):
        self.predicts.append(columns)
        raise AssertionError("Predict sent although the features could not be read")


def test_rank_fails_fast_when_the_online_store_is_down(feature_store):
    """The store's error reaches the caller at once: the ranker reads once (no retry), the read fails on the
    refused connection (no timeout waited out), and no Predict is sent."""
    import redis

    with socket.socket() as probe:  # bound, then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    redis_store = store.open_store(
        feature_store.repo_path, online_store={"type": "redis", "connection_string": f"127.0.0.1:{port}"}
    )
    reader = OnlineFeatureReader(redis_store, timeout_s=0.5)
    reads: list[tuple[str, list[str]]] = []

    def counted_reader(user_id: str, movie_ids: list[str]):
        reads.append((user_id, movie_ids))
        return reader(user_id, movie_ids)

    client = NoPredictClient()
    with pytest.raises(OnlineStoreError, match=f"redis online store 127.0.0.1:{port} ") as failure:
        Ranker(client, counted_reader).rank("1", ["1", "2", "3"])
    assert reads == [("1", ["1", "2", "3"])]
    assert client.predicts == []
    assert isinstance(failure.value.__cause__, redis.exceptions.ConnectionError)
    assert not isinstance(failure.value.__cause__, redis.exceptions.TimeoutError)
