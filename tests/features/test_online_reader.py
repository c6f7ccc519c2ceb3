"""The fast online reader returns what `store.online_features` (the skew-checked read) returns, on SQLite and Redis."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pandas as pd
import pytest

from deepfm_model.spec.dates import data_cutoff, last_data_day
from deepfm_model.spec.features import FEATURE_NAMES, MOVIE_PROFILE_VIEW, MOVIE_STATS_VIEW
from feature_repo import store
from feature_repo.online_reader import OnlineFeatureReader, OnlineStoreError

from .conftest import DS, redis_repo, repo_with


def cases(raw) -> list[tuple[str, list[str]]]:
    """(user, candidates) pairs: known users, an unknown user, unknown movies among known ones, a repeated id."""
    rng = np.random.default_rng(1)
    movies = [str(m) for m in rng.choice(raw.movies["movie_id"], 25, replace=False)]
    users = [str(u) for u in rng.choice(raw.users["user_id"], 3, replace=False)]
    return [
        *((user, movies) for user in users),
        ("no-such-user", movies[:5]),
        (users[0], [movies[0], "no-such-movie", movies[1], movies[0], "another-unknown"]),
        ("no-such-user", ["no-such-movie"]),
        (users[1], movies[:1]),
    ]


def assert_reader_equals_online_features(feature_store, reader: OnlineFeatureReader, raw) -> None:
    for user_id, movie_ids in cases(raw):
        fast = pd.DataFrame(reader(user_id, movie_ids))
        plain = store.online_features(feature_store, user_id, movie_ids)
        pd.testing.assert_frame_equal(fast, plain, check_exact=True)
        assert list(fast.columns) == list(FEATURE_NAMES)


def test_reader_equals_online_features_on_sqlite(feature_store, raw):
    store.materialize(feature_store, last_data_day(DS), data_cutoff(DS))
    reader = OnlineFeatureReader(feature_store)
    assert_reader_equals_online_features(feature_store, reader, raw)
    assert_reader_equals_online_features(feature_store, reader, raw)  # now from the movie cache


def test_reader_equals_online_features_on_redis(raw, tmp_path):
    with redis_repo(raw, DS, tmp_path) as feature_store:
        store.materialize(feature_store, last_data_day(DS), data_cutoff(DS))
        assert_reader_equals_online_features(feature_store, OnlineFeatureReader(feature_store), raw)


def test_unknown_ids_read_as_missing(feature_store):
    store.materialize(feature_store, last_data_day(DS), data_cutoff(DS))
    columns = OnlineFeatureReader(feature_store)("no-such-user", ["no-such-movie"])
    assert columns["user_id"].tolist() == ["no-such-user"] and columns["movie_id"].tolist() == ["no-such-movie"]
    assert columns["gender"].tolist() == [None] and columns["genres"].tolist() == [None]
    assert np.isnan(columns["age"]).all() and np.isnan(columns["user_genre_affinity"]).all()


def test_movies_are_read_once_then_from_the_cache(feature_store, raw):
    store.materialize(feature_store, last_data_day(DS), data_cutoff(DS))
    reader = OnlineFeatureReader(feature_store, refresh_check_s=3600)
    reads: list[tuple[str, int]] = []
    online_read = reader._provider.online_read

    def counting(config, table, entity_keys, requested_features=None):
        reads.append((table.name, len(entity_keys)))
        return online_read(config=config, table=table, entity_keys=entity_keys, requested_features=requested_features)

    reader._provider.online_read = counting
    user_id, movie_ids = cases(raw)[0]
    reader(user_id, movie_ids)
    movie_views = {MOVIE_PROFILE_VIEW, MOVIE_STATS_VIEW}
    assert sorted(n for n, _ in reads if n in movie_views) == sorted(movie_views)
    assert all(keys == 1 for name, keys in reads if name not in movie_views)  # the user: one key per view
    reads.clear()
    reader(user_id, movie_ids[:10])
    assert reads and not {n for n, _ in reads} & movie_views
    assert reader.cached_movies == len(movie_ids)


def test_cached_movies_follow_a_new_materialization(raw, tmp_path):
    feature_store = repo_with(raw, DS, tmp_path)
    earlier = data_cutoff(DS) - pd.Timedelta(days=4)
    store.materialize(feature_store, earlier - pd.Timedelta(days=1), earlier)
    reader = OnlineFeatureReader(feature_store, refresh_check_s=0)
    user_id, movie_ids = cases(raw)[0]
    before = reader(user_id, movie_ids)
    store.materialize(feature_store, last_data_day(DS), data_cutoff(DS))
    after = pd.DataFrame(reader(user_id, movie_ids))
    pd.testing.assert_frame_equal(after, store.online_features(feature_store, user_id, movie_ids), check_exact=True)
    assert not np.array_equal(before["movie_rating_count"], after["movie_rating_count"].to_numpy())


def _refusing_port() -> int:
    with socket.socket() as probe:  # bound, then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _queued_connections(listening: socket.socket) -> int:
    """How many connections reached `listening` (the kernel accepted them; nobody answered): drains its backlog."""
    listening.setblocking(False)
    count = 0
    while True:
        try:
            connection, _ = listening.accept()
        except BlockingIOError:
            return count
        connection.close()
        count += 1


HANG_DEADLINE_S = 30.0  # only a read with no socket timeout gets near it: the test then fails instead of hanging


@pytest.mark.parametrize(("answers", "cause"), [(False, "ConnectionError"), (True, "TimeoutError")],
                         ids=["refused", "never_answers"])  # fmt: skip
def test_unreachable_redis_fails_fast_naming_the_store(feature_store, answers, cause):
    """One attempt, no retry: a refused connection fails at once, a server that never answers fails when the
    socket timeout of `timeout_s` fires (not on the blocking read's default of forever)."""
    import redis

    silent = socket.socket()  # accepts connections (the kernel does) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1] if answers else _refusing_port()
    failures: list[BaseException] = []
    reading = None
    try:
        online_store = {"type": "redis", "connection_string": f"127.0.0.1:{port}"}
        redis_store = store.open_store(feature_store.repo_path, online_store=online_store)
        reader = OnlineFeatureReader(redis_store, timeout_s=0.3)

        def read() -> None:
            try:
                reader("1", ["1", "2"])
            except BaseException as error:  # noqa: BLE001  (handed to the test thread)
                failures.append(error)

        reading = threading.Thread(target=read, name="unreachable-read", daemon=True)
        reading.start()
        reading.join(HANG_DEADLINE_S)
        assert not reading.is_alive(), f"the read of an unreachable store still runs after {HANG_DEADLINE_S:.0f} s"
        assert len(failures) == 1 and isinstance(failures[0], OnlineStoreError), failures
        assert f"redis online store 127.0.0.1:{port} " in str(failures[0])
        assert type(failures[0].__cause__) is getattr(redis.exceptions, cause), repr(failures[0].__cause__)
        if answers:
            assert _queued_connections(silent) == 1  # one connection, no retry
    finally:
        silent.close()
        if reading is not None:
            reading.join(HANG_DEADLINE_S)  # after a failure above: closing the socket ends a read left waiting on it


def test_bad_arguments_raise(feature_store):
    with pytest.raises(ValueError, match="refresh_check_s"):
        OnlineFeatureReader(feature_store, refresh_check_s=-1)
    with pytest.raises(ValueError, match="timeout_s"):
        OnlineFeatureReader(feature_store, timeout_s=0)
