"""Feast entities: the user and the movie, joined on string ids."""

from __future__ import annotations

from feast import Entity, ValueType

from deepfm_model.spec.features import MOVIE_KEY, USER_KEY

user = Entity(
    name="user",
    join_keys=[USER_KEY],
    value_type=ValueType.STRING,
    description="A MovieLens user; ids are strings everywhere (features.py).",
)

movie = Entity(
    name="movie",
    join_keys=[MOVIE_KEY],
    value_type=ValueType.STRING,
    description="A MovieLens movie; ids are strings everywhere (features.py).",
)
