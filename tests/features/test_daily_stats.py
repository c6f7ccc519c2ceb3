"""Incremental stats sources: a night aggregates only the days that changed, and the files always equal a rebuild."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from deepfm_model.spec.features import RECENT_DAYS, USER_GENRE_STATS_VIEW, VIEWS
from deepfm_model.spec.raw_data import RawData
from deepfm_model.synthetic import generate
from feature_repo import daily_stats, ingest, raw_source
from tests.features.sources import build_sources

TABLES = (*VIEWS, USER_GENRE_STATS_VIEW)


@pytest.fixture(scope="module")
def raw() -> RawData:
    return generate(n_users=60, n_movies=40, n_events=1500, days=10, seed=4)


def nightly(raw: RawData, ds: str, data_dir: Path) -> dict[str, int]:
    """One night's `write_sources`; the days each view aggregated."""
    with raw_source.connect(raw) as con:
        raw_source.create_views(con)
        ingest.write_sources(con, ds, data_dir)
    return json.loads((data_dir / daily_stats.AGGREGATES_DIR / daily_stats.MANIFEST_FILE).read_text())


def assert_equal_to_rebuild(raw: RawData, ds: str, data_dir: Path) -> None:
    fresh = build_sources(raw, ds)
    for view in TABLES:
        pd.testing.assert_frame_equal(ingest.read_source(data_dir, view), fresh[view], check_exact=True, obj=view)


def days_aggregated(raw: RawData, ds: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    seen: dict[str, list] = {}
    original = daily_stats._write_daily_sums

    def spy(con, spec, days, *args):
        if days:
            seen[spec.view] = list(days)
        return original(con, spec, days, *args)

    monkeypatch.setattr(daily_stats, "_write_daily_sums", spy)
    nightly(raw, ds, data_dir)
    monkeypatch.undo()
    return seen


def test_consecutive_nights_aggregate_only_the_new_day(raw, tmp_path, monkeypatch):
    first = days_aggregated(raw, "1998-01-08", tmp_path, monkeypatch)
    assert len(first["user_stats"]) == 7
    second = days_aggregated(raw, "1998-01-09", tmp_path, monkeypatch)
    assert second == {spec.view: ["1998-01-08"] for spec in daily_stats.STATS_VIEWS}
    assert_equal_to_rebuild(raw, "1998-01-09", tmp_path)
    assert sorted(p.stem for p in (tmp_path / "user_stats").glob("*.parquet"))[-2:] == ["1998-01-08", "1998-01-09"]


def test_re_running_a_date_aggregates_nothing_and_rewrites_the_same_files(raw, tmp_path, monkeypatch):
    nightly(raw, "1998-01-09", tmp_path)
    before = {view: ingest.read_source(tmp_path, view) for view in TABLES}
    assert days_aggregated(raw, "1998-01-09", tmp_path, monkeypatch) == {}
    for view in TABLES:
        pd.testing.assert_frame_equal(ingest.read_source(tmp_path, view), before[view], check_exact=True)


def test_an_earlier_date_after_a_later_one_equals_a_rebuild(raw, tmp_path):
    nightly(raw, "1998-01-11", tmp_path)
    nightly(raw, "1998-01-06", tmp_path)
    assert_equal_to_rebuild(raw, "1998-01-06", tmp_path)
    assert max(p.stem for p in (tmp_path / "movie_stats").glob("*.parquet")) == "1998-01-06"


def test_a_changed_past_day_is_recomputed_from_that_day_on(raw, tmp_path, monkeypatch):
    nightly(raw, "1998-01-11", tmp_path)
    events = raw.events.copy()
    late = events.index[(events["event_timestamp"] >= pd.Timestamp("1998-01-04", tz="UTC"))][0]
    events.loc[late, "rating"] = 1 if events.loc[late, "rating"] != 1 else 5  # a corrected rating on 1998-01-04
    changed = RawData(events, raw.users, raw.movies)
    assert days_aggregated(changed, "1998-01-11", tmp_path, monkeypatch)["movie_stats"] == ["1998-01-04"]
    assert_equal_to_rebuild(changed, "1998-01-11", tmp_path)


def test_changed_genres_recompute_the_genre_stats_only(raw, tmp_path, monkeypatch):
    nightly(raw, "1998-01-11", tmp_path)
    movies = raw.movies.copy()
    movies.loc[movies.index[0], "genres"] = "Western"
    changed = RawData(raw.events, raw.users, movies)
    seen = days_aggregated(changed, "1998-01-11", tmp_path, monkeypatch)
    assert set(seen) == {USER_GENRE_STATS_VIEW} and len(seen[USER_GENRE_STATS_VIEW]) == 10
    assert_equal_to_rebuild(changed, "1998-01-11", tmp_path)


def test_every_stats_file_has_the_views_columns(raw, tmp_path):
    from deepfm_model.spec.features import USER_GENRE_STAT_COLUMNS, view_features

    nightly(raw, "1998-01-11", tmp_path)
    for spec in daily_stats.STATS_VIEWS:
        expected = USER_GENRE_STAT_COLUMNS if spec.by_genre else tuple(f.name for f in view_features(spec.view))
        columns = list(ingest.read_source(tmp_path, spec.view).columns)
        assert columns == [spec.key, *expected, "event_timestamp"], spec.view


def test_movie_rows_every_day_and_recent_shares_equal_a_brute_force_count(tmp_path):
    long = generate(n_users=60, n_movies=40, n_events=3000, days=50, seed=5)  # longer than the 30-day window
    ds = "1998-02-15"
    nightly(long, ds, tmp_path)
    movies = ingest.read_source(tmp_path, "movie_stats")
    events = long.events.assign(movie_id=long.events["movie_id"].astype(str))
    events["event_timestamp"] = pd.to_datetime(events["event_timestamp"], utc=True)
    events = events[events["event_timestamp"] < pd.Timestamp(ds, tz="UTC")]
    event_days = set(events["event_timestamp"].dt.floor("D")) | {pd.Timestamp(ds, tz="UTC")}
    stamps = pd.to_datetime(movies["event_timestamp"], utc=True)
    assert set(stamps) == event_days
    assert movies.groupby(stamps)["movie_id"].nunique().eq(len(long.movies)).all()  # every movie, every day
    window = pd.Timedelta(days=RECENT_DAYS)
    for stamp in sorted(event_days)[::7]:
        recent = events[(events["event_timestamp"] >= stamp - window) & (events["event_timestamp"] < stamp)]
        liked = recent[recent["rating"] >= 4]
        rows = movies[stamps == stamp].set_index("movie_id")
        share = 1000 * recent["movie_id"].value_counts().reindex(rows.index, fill_value=0) / max(len(recent), 1)
        positive = 1000 * liked["movie_id"].value_counts().reindex(rows.index, fill_value=0) / max(len(liked), 1)
        pd.testing.assert_series_equal(rows["movie_recent_share"], share.astype(float), check_names=False)
        pd.testing.assert_series_equal(rows["movie_recent_positive_share"], positive.astype(float), check_names=False)
