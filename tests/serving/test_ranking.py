"""Ranking over a real Feast store: the fast reader scores exactly as the plain path, cold start, a store down.

The plain path is every candidate row through `get_online_features` (`feature_repo.store.online_features`), then
Predict; the fast one `feature_repo.online_reader.OnlineFeatureReader`. The model served is the conformance
tests' `endpoint` (the sample model, or real TF Serving with TFSERVING_GRPC_ADDR).
"""

from __future__ import annotations

import functools
import socket
import time

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


def test_rank_fails_fast_when_the_online_store_is_down(feature_store):
    with socket.socket() as probe:  # bound, then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    redis_store = store.open_store(
        feature_store.repo_path, online_store={"type": "redis", "connection_string": f"127.0.0.1:{port}"}
    )
    # Nothing listens on port 9 either: had a Predict been sent, it would fail with UNAVAILABLE instead.
    with ServingClient("127.0.0.1:9", max_retries=0, timeout=1.0) as client:
        ranker = Ranker(client, OnlineFeatureReader(redis_store, timeout_s=0.5))
        started = time.monotonic()
        with pytest.raises(OnlineStoreError, match=f"redis online store 127.0.0.1:{port} "):
            ranker.rank("1", ["1", "2", "3"])
    assert time.monotonic() - started < 1.0
