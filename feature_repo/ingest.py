"""Ingest: turn the raw tables into the parquet sources of the feature views, and the run's labelled events.

The run for logical date `ds` sees the events strictly before `ds` 00:00 UTC (`spec.dates`), so re-running a
logical date rewrites the same files (idempotent) and nothing from `ds` on can leak in. The profile sources are
built in pandas from the profile tables (one row per entity); the stats sources and the labelled events are
computed by DuckDB from the events, day by day (`daily_stats`), so that no step holds every event in memory and
a night aggregates only its new day.

Stats rows follow one rule, which is what makes them point-in-time correct: a row stamped 00:00 UTC of day D
aggregates the entity's events strictly before D. Rows exist for every day on which the entity has events
(an event on D joins to D's row, never to one that counts the event itself or a later one) and, for every
entity, for `ds` itself (the "now" row that materialization pushes online).
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from deepfm_model.spec.dates import DateLike, data_cutoff
from deepfm_model.spec.features import (
    EVENT_TIMESTAMP,
    LABEL,
    MOVIE_KEY,
    MOVIE_PROFILE_VIEW,
    POSITIVE_RATING,
    RATING,
    USER_FRESH_VIEW,
    USER_KEY,
    USER_PROFILE_VIEW,
    view_features,
)
from deepfm_model.spec.files import staged_path
from deepfm_model.spec.raw_data import EVENT_COLUMNS, MOVIE_COLUMNS, USER_COLUMNS, RawData, check_columns
from feature_repo import daily_stats, fresh_features, negatives, raw_source, spark_engine, sql
from feature_repo.raw_source import RawSource
from feature_repo.source_files import PARTITIONED_VIEWS, source_file
from feature_repo.spark_engine import SparkConnection, update_fresh

logger = logging.getLogger(__name__)

# Profiles are static: one row per entity, stamped before any event so that every event sees it.
PROFILE_TIMESTAMP = pd.Timestamp("1990-01-01", tz="UTC")
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


def write_sources(
    raw: RawData | RawSource | duckdb.DuckDBPyConnection | SparkConnection, ds: DateLike, data_dir: Path
) -> dict[str, Path]:
    """Write the sources of every feature view for logical date `ds` into `data_dir`.

    The profile sources are rewritten whole (one row per entity); the stats sources are brought up to date day
    by day in DuckDB (`daily_stats.update`: only days that changed are aggregated), or on Spark when `raw` is a
    `spark_engine.SparkConnection` (the same SQL and fold, the same files). Every file is written under a
    temporary name and renamed into place.

    Args:
        raw: the raw tables, or a connection over them with the typed views (`raw_source.check`), DuckDB's or
            Spark's (`spark_engine.connect`); only events strictly before `ds` 00:00 UTC are used.
        ds: logical date of the run.
        data_dir: the repo's data folder (`source_files.data_dir(repo_dir)`), created if missing.

    Returns:
        Path of each view's source (a file, or the folder of a stats view's daily files), keyed by view name.
    """
    if not isinstance(raw, duckdb.DuckDBPyConnection | SparkConnection):
        with raw_source.connect(raw) as con:
            raw_source.create_views(con)
            return write_sources(con, ds, data_dir)
    con = raw
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    profiles = {
        USER_PROFILE_VIEW: user_profiles(con.execute("SELECT * FROM users").df()),
        MOVIE_PROFILE_VIEW: movie_profiles(con.execute("SELECT * FROM movies").df()),
    }
    paths = {}
    for view, table in profiles.items():
        paths[view] = data_dir / source_file(view)
        with staged_path(paths[view]) as staged:  # stamps in microseconds: Spark reads no nanosecond timestamps
            table.astype({EVENT_TIMESTAMP: "datetime64[us, UTC]"}).to_parquet(staged, index=False)
    days = daily_stats.day_fingerprints(con, data_cutoff(ds))
    recomputed = daily_stats.update(con, data_cutoff(ds), data_dir, days)
    logger.info("Stats sources for %s: days aggregated per view %s", ds, recomputed)
    fold = update_fresh if isinstance(con, SparkConnection) else fresh_features.update
    folded = fold(con, data_cutoff(ds), data_dir, PROFILE_TIMESTAMP, days)
    logger.info("Fresh features log for %s: %d day(s) folded", ds, folded)
    views = [*(spec.view for spec in daily_stats.STATS_VIEWS), USER_FRESH_VIEW]
    return {**paths, **{view: data_dir / view for view in views}}


def write_labelled_events(con: duckdb.DuckDBPyConnection | SparkConnection, ds: DateLike, path: Path) -> int:
    """Write the labelled events before `ds` (the Feast entity frame of `labelled_events`) to parquet; their count.

    The engine (DuckDB, or Spark's `SparkConnection`) sorts them by event_timestamp, user_id, movie_id (out of
    core) so that a reader can take them in chunks in time order.
    """
    query = (
        f"SELECT {USER_KEY}, {MOVIE_KEY}, {EVENT_TIMESTAMP}, {RATING}, "
        f"CAST({RATING} >= {POSITIVE_RATING} AS BIGINT) AS {LABEL} FROM events "
        f"WHERE {EVENT_TIMESTAMP} < {sql.instant(data_cutoff(ds))} ORDER BY {EVENT_TIMESTAMP}, {USER_KEY}, {MOVIE_KEY}"
    )
    with staged_path(path) as staged:
        con.execute(f"COPY ({query}) TO {sql.literal(staged)} (FORMAT parquet)")
    return pq.ParquetFile(path).metadata.num_rows


def write_sampled(con: duckdb.DuckDBPyConnection | SparkConnection, events_path: Path, per_event: int, seed: int,
                  path: Path, max_rows: int | None = None) -> negatives.SamplingRecord:  # fmt: skip
    """Sample the unrated movies of the labelled events at `events_path` (`negatives`) into `path`, drawn from the
    `movies` view's catalogue: in this process, or on Spark when `con` is Spark's (the same rows)."""
    catalogue = con.execute(f"SELECT {MOVIE_KEY} FROM movies ORDER BY {MOVIE_KEY}").df()[MOVIE_KEY].to_numpy()
    if isinstance(con, SparkConnection):
        return spark_engine.write_sampled(con, events_path, catalogue, per_event, seed, path, max_rows)
    return negatives.write_sampled(events_path, catalogue, per_event, seed, path, max_rows)


def read_source(data_dir: Path, view: str) -> pd.DataFrame:
    """The source table of `view` under `data_dir`, daily files concatenated; stats sorted by time, then key."""
    path = Path(data_dir) / (view if view in PARTITIONED_VIEWS else source_file(view))
    table = pd.read_parquet(path)
    table[EVENT_TIMESTAMP] = table[EVENT_TIMESTAMP].astype("datetime64[ns, UTC]")
    if view not in PARTITIONED_VIEWS:
        return table
    key = USER_KEY if USER_KEY in table.columns else MOVIE_KEY
    return table.sort_values([EVENT_TIMESTAMP, key], kind="stable").reset_index(drop=True)


def _check_view_columns(table: pd.DataFrame, view: str) -> None:
    expected = {f.name for f in view_features(view)}
    actual = set(table.columns) - {USER_KEY, MOVIE_KEY, EVENT_TIMESTAMP}
    if actual != expected:
        raise ValueError(
            f"Source of view `{view}` must have the spec's features {sorted(expected)}. Received: {sorted(actual)}"
        )
