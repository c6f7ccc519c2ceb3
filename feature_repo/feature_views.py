"""Feast feature views: fields, entities and TTLs of the four views named in `deepfm_model.features`."""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64, String

from deepfm_model.features import (
    MOVIE_KEY,
    MOVIE_PROFILE_VIEW,
    MOVIE_STATS_VIEW,
    USER_KEY,
    USER_PROFILE_VIEW,
    USER_STATS_VIEW,
    Kind,
    view_features,
)
from feature_repo.entities import movie, user
from feature_repo.sources import (
    movie_profile_source,
    movie_stats_source,
    user_profile_source,
    user_stats_source,
)

# Profiles are static snapshots stamped at one early time: they never expire (a zero TTL means "forever").
PROFILE_TTL = timedelta(0)
# Stats rows are written at 00:00 UTC of every day the entity has events, and of the day after `ds` for
# serving, so the row an event needs is always less than a day old. A longer TTL would only hide a missing
# day behind a stale row; with one day a gap shows up as nulls, which validation stops.
STATS_TTL = timedelta(days=1)


def _fields(view: str, key: str) -> list[Field]:
    key_field = Field(name=key, dtype=String, description=f"Join key `{key}`.")
    return [key_field] + [
        Field(name=f.name, dtype=Float64 if f.kind is Kind.NUMERIC else String, description=f.description)
        for f in view_features(view)
    ]


def _feature_view(view: str, entity: Entity, key: str, source: FileSource, ttl: timedelta) -> FeatureView:
    return FeatureView(
        name=view,
        entities=[entity],
        schema=_fields(view, key),
        source=source,
        ttl=ttl,
        online=True,
        description=source.description,
    )


user_profile_fv = _feature_view(USER_PROFILE_VIEW, user, USER_KEY, user_profile_source, PROFILE_TTL)
movie_profile_fv = _feature_view(MOVIE_PROFILE_VIEW, movie, MOVIE_KEY, movie_profile_source, PROFILE_TTL)
user_stats_fv = _feature_view(USER_STATS_VIEW, user, USER_KEY, user_stats_source, STATS_TTL)
movie_stats_fv = _feature_view(MOVIE_STATS_VIEW, movie, MOVIE_KEY, movie_stats_source, STATS_TTL)

FEATURE_VIEWS: tuple[FeatureView, ...] = (user_profile_fv, movie_profile_fv, user_stats_fv, movie_stats_fv)
