"""Feast feature views: fields, entities and TTLs of the views named in `deepfm_model.spec.features`.

Four batch views serve model inputs directly, and `user_fresh_fv`, fed by a push source, the per-user features
as of each event; `user_genre_stats_fv` serves the per-genre counts that the
on-demand view `genre_affinity_odfv` combines with the candidate movie's genres at request time. The affinity
depends on the (user, movie) pair, so it cannot be a batch view keyed by one entity without materializing every
pair; computed on request from two single-entity views it stays point-in-time correct (both inputs are) and
online equals offline (one function, `transformations.genre_affinity`, serves both).
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureView, Field, FileSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Float64, Int64, String

from deepfm_model.spec.features import (
    GENRE_AFFINITY_VIEW,
    MOVIE_KEY,
    MOVIE_PROFILE_VIEW,
    MOVIE_STATS_VIEW,
    USER_FRESH_STATE_COLUMNS,
    USER_FRESH_VIEW,
    USER_GENRE_STAT_COLUMNS,
    USER_GENRE_STATS_VIEW,
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
    user_events_push,
    user_genre_stats_source,
    user_profile_source,
    user_stats_source,
)
from feature_repo.transformations import genre_affinity

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
user_genre_stats_fv = FeatureView(
    name=USER_GENRE_STATS_VIEW,
    entities=[user],
    schema=[Field(name=USER_KEY, dtype=String, description=f"Join key `{USER_KEY}`.")]
    + [
        Field(
            name=column,
            dtype=Array(Float64),
            description=f"User's earlier {what}, one value per genre of `features.GENRES` in its order",
        )
        for column, what in zip(USER_GENRE_STAT_COLUMNS, ("ratings", "positive ratings"), strict=True)
    ],
    source=user_genre_stats_source,
    ttl=STATS_TTL,
    online=True,
    description=user_genre_stats_source.description,
)

# A user's fresh row stays in force until their next event; the log repeats it at 00:00 UTC of each day they
# have events and at the cutoff (`fresh_features`), so a one-day TTL always finds it and bounds the
# point-in-time join to a day of each user's rows instead of their whole history.
FRESH_TTL = STATS_TTL
_STATE_TYPES = (Int64, Int64, Int64, Int64, String)  # `USER_FRESH_STATE_COLUMNS`, in order
user_fresh_fv = FeatureView(
    name=USER_FRESH_VIEW,
    entities=[user],
    schema=_fields(USER_FRESH_VIEW, USER_KEY)
    + [
        Field(name=column, dtype=dtype, description="State the stream folds the next events onto.")
        for column, dtype in zip(USER_FRESH_STATE_COLUMNS, _STATE_TYPES, strict=True)
    ],
    source=user_events_push,
    ttl=FRESH_TTL,
    online=True,
    description=user_events_push.description,
)

FEATURE_VIEWS: tuple[FeatureView, ...] = (
    user_profile_fv, movie_profile_fv, user_stats_fv, movie_stats_fv, user_fresh_fv,
)  # fmt: skip


@on_demand_feature_view(
    name=GENRE_AFFINITY_VIEW,
    sources=[user_genre_stats_fv, user_stats_fv[["user_pos_rate"]], movie_profile_fv[["genres"]]],
    # No field descriptions: Feast 0.67 compares the declared schema with the one it infers by running the
    # function, description included, so a described field reads as "not found". The spec's text goes below.
    schema=[Field(name=f.name, dtype=Float64) for f in view_features(GENRE_AFFINITY_VIEW)],
    mode="pandas",
    description=" ".join(f"{f.name}: {f.description}" for f in view_features(GENRE_AFFINITY_VIEW)),
)
def genre_affinity_odfv(inputs: pd.DataFrame) -> pd.DataFrame:
    return genre_affinity(inputs)
