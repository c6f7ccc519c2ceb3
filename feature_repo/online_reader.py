"""The fast online read of ranking: one user's rows read once per call, the movies' rows kept in process.

`OnlineFeatureReader(store)(user_id, movie_ids)` returns what `store.online_features(store, user_id, movie_ids)`
returns, as columns instead of a frame; it is what `serving.ranking.Ranker` takes as its feature reader and what the
pipeline's skew check (`skew.skew_report`) reads and verifies against the offline join:

    reader = OnlineFeatureReader(open_store("feature_repo"))
    Ranker(client, reader).rank("196", ["242", "302"])

How it differs from a `get_online_features` call of one row per candidate (the plain path):
- **User side, every call**: each user view of the feature service is read for the one user key, straight from
  the online store (the provider's `online_read`, which `get_online_features` calls per view too). Values written
  since the last call (a nightly materialization, or a push of fresh per-user features) are seen at once; a new
  per-user view added to the service is read the same way.
- **Movie side, in process**: the movie views change only when they are materialized, so a movie's rows are read
  once (the first time it is a candidate, or by `preload`) and kept as numpy columns. They are dropped and read
  again when the movie views' materialization moves: the registry records every materialized interval on the
  view, and the reader compares them with those it loaded under, at most every `refresh_check_s` (1 s). It asks
  the store's cached registry, as `get_online_features` does: a file registry is re-read once its file changes
  (Feast checks the modification time), so a materialization by another process shows within `refresh_check_s`;
  a SQL registry is re-read after `registry.cache_ttl_seconds`. `refresh()` drops the movies at once. Values
  written to the movie views other than by `materialize` (`write_to_online_store`) are not seen until then.
- **On-demand affinity**: `transformations.affinity_values`, the formula of the registered on-demand view, on the
  cached genre indicators of the candidates and the user's per-genre counts broadcast over them.
- **Columns**: numpy arrays gathered by candidate position; no row is built in Python.

Unknown ids read as missing, as on the plain path: numerics NaN, strings `None` (the ranker sends them through the
model's out-of-vocabulary and mean paths). A store that cannot be reached raises `OnlineStoreError` naming it
within `timeout_s` (Redis: the connection's socket timeouts).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureStore, FeatureView
from feast.infra.provider import get_provider
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type

from deepfm_model.spec.features import (
    FEATURE_SERVICE,
    FEATURES,
    FEATURES_BY_NAME,
    GENRE_AFFINITY_VIEW,
    GENRES,
    MOVIE_KEY,
    USER_GENRE_COUNTS,
    USER_GENRE_POSITIVES,
    USER_KEY,
    Kind,
)
from feature_repo.store import service_plan  # the service's views by join key, as training reads them
from feature_repo.transformations import AFFINITY_FEATURE, affinity_values, genre_indicators, per_genre

log = logging.getLogger(__name__)

REDIS_TIMEOUT_OPTIONS = ("socket_connect_timeout", "socket_timeout")
_AFFINITY_INPUTS = ("genres", "user_pos_rate", USER_GENRE_COUNTS, USER_GENRE_POSITIVES)


class OnlineStoreError(RuntimeError):
    """The online store could not be read (unreachable, timed out, refused); the message names the store."""


@dataclass(frozen=True)
class _ViewRead:
    """One feature view of the service and the features read from it."""

    view: FeatureView
    features: tuple[str, ...]


@dataclass(frozen=True)
class _MovieTable:
    """The movies read so far: a row per movie id, every movie-side column, and the genre indicators."""

    index: dict[str, int]  # movie id -> row
    columns: dict[str, np.ndarray]  # feature name -> (movies,) float64 (NaN missing) or object (None missing)
    has_genre: np.ndarray  # (movies, genres) 0/1, `transformations.genre_indicators`
    known_genres: np.ndarray  # (movies,) bool, the movie's genres are not null


class OnlineFeatureReader:
    """Serving features of one user against candidate movies, equal to `store.online_features`, in columns.

    Args:
        store: the Feast store (objects applied, views materialized); its config chooses the online store.
        service_name: the feature service whose features are read.
        refresh_check_s: at most this often, the movie views' materialization is compared with the one the cached
            movies were read under.
        timeout_s: deadline of one online store read; for Redis, the socket connect and read timeouts of the
            reader's connection, unless its connection string sets them.
        max_cached_movies: the movie cache is dropped when it would grow past this many ids (unknown ids count).

    Thread-safe: a call reads an immutable snapshot of the movie cache; loads and refreshes swap it under a lock.
    """

    def __init__(
        self,
        store: FeatureStore,
        *,
        service_name: str = FEATURE_SERVICE,
        refresh_check_s: float = 1.0,
        timeout_s: float | None = 1.0,
        max_cached_movies: int = 1_000_000,
    ) -> None:
        if refresh_check_s < 0:
            raise ValueError(f"`refresh_check_s` must not be negative. Received: `refresh_check_s={refresh_check_s}`")
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"`timeout_s` must be positive. Received: `timeout_s={timeout_s}`")
        self.store = store
        self.refresh_check_s = refresh_check_s
        self.max_cached_movies = max_cached_movies
        self._config = _with_timeouts(store.config, timeout_s)
        self._provider = get_provider(self._config)  # its own connection, with the deadline above
        self.store_name = describe_online_store(self._config)
        groups, on_demand = service_plan(store, store.get_feature_service(service_name))
        unsupported = sorted({view.name for view in on_demand} - {GENRE_AFFINITY_VIEW})
        if unsupported:
            raise ValueError(f"On-demand views {unsupported} of `{service_name}` have no online-reader implementation")
        self._affinity = bool(on_demand)
        self._user_views = _view_reads(store, groups.pop((USER_KEY,), []))
        self._movie_views = _view_reads(store, groups.pop((MOVIE_KEY,), []))
        if groups:
            raise ValueError(f"Views joined on {sorted(groups)} are neither user nor movie views")
        user_side = {name for read in self._user_views for name in read.features}
        movie_side = {name for read in self._movie_views for name in read.features}
        if self._affinity and not set(_AFFINITY_INPUTS) <= user_side | movie_side:
            raise ValueError(f"`{service_name}` lacks inputs of `{GENRE_AFFINITY_VIEW}`")
        self._user_features = [f for f in FEATURES if f.name in user_side]  # model inputs, in spec order
        self._movie_features = [f for f in FEATURES if f.name in movie_side]
        self._lock = threading.Lock()
        self._movies = _empty_table(self._movie_features)
        self._watermark = self._materialization()
        self._checked_at = time.monotonic()

    def __call__(self, user_id: str, movie_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Features of `user_id` against each of `movie_ids`, one row per movie in the given order.

        Returns:
            Columns `features.FEATURE_NAMES` (those of the service), as `store.online_features` types them:
            numerics float64 with NaN where missing, the others object arrays of `str` with `None` where missing.

        Raises:
            OnlineStoreError: the online store could not be read; nothing is returned.
        """
        user_id = str(user_id)
        movie_ids = [str(m) for m in movie_ids]
        user = self._read_user(user_id)
        movies = self._movies_for(movie_ids)
        rows = np.fromiter(map(movies.index.__getitem__, movie_ids), dtype=np.intp, count=len(movie_ids))  # (n,)
        n = len(movie_ids)
        columns: dict[str, np.ndarray] = {USER_KEY: np.full(n, user_id, dtype=object)}
        columns[MOVIE_KEY] = np.array(movie_ids, dtype=object)
        for feature in self._user_features:
            value = user[feature.name]
            columns[feature.name] = (np.full(n, np.nan if value is None else float(value), dtype=np.float64)
                                     if feature.kind is Kind.NUMERIC else np.full(n, value, dtype=object))  # fmt: skip
        for feature in self._movie_features:
            columns[feature.name] = movies.columns[feature.name][rows]
        if self._affinity:
            counts = per_genre([user[USER_GENRE_COUNTS]])  # (1, genres)
            positives = per_genre([user[USER_GENRE_POSITIVES]])  # (1, genres)
            columns[AFFINITY_FEATURE] = affinity_values(
                movies.has_genre[rows], movies.known_genres[rows], counts, positives, _float(user["user_pos_rate"])
            )
        return {f.name: columns[f.name] for f in FEATURES if f.name in columns}

    def preload(self, movie_ids: Iterable[str]) -> None:
        """Read these movies into the cache now (say the whole catalogue at start-up), not on first use."""
        self._movies_for([str(m) for m in movie_ids])

    def refresh(self) -> None:
        """Drop the cached movies; the next calls read them again."""
        with self._lock:
            self._movies = _empty_table(self._movie_features)
            self._watermark = self._materialization()
            self._checked_at = time.monotonic()

    @property
    def cached_movies(self) -> int:
        """Movie ids in the cache (unknown ids included)."""
        return len(self._movies.index)

    def _read_user(self, user_id: str) -> dict[str, Any]:
        """The user's value of every user-side feature (None where the store has none): one read per view."""
        key = EntityKeyProto(join_keys=[USER_KEY], entity_values=[ValueProto(string_val=user_id)])
        values: dict[str, Any] = {}
        for read in self._user_views:
            row = self._online_read(read, [key])[0][1]  # (event timestamp, {feature: value}) of the one key
            for name in read.features:
                values[name] = feast_value_type_to_python_type(row[name]) if row and name in row else None
        return values

    def _movies_for(self, movie_ids: list[str]) -> _MovieTable:
        """The cache snapshot holding every id of `movie_ids`, reading the missing ones (and refreshing) first."""
        now = time.monotonic()
        if now - self._checked_at >= self.refresh_check_s:
            self._check_materialization(now)
        movies, watermark = self._movies, self._watermark
        missing = list(dict.fromkeys(m for m in movie_ids if m not in movies.index))
        if not missing:
            return movies
        loaded = self._read_movies(missing)
        with self._lock:
            if self._watermark != watermark:  # materialized again while reading: serve this call, keep nothing
                return _appended(movies, missing, loaded)
            if len(self._movies.index) + len(missing) > self.max_cached_movies:
                self._movies = _empty_table(self._movie_features)
            self._movies = _appended(self._movies, missing, loaded)
            return self._movies

    def _read_movies(self, movie_ids: list[str]) -> dict[str, np.ndarray]:
        """Columns of the movie-side features of `movie_ids`: one batched read per movie view."""
        keys = [EntityKeyProto(join_keys=[MOVIE_KEY], entity_values=[ValueProto(string_val=m)]) for m in movie_ids]
        columns: dict[str, np.ndarray] = {}
        for read in self._movie_views:
            rows = self._online_read(read, keys)
            for name in read.features:
                values = [feast_value_type_to_python_type(row[name]) if row and name in row else None
                          for _, row in rows]  # fmt: skip
                feature = FEATURES_BY_NAME.get(name)
                if feature is not None and feature.kind is Kind.NUMERIC:
                    columns[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
                else:
                    columns[name] = np.array([None if v is None else str(v) for v in values], dtype=object)
        return columns

    def _online_read(self, read: _ViewRead, keys: list[EntityKeyProto]) -> list:
        try:
            return self._provider.online_read(
                config=self._config, table=read.view, entity_keys=keys, requested_features=list(read.features)
            )
        except Exception as error:  # any failure of the store's client (socket, timeout, driver) is the store's
            raise OnlineStoreError(f"Could not read `{read.view.name}` from the {self.store_name}: "
                                   f"{type(error).__name__}: {error}") from error  # fmt: skip

    def _check_materialization(self, now: float) -> None:
        watermark = self._materialization()
        with self._lock:
            self._checked_at = now
            if watermark != self._watermark:
                log.info("Movie views materialized again (%s); dropping %d cached movies",
                         watermark, len(self._movies.index))  # fmt: skip
                self._movies = _empty_table(self._movie_features)
                self._watermark = watermark

    def _materialization(self) -> tuple:
        """What the registry records of the movie views' materialized intervals (the store's cached registry)."""
        views = (self.store.get_feature_view(read.view.name, allow_registry_cache=True) for read in self._movie_views)
        return tuple((view.name, tuple(view.materialization_intervals)) for view in views)


def describe_online_store(config: Any) -> str:
    """The online store in words, for errors: type, where it is, and the Feast project (Redis's key suffix)."""
    online = config.online_store
    where = getattr(online, "connection_string", None) or getattr(online, "path", None) or ""
    host = where.split(",", 1)[0] if online.type == "redis" else where  # no password in a message
    return f"{online.type} online store {host} (Feast project {config.project!r})".replace("  ", " ")


def _with_timeouts(config: Any, timeout_s: float | None) -> Any:
    """`config` with Redis socket timeouts of `timeout_s` added to the connection string, unless it sets them."""
    online = dict(config.online_config) if isinstance(config.online_config, dict) else None
    if timeout_s is None or online is None or online.get("type") != "redis":
        return config
    connection = online.get("connection_string", "localhost:6379")
    options = [f"{name}={timeout_s}" for name in REDIS_TIMEOUT_OPTIONS if f"{name}=" not in connection]
    online["connection_string"] = ",".join([connection, *options])
    return config.model_copy(update={"online_config": online})


def _view_reads(store: FeatureStore, refs: list[str]) -> list[_ViewRead]:
    """`view:feature` references grouped by view, in first-seen order."""
    by_view: dict[str, list[str]] = {}
    for ref in refs:
        view, name = ref.split(":", 1)
        by_view.setdefault(view, []).append(name)
    return [_ViewRead(store.get_feature_view(view), tuple(names)) for view, names in by_view.items()]


def _empty_table(features: list) -> _MovieTable:
    columns = {f.name: np.empty(0, dtype=np.float64 if f.kind is Kind.NUMERIC else object) for f in features}
    return _MovieTable({}, columns, np.zeros((0, len(GENRES))), np.zeros(0, dtype=bool))


def _appended(table: _MovieTable, movie_ids: list[str], loaded: dict[str, np.ndarray]) -> _MovieTable:
    """A new table: `table`'s rows, then those of `movie_ids` (ids already in `table` keep their first row)."""
    new = [i for i, m in enumerate(movie_ids) if m not in table.index]
    if not new:
        return table
    index = dict(table.index)
    index.update((movie_ids[i], len(table.index) + j) for j, i in enumerate(new))
    columns = {name: np.concatenate([values, loaded[name][new]]) for name, values in table.columns.items()}
    has_genre, known_genres = table.has_genre, table.known_genres
    if "genres" in loaded:
        genres = pd.Series(loaded["genres"][new], dtype=object)
        has_genre = np.concatenate([has_genre, genre_indicators(genres).reshape(len(new), len(GENRES))])
        known_genres = np.concatenate([known_genres, genres.notna().to_numpy()])
    return _MovieTable(index, columns, has_genre, known_genres)


def _float(value: Any) -> float:
    return np.nan if value is None else float(value)
