"""Ingest: turn `RawData` into the dated parquet sources of the feature views.

The run for logical date `ds` sees the events strictly before `ds` 00:00 UTC (`spec.dates`), so re-running a
logical date rewrites the same files (idempotent) and nothing from `ds` on can leak in.

Stats rows follow one rule, which is what makes them point-in-time correct: a row stamped 00:00 UTC of day D
aggregates the entity's events strictly before D. Rows exist for every day on which the entity has events
(an event on D joins to D's row, never to one that counts the event itself or a later one) and, for every
entity, for `ds` itself (the "now" row that materialization pushes online).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deepfm_model.spec.dates import DateLike, data_cutoff
from deepfm_model.spec.features import (
    EVENT_TIMESTAMP,
    GENRES,
    LABEL,
    MOVIE_KEY,
    MOVIE_PROFILE_VIEW,
    MOVIE_STATS_VIEW,
    MULTI_VALUE_SEPARATOR,
    POSITIVE_RATING,
    RATING,
    USER_GENRE_STAT_COLUMNS,
    USER_GENRE_STATS_VIEW,
    USER_KEY,
    USER_PROFILE_VIEW,
    USER_STATS_VIEW,
    genre_stat_columns,
    view_features,
)
from deepfm_model.spec.files import staged_path
from deepfm_model.spec.raw_data import (
    EVENT_COLUMNS,
    MOVIE_COLUMNS,
    USER_COLUMNS,
    RawData,
    check_columns,
)
from feature_repo.sources import source_file

# Profiles are static: one row per entity, stamped before any event so that every event sees it.
PROFILE_TIMESTAMP = pd.Timestamp("1990-01-01", tz="UTC")
# Smoothing of the stats: `PSEUDO_COUNT` imaginary ratings at fixed prior values. The priors are constants,
# not estimated from the data, so that no row depends on events after its day.
PSEUDO_COUNT = 5.0
PRIOR_POS_RATE = 0.5
PRIOR_MEAN_RATING = 3.5
ZIP_PREFIX_LENGTH = 3


def labelled_events(raw: RawData, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None) -> pd.DataFrame:
    """The Feast entity frame: events with `start <= event_timestamp < end`, labelled, sorted by time.

    Args:
        raw: raw tables.
        start: first instant included (UTC); `None` for no lower bound.
        end: first instant excluded (UTC), usually `spec.dates.data_cutoff(ds)`; `None` for no upper bound.

    Returns:
        Columns user_id, movie_id (str), event_timestamp (UTC), rating (int), label (int 0/1).
    """
    check_columns(raw.events, EVENT_COLUMNS, "events")
    events = raw.events
    keep = np.ones(len(events), dtype=bool)
    if start is not None:
        keep &= (events[EVENT_TIMESTAMP] >= start).to_numpy()
    if end is not None:
        keep &= (events[EVENT_TIMESTAMP] < end).to_numpy()
    frame = events.loc[keep, [USER_KEY, MOVIE_KEY, EVENT_TIMESTAMP, RATING]].copy()
    frame[USER_KEY] = frame[USER_KEY].astype(str)
    frame[MOVIE_KEY] = frame[MOVIE_KEY].astype(str)
    frame[RATING] = frame[RATING].astype("int64")
    frame[LABEL] = (frame[RATING] >= POSITIVE_RATING).astype("int64")
    return frame.sort_values(EVENT_TIMESTAMP, kind="stable").reset_index(drop=True)


def user_profiles(users: pd.DataFrame) -> pd.DataFrame:
    """The user profile source: gender, age, occupation, zip_prefix per user."""
    check_columns(users, USER_COLUMNS, "users")
    table = pd.DataFrame(
        {
            USER_KEY: users[USER_KEY].astype(str),
            "gender": users["gender"].astype(str),
            "age": users["age"].astype("float64"),
            "occupation": users["occupation"].astype(str),
            "zip_prefix": users["zip_code"].astype(str).str[:ZIP_PREFIX_LENGTH],
        }
    )
    return _stamp_profiles(table, USER_PROFILE_VIEW)


def movie_profiles(movies: pd.DataFrame) -> pd.DataFrame:
    """The movie profile source: genres and release year (unknown years take the median) per movie."""
    check_columns(movies, MOVIE_COLUMNS, "movies")
    years = movies["release_year"].astype("float64")
    median_year = float(years.median()) if years.notna().any() else float("nan")
    table = pd.DataFrame(
        {
            MOVIE_KEY: movies[MOVIE_KEY].astype(str),
            "genres": movies["genres"].fillna("").astype(str),
            "release_year": years.fillna(median_year),
        }
    )
    return _stamp_profiles(table, MOVIE_PROFILE_VIEW)


def _stamp_profiles(table: pd.DataFrame, view: str) -> pd.DataFrame:
    table[EVENT_TIMESTAMP] = pd.Series(PROFILE_TIMESTAMP, index=table.index).astype("datetime64[ns, UTC]")
    _check_view_columns(table, view)
    return table.reset_index(drop=True)


def daily_stats(events: pd.DataFrame, key: str, entity_ids: pd.Series, prefix: str, view: str,
                cutoff: pd.Timestamp) -> pd.DataFrame:  # fmt: skip
    """Daily aggregate rows of one entity type over `events` (already restricted to before `cutoff`).

    Args:
        events: labelled events before `cutoff`.
        key: entity column (`user_id` or `movie_id`).
        entity_ids: every id that gets a "now" row at `cutoff`.
        prefix: feature name prefix (`user` or `movie`).
        view: feature view whose columns the table must have.
        cutoff: `data_cutoff(ds)`: 00:00 UTC of the logical date.

    Returns:
        One row per (entity, day with events) and per (entity, cutoff day), stamped 00:00 UTC of that day,
        with count, smoothed positive rate and smoothed mean rating of the events strictly before that day.
    """
    values = pd.DataFrame({"n": 1.0, "pos": events[LABEL].astype("float64"), "total": events[RATING].astype("float64")})
    rows = _sums_before_each_day(events, values, key, entity_ids, cutoff)
    n = rows["n"]
    table = pd.DataFrame(
        {
            key: rows[key],
            f"{prefix}_rating_count": n,
            f"{prefix}_pos_rate": (rows["pos"] + PSEUDO_COUNT * PRIOR_POS_RATE) / (n + PSEUDO_COUNT),
            f"{prefix}_mean_rating": (rows["total"] + PSEUDO_COUNT * PRIOR_MEAN_RATING) / (n + PSEUDO_COUNT),
            EVENT_TIMESTAMP: rows[EVENT_TIMESTAMP],
        }
    )
    _check_view_columns(table, view)
    return table


def user_genre_stats(events: pd.DataFrame, movies: pd.DataFrame, user_ids: pd.Series,
                     cutoff: pd.Timestamp) -> pd.DataFrame:  # fmt: skip
    """Per-user per-genre daily counts: the source of `USER_GENRE_STATS_VIEW`, same rows as the user stats.

    A movie with several genres counts once in each of them. The on-demand view `GENRE_AFFINITY_VIEW`
    combines these columns with the candidate movie's genres (`transformations.genre_affinity`).

    Args:
        events: labelled events before `cutoff`.
        movies: the movie profile source (movie_id, genres); events of unknown movies count in no genre.
        user_ids: every user that gets a "now" row at `cutoff`.
        cutoff: `data_cutoff(ds)`: 00:00 UTC of the logical date.

    Returns:
        user_id, `features.USER_GENRE_STAT_COLUMNS` (float64) and event_timestamp, one row per (user, day with
        events) and per (user, cutoff day), counting the user's events strictly before that day.
    """
    genres_of = movies.set_index(MOVIE_KEY)["genres"]
    tokens = events[MOVIE_KEY].map(genres_of).fillna("").str.split(MULTI_VALUE_SEPARATOR)
    label = events[LABEL].to_numpy(dtype="float64")
    values = {}
    for genre in GENRES:
        count_column, pos_column = genre_stat_columns(genre)
        has_genre = tokens.map(lambda values, genre=genre: genre in values).to_numpy(dtype="float64")
        values[count_column] = has_genre
        values[pos_column] = has_genre * label
    rows = _sums_before_each_day(events, pd.DataFrame(values, index=events.index), USER_KEY, user_ids, cutoff)
    table = rows[[USER_KEY, *USER_GENRE_STAT_COLUMNS, EVENT_TIMESTAMP]]
    expected = [USER_KEY, *USER_GENRE_STAT_COLUMNS, EVENT_TIMESTAMP]
    if list(table.columns) != expected:
        raise ValueError(f"Source of view `{USER_GENRE_STATS_VIEW}` must have columns {expected}.")
    return table


def _sums_before_each_day(events: pd.DataFrame, values: pd.DataFrame, key: str, entity_ids: pd.Series,
                          cutoff: pd.Timestamp) -> pd.DataFrame:  # fmt: skip
    """Sums of `values` (aligned with `events`) over each entity's events strictly before each day.

    This is the one rule that makes every stats source point-in-time correct: the row stamped 00:00 UTC of day
    D counts only the entity's events of days before D. Rows exist for every (entity, day with events) and for
    every entity at `cutoff` (the "now" row; entities without events get zeros).

    Returns:
        `key` (str), one float64 column per column of `values`, event_timestamp (UTC); sorted by time, then key.
    """
    columns = list(values.columns)
    frame = values.astype("float64").assign(
        **{key: events[key].astype(str), "day": events[EVENT_TIMESTAMP].dt.floor("D")}
    )
    daily = frame.groupby([key, "day"], sort=True)[columns].sum().reset_index()
    # Exclusive running sums: the row of day D counts only the days before D.
    before = daily[[key, "day"]].copy()
    before[columns] = daily.groupby(key, sort=False)[columns].cumsum() - daily[columns]
    totals = daily.groupby(key)[columns].sum()
    now = pd.DataFrame({key: pd.unique(pd.concat([entity_ids.astype(str), daily[key]]))})
    now = now.join(totals, on=key).fillna(0.0)
    now["day"] = cutoff
    rows = pd.concat([before[before["day"] < cutoff], now], ignore_index=True)
    rows[EVENT_TIMESTAMP] = pd.to_datetime(rows.pop("day"), utc=True).astype("datetime64[ns, UTC]")
    rows[columns] = rows[columns].astype("float64")
    return rows.sort_values([EVENT_TIMESTAMP, key], kind="stable").reset_index(drop=True)


def build_sources(raw: RawData, ds: DateLike) -> dict[str, pd.DataFrame]:
    """The source tables for logical date `ds`, keyed by feature view name."""
    cutoff = data_cutoff(ds)
    events = labelled_events(raw, end=cutoff)
    users = user_profiles(raw.users)
    movies = movie_profiles(raw.movies)
    return {
        USER_PROFILE_VIEW: users,
        MOVIE_PROFILE_VIEW: movies,
        USER_STATS_VIEW: daily_stats(events, USER_KEY, users[USER_KEY], "user", USER_STATS_VIEW, cutoff),
        MOVIE_STATS_VIEW: daily_stats(events, MOVIE_KEY, movies[MOVIE_KEY], "movie", MOVIE_STATS_VIEW, cutoff),
        USER_GENRE_STATS_VIEW: user_genre_stats(events, movies, users[USER_KEY], cutoff),
    }


def write_sources(raw: RawData, ds: DateLike, data_dir: Path) -> dict[str, Path]:
    """Write the parquet sources for logical date `ds` into `data_dir` (atomically, one file per view).

    Args:
        raw: raw tables; only events strictly before `ds` 00:00 UTC are used.
        ds: logical date of the run.
        data_dir: the repo's data folder (`store.data_dir(repo_dir)`), created if missing.

    Returns:
        Path of each written file, keyed by feature view name.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for view, table in build_sources(raw, ds).items():
        path = data_dir / source_file(view)
        with staged_path(path) as staged:
            table.to_parquet(staged, index=False)
        paths[view] = path
    return paths


def _check_view_columns(table: pd.DataFrame, view: str) -> None:
    expected = {f.name for f in view_features(view)}
    actual = set(table.columns) - {USER_KEY, MOVIE_KEY, EVENT_TIMESTAMP}
    if actual != expected:
        raise ValueError(
            f"Source of view `{view}` must have the spec's features {sorted(expected)}. Received: {sorted(actual)}"
        )
