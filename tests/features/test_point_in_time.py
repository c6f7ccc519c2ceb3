"""Point-in-time correctness: every event sees the stats of strictly earlier days, never itself or the future."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepfm_model.spec.dates import data_cutoff
from deepfm_model.spec.features import FEATURE_NAMES
from deepfm_model.spec.raw_data import RawData
from deepfm_model.synthetic import generate
from feature_repo import ingest, store
from feature_repo.daily_stats import PRIOR_MEAN_RATING, PRIOR_POS_RATE, PSEUDO_COUNT
from tests.features.sources import build_sources

from .conftest import events_frame, repo_with


def smoothed_mean(ratings: list[int]) -> float:
    return (sum(ratings) + PSEUDO_COUNT * PRIOR_MEAN_RATING) / (len(ratings) + PSEUDO_COUNT)


def smoothed_pos_rate(ratings: list[int]) -> float:
    return (sum(r >= 4 for r in ratings) + PSEUDO_COUNT * PRIOR_POS_RATE) / (len(ratings) + PSEUDO_COUNT)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[RawData, pd.DataFrame]:
    """User u1 changes at known day boundaries; two events share user and second (a Dask-store pitfall)."""
    base = generate(n_users=3, n_movies=4, n_events=1, seed=1)
    users = base.users.assign(user_id=["u1", "u2", "u3"])
    movies = base.movies.assign(movie_id=["m1", "m2", "m3", "m4"])
    events = events_frame(
        [
            ("u1", "m1", 5, "1998-01-01 10:00:00"),
            ("u1", "m2", 1, "1998-01-01 12:00:00"),
            ("u2", "m1", 2, "1998-01-02 08:00:00"),
            ("u1", "m3", 5, "1998-01-02 09:00:00"),
            ("u1", "m4", 4, "1998-01-02 09:00:00"),
            ("u1", "m1", 3, "1998-01-04 23:59:59"),
            ("u3", "m2", 5, "1998-01-05 00:00:00"),  # the day after ds: must not reach the sources
        ]
    )
    raw = RawData(events, users, movies)
    feature_store = repo_with(raw, "1998-01-05", tmp_path_factory.mktemp("planted"))
    labelled = ingest.labelled_events(raw, end=data_cutoff("1998-01-05"))
    return raw, store.training_frame(feature_store, labelled)


def test_planted_user_stats_change_at_day_boundaries(planted):
    _, frame = planted
    expected = {  # (event time, movie) -> ratings u1 gave strictly before that event's day
        "1998-01-01 10:00:00": [],
        "1998-01-01 12:00:00": [],
        "1998-01-02 09:00:00": [5, 1],
        "1998-01-04 23:59:59": [5, 1, 5, 4],
    }
    for stamp, earlier in expected.items():
        rows = frame[(frame["user_id"] == "u1") & (frame["event_timestamp"] == pd.Timestamp(stamp, tz="UTC"))]
        assert len(rows) >= 1, stamp
        assert (rows["user_rating_count"] == len(earlier)).all(), stamp
        np.testing.assert_allclose(rows["user_mean_rating"], smoothed_mean(earlier))
        np.testing.assert_allclose(rows["user_pos_rate"], smoothed_pos_rate(earlier))
    assert (frame["user_id"] == "u1").sum() == 5


def test_planted_movie_stats_exclude_same_day_and_later_events(planted):
    _, frame = planted
    m1 = frame[frame["movie_id"] == "m1"].sort_values("event_timestamp")
    assert m1["movie_rating_count"].tolist() == [0.0, 1.0, 2.0]  # u1 day 1; u2 day 2; u1 day 4
    np.testing.assert_allclose(m1["movie_mean_rating"].iloc[2], smoothed_mean([5, 2]))


def test_events_sharing_user_and_second_are_all_kept(planted):
    _, frame = planted
    same_second = frame[frame["event_timestamp"] == pd.Timestamp("1998-01-02 09:00:00", tz="UTC")]
    assert sorted(same_second["movie_id"]) == ["m3", "m4"]
    assert frame[list(FEATURE_NAMES)].notna().all().all()


def test_sources_ignore_events_after_ds(planted, tmp_path):
    raw, frame = planted
    assert pd.Timestamp("1998-01-05", tz="UTC") not in set(frame["event_timestamp"])
    tables = build_sources(raw, "1998-01-05")
    stats = tables["user_stats"]
    u3_now = stats[(stats["user_id"] == "u3") & (stats["event_timestamp"] == data_cutoff("1998-01-05"))]
    assert u3_now["user_rating_count"].tolist() == [0.0]
    assert stats["event_timestamp"].max() == data_cutoff("1998-01-05")


def test_no_event_sees_itself_or_a_later_event(training, events):
    """On the synthetic snapshot: each count equals the entity's events before the event's day, exactly."""
    assert len(training) == len(events)
    for key, count in (("user_id", "user_rating_count"), ("movie_id", "movie_rating_count")):
        day = training["event_timestamp"].dt.floor("D")
        expected = np.empty(len(training))
        for entity, rows in training.groupby(key).groups.items():
            history = np.sort(events.loc[events[key] == entity, "event_timestamp"].to_numpy())
            expected[training.index.get_indexer(rows)] = np.searchsorted(history, day.loc[rows].to_numpy(), side="left")
        np.testing.assert_array_equal(training[count].to_numpy(), expected, err_msg=key)


def test_training_frame_contract(training):
    assert list(training.columns) == [*FEATURE_NAMES, "event_timestamp", "rating", "label", "picked"]
    assert training["event_timestamp"].is_monotonic_increasing
    assert training["label"].isin([0, 1]).all()
    assert (training["label"] == (training["rating"] >= 4)).all()
    assert training["age"].dtype == np.float64
    assert training["user_id"].map(type).eq(str).all()
    assert training["genres"].map(type).eq(str).all()
