"""Fresh per-user features: the fold against a brute-force reference, leakage through Feast's point-in-time join
with planted labels, the nightly log's incremental updates, and the replayer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepfm_model.spec.dates import data_cutoff
from deepfm_model.spec.features import GENRES, RECENT_EVENTS, RECENT_GENRES, USER_FRESH_VIEW
from deepfm_model.spec.raw_data import RawData
from deepfm_model.synthetic import generate
from feature_repo import fresh_features, ingest, raw_source, store, stream
from feature_repo.daily_stats import PRIOR_MEAN_RATING
from feature_repo.fresh_features import RECENT_PSEUDO_COUNT, fold

from .conftest import events_frame, repo_with
from .test_point_in_time import smoothed_mean, smoothed_pos_rate

T0 = pd.Timestamp("2020-01-01", tz="UTC")


def random_events(n: int, users: int, movies: int, seconds: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_id": rng.integers(0, users, n).astype(str),
            "movie_id": rng.integers(0, movies, n).astype(str),
            "rating": rng.integers(1, 6, n),
            "event_timestamp": T0 + pd.to_timedelta(rng.integers(0, seconds, n), unit="s"),  # many ties
        }
    )


def random_genres(movies: int, seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    return pd.Series(
        {str(m): "|".join(sorted(set(rng.choice(GENRES, rng.integers(0, 4))))) for m in range(movies - 5)}
    )  # the last five movies are unknown: no genre


def reference(events: pd.DataFrame, genres: pd.Series) -> pd.DataFrame:
    """The rows by brute force: per user and instant, every statistic recomputed from the whole history so far."""
    rows = []
    ordered = events.sort_values(["user_id", "event_timestamp", "movie_id"], kind="stable")
    for user, by_user in ordered.groupby("user_id"):
        history: list[tuple[str, int]] = []
        for instant, group in by_user.groupby("event_timestamp"):
            history += list(zip(group["movie_id"], group["rating"], strict=True))
            ratings = [r for _, r in history]
            recent = history[-RECENT_EVENTS:]
            counts: dict[str, int] = {}
            for movie, _ in recent:
                for genre in filter(None, genres.get(movie, "").split("|")):
                    counts[genre] = counts.get(genre, 0) + 1
            top = sorted(counts, key=lambda g: (-counts[g], GENRES.index(g)))[:RECENT_GENRES]
            rows.append(
                {
                    "user_id": user,
                    "event_timestamp": instant + pd.Timedelta(microseconds=1),
                    "user_fresh_count": float(len(ratings)),
                    "user_fresh_pos_rate": smoothed_pos_rate(ratings),
                    "user_fresh_mean_rating": smoothed_mean(ratings),
                    "user_recent_mean_rating": (sum(r for _, r in recent) + RECENT_PSEUDO_COUNT * PRIOR_MEAN_RATING)
                    / (len(recent) + RECENT_PSEUDO_COUNT),
                    "user_recent_genres": "|".join(top),
                    "user_recent_movie_ids": "|".join(m for m, _ in recent),
                    "user_recent_ratings": "|".join(str(r) for _, r in recent),
                }
            )
    return pd.DataFrame(rows)


def test_fold_equals_brute_force_with_ties_and_unknown_movies():
    events = random_events(2000, users=30, movies=40, seconds=400, seed=0)
    genres = random_genres(40, seed=1)
    expected = reference(events, genres)
    rows = fold(fresh_features.empty_state(), events, genres)
    assert len(rows) < len(events)  # instants with several events of a user are one row
    pd.testing.assert_frame_equal(rows[list(expected.columns)], expected, check_dtype=False)


def test_fold_continues_a_state_exactly():
    """Folding the history in two parts, the second onto the first's last rows, equals folding it at once."""
    events = random_events(2000, users=30, movies=40, seconds=400, seed=2)
    genres = random_genres(40, seed=3)
    cut = T0 + pd.Timedelta(seconds=170)
    first = fold(fresh_features.empty_state(), events[events["event_timestamp"] < cut], genres)
    second = fold(first.groupby("user_id").tail(1), events[events["event_timestamp"] >= cut], genres)
    both = pd.concat([first, second]).sort_values(["user_id", "event_timestamp"], kind="stable")
    whole = fold(fresh_features.empty_state(), events, genres)
    pd.testing.assert_frame_equal(both.reset_index(drop=True), whole, check_dtype=False)


def test_fold_refuses_events_before_the_state():
    events = random_events(50, users=3, movies=5, seconds=100, seed=4)
    state = fold(fresh_features.empty_state(), events, pd.Series(dtype=object)).groupby("user_id").tail(1)
    with pytest.raises(ValueError, match="before their user's last folded event"):
        fold(state, events, pd.Series(dtype=object))


def test_a_tie_with_the_state_gets_the_next_microsecond():
    """A live event at the instant of the user's last one: stamped after the stored row, never equal to it."""
    genres = pd.Series(dtype=object)
    first = fold(fresh_features.empty_state(), events_frame([("u", "a", 5, "2020-01-01 10:00:00")]), genres)
    tie = fold(first, events_frame([("u", "b", 1, "2020-01-01 10:00:00")]), genres)
    assert tie["event_timestamp"].iloc[0] - first["event_timestamp"].iloc[0] == pd.Timedelta(microseconds=1)
    assert tie["user_fresh_count"].iloc[0] == 2


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory):
    """Planted ratings that are pure noise, except that each user rates all at once at a few instants: any feature
    that saw its own event, an event of the same second or a later one would predict the label."""
    rng = np.random.default_rng(5)
    base = generate(n_users=40, n_movies=30, n_events=1, seed=5)
    rows = []
    for user in base.users["user_id"]:
        for instant in np.sort(rng.choice(20 * 24 * 3600, 6, replace=False)):
            when = (pd.Timestamp("1998-01-01", tz="UTC") + pd.Timedelta(seconds=int(instant))).isoformat()
            for movie in rng.choice(base.movies["movie_id"], 3, replace=False):
                rows.append((user, movie, int(rng.integers(1, 6)), when))
    raw = RawData(events_frame(rows), base.users, base.movies)
    ds = "1998-01-22"
    feature_store = repo_with(raw, ds, tmp_path_factory.mktemp("leaky"))
    labelled = ingest.labelled_events(raw, end=data_cutoff(ds))
    return raw, labelled, store.training_frame(feature_store, labelled)


def test_no_fresh_feature_sees_its_own_instant_or_later(leaky):
    raw, events, training = leaky
    for _, row in training.sample(200, random_state=0).iterrows():
        earlier = events[(events["user_id"] == row["user_id"]) & (events["event_timestamp"] < row["event_timestamp"])]
        ratings = earlier["rating"].tolist()
        assert row["user_fresh_count"] == len(ratings)
        assert row["user_fresh_mean_rating"] == pytest.approx(smoothed_mean(ratings))
        assert row["user_fresh_pos_rate"] == pytest.approx(smoothed_pos_rate(ratings))


def test_planted_labels_do_not_leak_into_fresh_features(leaky):
    """The events of one instant share their features; with a leak, the mean rating "so far" would include them."""
    _, events, training = leaky
    mean = training["user_fresh_mean_rating"]
    assert abs(np.corrcoef(mean, training["rating"])[0, 1]) < 0.15
    # The same statistic with the event's own instant included (what a stamp at t instead of t + 1 µs would give)
    # follows the label: the check above could fail.
    grouped = events.groupby(["user_id", "event_timestamp"])["rating"].agg(["sum", "count"]).reset_index()
    leaked = training.merge(grouped, on=["user_id", "event_timestamp"])
    with_instant = (leaked["user_fresh_mean_rating"] * (leaked["user_fresh_count"] + 5) + leaked["sum"]) / (
        leaked["user_fresh_count"] + 5 + leaked["count"]
    )
    assert np.corrcoef(with_instant, leaked["rating"])[0, 1] > 0.3


def test_first_events_read_no_history(leaky):
    _, _, training = leaky
    first = training.groupby("user_id").head(3)  # every user's first instant: three events
    assert (first["user_fresh_count"] == 0).all()
    assert (first["user_recent_genres"] == "").all()
    assert (first["user_fresh_mean_rating"] == PRIOR_MEAN_RATING).all()


def log_files(repo_dir) -> dict[str, pd.DataFrame]:
    folder = store.data_dir(repo_dir) / USER_FRESH_VIEW
    return {path.name: pd.read_parquet(path) for path in sorted(folder.glob("*.parquet"))}


def test_nightly_updates_fold_only_the_new_day_and_equal_a_rebuild(tmp_path):
    raw = generate(n_users=60, n_movies=40, n_events=3000, seed=6)
    nightly = tmp_path / "nightly"
    for ds in ("1998-01-10", "1998-01-11", "1998-01-12"):
        ingest.write_sources(raw, ds, store.data_dir(nightly))
    manifest = fresh_features._read_json(store.data_dir(nightly) / "aggregates" / fresh_features.FOLD_MANIFEST)
    assert max(manifest["days"]) == "1998-01-11"
    with raw_source.connect(raw) as con:
        raw_source.create_views(con)
        assert (
            fresh_features.update(con, data_cutoff("1998-01-12"), store.data_dir(nightly), ingest.PROFILE_TIMESTAMP)
            == 0
        )
        assert (
            fresh_features.update(con, data_cutoff("1998-01-13"), store.data_dir(nightly), ingest.PROFILE_TIMESTAMP)
            == 1
        )
        assert (
            fresh_features.update(con, data_cutoff("1998-01-12"), store.data_dir(nightly), ingest.PROFILE_TIMESTAMP)
            == 0
        )
    ingest.write_sources(raw, "1998-01-12", store.data_dir(tmp_path / "rebuild"))
    nightly_files, rebuilt = log_files(nightly), log_files(tmp_path / "rebuild")
    assert list(nightly_files) == list(rebuilt)  # the day re-run for 01-13 is gone again
    for name, frame in rebuilt.items():
        pd.testing.assert_frame_equal(nightly_files[name], frame, obj=name)


def test_days_folded_in_batches_equal_days_folded_one_by_one(tmp_path, monkeypatch):
    raw = generate(n_users=60, n_movies=40, n_events=3000, seed=8)
    logs = {}
    for limit in (1, 700, 10**9):  # a day per batch; a few days per batch; every day in one batch
        monkeypatch.setattr(fresh_features, "FOLD_BATCH_EVENTS", limit)
        ingest.write_sources(raw, "1998-01-12", store.data_dir(tmp_path / str(limit)))
        logs[limit] = log_files(tmp_path / str(limit))
    assert len(logs[1]) > 3
    for limit in (700, 10**9):
        assert list(logs[limit]) == list(logs[1])
        for name, frame in logs[1].items():
            pd.testing.assert_frame_equal(logs[limit][name], frame, obj=f"{name} (batches of {limit} events)")


def test_every_user_has_a_row_under_a_day_old_at_the_cutoff_and_on_each_active_day(tmp_path):
    """The view's one-day TTL needs it: the now rows (state at the cutoff) and a carry row per active day."""
    raw = generate(n_users=60, n_movies=40, n_events=3000, seed=9)
    ds = "1998-01-12"
    ingest.write_sources(raw, ds, store.data_dir(tmp_path))
    folder = store.data_dir(tmp_path) / USER_FRESH_VIEW
    now = pd.read_parquet(folder / "now-1998-01-12.parquet")
    state = fresh_features.latest_state(folder)
    assert set(now["user_id"]) == set(raw.users["user_id"].astype(str)) == set(state["user_id"])
    assert (now["event_timestamp"] == data_cutoff(ds)).all()
    columns = [c for c in fresh_features.LOG_COLUMNS if c != "event_timestamp"]
    pd.testing.assert_frame_equal(
        now[columns].sort_values("user_id", ignore_index=True), state[columns].sort_values("user_id", ignore_index=True)
    )
    events = ingest.labelled_events(raw, end=data_cutoff(ds))
    for day, by_day in events.groupby(events["event_timestamp"].dt.floor("D")):
        rows = pd.read_parquet(folder / f"{day:%Y-%m-%d}.parquet")
        carried = rows[rows["event_timestamp"] == day]
        assert set(carried["user_id"]) == set(by_day["user_id"]), day
        # A carry row holds the user's state before the day: the count of their earlier events.
        earlier = events[events["event_timestamp"] < day].groupby("user_id").size()
        counts = carried.set_index("user_id")["user_fresh_count"]
        np.testing.assert_array_equal(counts.to_numpy(), earlier.reindex(counts.index).fillna(0).to_numpy())


def test_batches_cut_days_at_the_event_limit():
    counts = {"d1": 5, "d2": 5, "d3": 12, "d4": 1}
    assert fresh_features._batches(list(counts), counts, 10) == [["d1", "d2"], ["d3"], ["d4"]]
    assert fresh_features._batches(list(counts), counts, 100) == [list(counts)]


def test_replay_pushes_the_state_online_and_the_stream_goes_on(tmp_path):
    raw = generate(n_users=20, n_movies=15, n_events=400, seed=7)
    ds = "1998-01-20"
    store.write_config(tmp_path)
    feature_store = store.open_store(tmp_path)
    summary = stream.replay(feature_store, raw, ds)
    assert summary["users_pushed"] == raw.users["user_id"].nunique()
    events = ingest.labelled_events(raw, end=data_cutoff(ds))
    user = events["user_id"].iloc[-1]
    online = stream.EventStream(feature_store).online_state([user])
    assert online["user_fresh_count"].tolist() == [float((events["user_id"] == user).sum())]
