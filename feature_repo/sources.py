"""Feast sources, written by `feature_repo.ingest`: a parquet file per profile view, a folder of daily parquet
files per stats view (`data/<view>/<YYYY-MM-DD>.parquet`, the rows stamped that day: `daily_stats`), and the push
source of the fresh per-user features, whose batch source is the folder of their log (`fresh_features`).

Rows reach the online store through the push source (`FeatureStore.push`, online only): Feast 0.67 writes a
push's offline copy (`PushMode.OFFLINE`) by reading and rewriting the whole parquet file of the batch source,
and cannot write to a folder's glob, so the log files are written beside Feast by `fresh_features`.

Paths are relative: Feast resolves them against the repo directory (`FeatureStore(repo_path=...)`), so the
same definitions serve `feature_repo/` (its `data/` is git-ignored) and any temporary repo a test builds.
"""

from __future__ import annotations

from feast import FileSource, PushSource

from deepfm_model.spec.features import (
    EVENT_TIMESTAMP,
    MOVIE_PROFILE_VIEW,
    MOVIE_STATS_VIEW,
    USER_EVENTS_PUSH,
    USER_FRESH_VIEW,
    USER_GENRE_STATS_VIEW,
    USER_PROFILE_VIEW,
    USER_STATS_VIEW,
)
from feature_repo.source_files import source_path


def _file_source(view: str, description: str) -> FileSource:
    return FileSource(
        name=f"{view}_source",
        path=source_path(view),
        timestamp_field=EVENT_TIMESTAMP,
        description=description,
    )


user_profile_source = _file_source(
    USER_PROFILE_VIEW, "Static user attributes, one row per user stamped at ingest.PROFILE_TIMESTAMP."
)
movie_profile_source = _file_source(
    MOVIE_PROFILE_VIEW, "Static movie attributes, one row per movie stamped at ingest.PROFILE_TIMESTAMP."
)
user_stats_source = _file_source(
    USER_STATS_VIEW, "Daily user rating aggregates over events strictly before 00:00 UTC of the row's day."
)
movie_stats_source = _file_source(
    MOVIE_STATS_VIEW, "Daily movie rating aggregates over events strictly before 00:00 UTC of the row's day."
)
user_genre_stats_source = _file_source(
    USER_GENRE_STATS_VIEW,
    "Daily per-user per-genre rating counts over events strictly before 00:00 UTC of the row's day.",
)
user_fresh_log_source = _file_source(
    USER_FRESH_VIEW,
    "The user's state after each instant of their rating events (stamped 1 microsecond after it), as pushed.",
)
user_events_push = PushSource(
    name=USER_EVENTS_PUSH,
    batch_source=user_fresh_log_source,
    description="Per-user features as of each rating event, pushed as events happen (feature_repo.stream).",
)
