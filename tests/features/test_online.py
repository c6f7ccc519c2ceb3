"""Online serving: after materialization the online store returns what the offline store returns for 'now'."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from deepfm_model.spec.dates import data_cutoff, last_data_day
from deepfm_model.spec.features import FEATURE_NAMES, FEATURES, Kind
from feature_repo import ingest, store
from feature_repo.skew import skew_report

from .conftest import DS, redis_repo, repo_with

NOW = data_cutoff(DS) + pd.Timedelta(hours=1)  # serving time: the "now" rows are stamped at the cutoff


def offline_now(feature_store, user_id: str, movie_ids: list[str]) -> pd.DataFrame:
    entity_rows = pd.DataFrame(
        {"user_id": user_id, "movie_id": movie_ids, "event_timestamp": NOW, "rating": 5, "label": 1}
    )
    frame = store.training_frame(feature_store, entity_rows)
    order = {movie_id: i for i, movie_id in enumerate(movie_ids)}
    frame = frame.sort_values("movie_id", key=lambda s: s.map(order)).reset_index(drop=True)
    return frame[list(FEATURE_NAMES)]


def assert_online_equals_offline(feature_store, raw) -> None:
    rng = np.random.default_rng(0)
    movie_ids = list(rng.choice(raw.movies["movie_id"], 12, replace=False))
    for user_id in rng.choice(raw.users["user_id"], 4, replace=False):
        online = store.online_features(feature_store, user_id, movie_ids)
        assert list(online.columns) == list(FEATURE_NAMES)
        assert online["movie_id"].tolist() == movie_ids
        assert online.notna().all().all()
        pd.testing.assert_frame_equal(online, offline_now(feature_store, user_id, movie_ids), check_exact=False)


def test_online_equals_offline_after_materialization(feature_store, raw):
    store.materialize(feature_store, last_data_day(DS), data_cutoff(DS))
    assert_online_equals_offline(feature_store, raw)


def test_materialize_is_idempotent(feature_store, raw):
    store.materialize(feature_store, last_data_day(DS), data_cutoff(DS))
    first = store.online_features(feature_store, "1", ["1", "2", "3"])
    store.materialize(feature_store, last_data_day(DS), data_cutoff(DS))
    pd.testing.assert_frame_equal(first, store.online_features(feature_store, "1", ["1", "2", "3"]))


def test_unknown_ids_come_back_null(feature_store):
    store.materialize(feature_store, last_data_day(DS), data_cutoff(DS))
    frame = store.online_features(feature_store, "no-such-user", ["no-such-movie"])
    assert len(frame) == 1
    numeric = [f.name for f in FEATURES if f.kind is Kind.NUMERIC and f.view is not None]
    assert frame[numeric].isna().all().all()


def test_online_equals_offline_on_redis(raw, tmp_path):
    with redis_repo(raw, DS, tmp_path) as feature_store:
        store.materialize(feature_store, last_data_day(DS), data_cutoff(DS))
        assert_online_equals_offline(feature_store, raw)


def test_skew_report_finds_no_skew_after_materialization(feature_store):
    store.materialize(feature_store, last_data_day(DS), data_cutoff(DS))
    report = skew_report(feature_store, sample_size=40, as_of=NOW)
    assert report["ok"], report
    assert report["pairs"] >= 30 and report["mismatched_pairs"] == 0
    assert set(report["features"]) == {f.name for f in FEATURES if f.view is not None}
    json.dumps(report)  # a DAG task can log or store it as it is


def test_skew_report_names_a_planted_online_difference(raw, tmp_path):
    feature_store = repo_with(raw, DS, tmp_path)
    store.materialize(feature_store, last_data_day(DS), data_cutoff(DS))
    stats = ingest.read_source(store.data_dir(tmp_path), "user_stats")
    now_rows = stats[stats["event_timestamp"] == data_cutoff(DS)].copy()
    now_rows["user_mean_rating"] = 1.0  # the online store now disagrees with the offline source for every user
    feature_store.write_to_online_store("user_stats", now_rows)
    report = skew_report(feature_store, sample_size=20, as_of=NOW)
    assert not report["ok"]
    assert report["features"]["user_mean_rating"]["mismatches"] == report["pairs"]
    assert report["features"]["user_mean_rating"]["examples"][0]["online"] == 1.0
    assert report["features"]["movie_mean_rating"]["mismatches"] == 0


def test_skew_report_verifies_the_read_ranking_serves(feature_store, monkeypatch):
    """A fault in the served read's own logic (its copy of the on-demand formula) is a skew the check names."""
    from feature_repo import online_reader
    from feature_repo.transformations import AFFINITY_FEATURE

    store.materialize(feature_store, last_data_day(DS), data_cutoff(DS))
    formula = online_reader.affinity_values
    monkeypatch.setattr(online_reader, "affinity_values", lambda *args: formula(*args) + 1.0)
    report = skew_report(feature_store, sample_size=20, as_of=NOW)
    assert not report["ok"] and report["features"][AFFINITY_FEATURE]["mismatches"] == report["pairs"]
    assert report["features"]["user_mean_rating"]["mismatches"] == 0
