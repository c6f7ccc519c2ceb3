"""Fixtures of the feature repo tests: synthetic raw data, a temporary Feast repo with its sources, snapshots."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from deepfm_model.spec.dates import data_cutoff
from deepfm_model.spec.raw_data import RawData
from deepfm_model.synthetic import generate
from feature_repo import ingest, store
from tests.services import redis_address

DS = "1998-01-21"  # logical date inside the synthetic 30-day window, so later events exist and must not leak


@pytest.fixture(scope="session")
def raw() -> RawData:
    return generate(seed=0)


@pytest.fixture(scope="session")
def feature_store(raw: RawData, tmp_path_factory: pytest.TempPathFactory):
    """A Feast repo in a tmp dir (SQLite online store), sources for `DS` written and objects applied."""
    repo_dir = tmp_path_factory.mktemp("feature_repo")
    store.write_config(repo_dir)
    ingest.write_sources(raw, DS, store.data_dir(repo_dir))
    feature_store = store.open_store(repo_dir)
    store.apply(feature_store)
    return feature_store


@pytest.fixture(scope="session")
def events(raw: RawData) -> pd.DataFrame:
    return ingest.labelled_events(raw, end=data_cutoff(DS))


@pytest.fixture(scope="session")
def training(feature_store, events: pd.DataFrame) -> pd.DataFrame:
    return store.training_frame(feature_store, events)


@pytest.fixture()
def snapshot(training: pd.DataFrame) -> pd.DataFrame:
    """A fresh copy of the good training snapshot, for tests that break it."""
    return training.copy()


def events_frame(rows: list[tuple[str, str, int, str]]) -> pd.DataFrame:
    """Raw events from (user_id, movie_id, rating, ISO timestamp) tuples."""
    frame = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "event_timestamp"])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame["rating"] = frame["rating"].astype("int64")
    return frame.sort_values("event_timestamp", kind="stable").reset_index(drop=True)


def repo_with(raw: RawData, ds: str, repo_dir: Path, **config):
    """A fresh applied repo in `repo_dir` over `raw` for logical date `ds`."""
    store.write_config(repo_dir, **config)
    ingest.write_sources(raw, ds, store.data_dir(repo_dir))
    feature_store = store.open_store(repo_dir)
    store.apply(feature_store)
    return feature_store


@contextlib.contextmanager
def redis_repo(raw: RawData, ds: str, repo_dir: Path, **config) -> Iterator:
    """`repo_with` on the Redis of `tests.services`, its own Feast project (the key suffix), `config`'s other
    blocks; torn down after, and checked to leave no key behind."""
    import redis

    host, port = redis_address()
    project = f"deepfm_test_{uuid.uuid4().hex[:8]}"  # Feast suffixes every Redis key with the project
    online_store = {"type": "redis", "connection_string": f"{host}:{port}", "key_ttl_seconds": 3600}
    feature_store = repo_with(raw, ds, repo_dir, project=project, online_store=online_store, **config)
    try:
        yield feature_store
    finally:
        feature_store.teardown()
    assert not list(redis.Redis(host=host, port=port).scan_iter(f"*{project}"))
