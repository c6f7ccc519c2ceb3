"""Feast batch sources: one parquet file per feature view, written by `feature_repo.ingest`.

Paths are relative: Feast resolves them against the repo directory (`FeatureStore(repo_path=...)`), so the
same definitions serve `feature_repo/` (its `data/` is git-ignored) and any temporary repo a test builds.
"""

from __future__ import annotations

from feast import FileSource

from deepfm_model.spec.features import (
    EVENT_TIMESTAMP,
    MOVIE_PROFILE_VIEW,
    MOVIE_STATS_VIEW,
    USER_GENRE_STATS_VIEW,
    USER_PROFILE_VIEW,
    USER_STATS_VIEW,
)

DATA_DIR_NAME = "data"  # under the repo directory; git-ignored


def source_file(view: str) -> str:
    """File name of the parquet source that feeds feature view `view`."""
    return f"{view}.parquet"


def _file_source(view: str, description: str) -> FileSource:
    return FileSource(
        name=f"{view}_source",
        path=f"{DATA_DIR_NAME}/{source_file(view)}",
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
