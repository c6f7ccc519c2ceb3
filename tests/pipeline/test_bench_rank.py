"""`make bench-rank`'s parts: the Redis copy of an online store reads the same, the timings and their table."""

from __future__ import annotations

import types
import uuid

import numpy as np
import pandas as pd

from dags.ops.bench import rank as bench_rank
from dags.ops.bench.sample_model import sample_columns
from deepfm_model.spec.dates import data_cutoff, last_data_day
from deepfm_model.synthetic import generate
from feature_repo import store
from feature_repo.online_reader import OnlineFeatureReader
from tests.features.conftest import DS, repo_with
from tests.services import redis_address


def test_copied_redis_store_reads_as_the_sqlite_one(tmp_path):
    import redis

    raw = generate(seed=0)
    sqlite_store = repo_with(raw, DS, tmp_path / "sqlite")
    store.materialize(sqlite_store, last_data_day(DS), data_cutoff(DS))
    host, port = redis_address()
    project = f"deepfm_test_{uuid.uuid4().hex[:8]}"
    redis_store = store.open_store(
        sqlite_store.repo_path, project=project, registry=str(tmp_path / "redis_registry.db"),
        online_store={"type": "redis", "connection_string": f"{host}:{port}", "key_ttl_seconds": 3600},
    )  # fmt: skip
    users, movies = raw.users["user_id"].tolist(), raw.movies["movie_id"].tolist()
    try:
        store.apply(redis_store)
        assert bench_rank.copy_online_rows(sqlite_store, redis_store, {"user_id": users, "movie_id": movies}) > 0
        for user_id in [*users[:3], "no-such-user"]:
            pd.testing.assert_frame_equal(
                pd.DataFrame(OnlineFeatureReader(redis_store)(user_id, [*movies[:20], "no-such-movie"])),
                store.online_features(sqlite_store, user_id, [*movies[:20], "no-such-movie"]),
                check_exact=True,
            )
    finally:
        redis_store.teardown()
    assert not list(redis.Redis(host=host, port=port).scan_iter(f"*{project}"))


def test_measure_times_the_call_and_its_parts_and_the_table_shows_them():
    def read(user_id, movie_ids):
        return sample_columns(len(movie_ids))

    client = types.SimpleNamespace(predict=lambda columns: np.arange(len(columns["movie_id"]), dtype=np.float32))
    result = bench_rank.measure(client, read, ["1", "2"], [str(m) for m in range(50)], 10, calls=25, seed=0)
    assert result["calls"] == 25 and set(result["parts"]) == {"features", "predict", "rest"}
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    assert all(0 <= part["p50_ms"] <= result["p99_ms"] for part in result["parts"].values())

    results = {key: {"10": result} for key in ("rank", "plain", "rank_redis", "plain_redis")}
    results.update(
        machine={"cpu": "test cpu", "cpus": 2, "load_avg": [0.0, 0.0, 0.0]},
        model={"name": "deepfm", "version": 3},
        cold={"movies": 50, "preload_sqlite_ms": 1.0, "preload_redis_ms": 2.0},
        identical={"sqlite": {"identical": True, "requests": 5}},
        target={"met": {"rank": True, "rank_redis": True}},
    )
    table = bench_rank.format_table(results)
    assert "deepfm v3" in table and "test cpu" in table
    assert sum(line.startswith(("| fast", "| plain")) for line in table.splitlines()) == 4
