"""The synthetic generator: `generate` unchanged, and `write_folder` (the command line) writes a source folder in
chunks, with exact counts, no repeated event, time order and the planted structure."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from deepfm_model import synthetic
from deepfm_model.spec.raw_data import EVENT_COLUMNS, MOVIE_COLUMNS, USER_COLUMNS


def digest(frame: pd.DataFrame) -> str:
    return hashlib.sha1(pd.util.hash_pandas_object(frame, index=True).values.tobytes()).hexdigest()[:12]


def test_generate_keeps_its_tables():
    raw = synthetic.generate()
    assert [digest(t) for t in (raw.events, raw.users, raw.movies)] == ["5b439cbffd3a", "14ddc99fe51f", "7d18f97b01ec"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("source")
    counts = synthetic.main(["--events", "20k", "--users", "300", "--movies", "1e2", "--start", "1998-03-01",
                             "--days", "4", "--out", str(out), "--chunk-events", "3000"])  # fmt: skip
    assert counts == {"events": 20_000, "users": 300, "movies": 100}
    return out


def test_the_folder_has_the_raw_schema_and_exact_counts(folder):
    tables = {name: pd.read_parquet(folder / f"{name}.parquet") for name in ("events", "users", "movies")}
    assert tuple(tables["events"].columns) == EVENT_COLUMNS
    assert tuple(tables["users"].columns) == USER_COLUMNS
    assert tuple(tables["movies"].columns) == MOVIE_COLUMNS
    assert [len(t) for t in tables.values()] == [20_000, 300, 100]
    events = tables["events"]
    assert str(events["event_timestamp"].dt.tz) == "UTC"
    assert events["event_timestamp"].is_monotonic_increasing
    assert events["event_timestamp"].min() >= pd.Timestamp("1998-03-01", tz="UTC")
    assert events["event_timestamp"].max() < pd.Timestamp("1998-03-05", tz="UTC")
    assert set(events["user_id"]) <= set(tables["users"]["user_id"])
    assert set(events["movie_id"]) <= set(tables["movies"]["movie_id"])


def test_events_are_written_in_chunks_without_repeats(folder):
    assert pq.ParquetFile(folder / "events.parquet").metadata.num_row_groups >= 6  # 20k events / 3k a slice
    events = pd.read_parquet(folder / "events.parquet")
    assert not events.duplicated(["user_id", "movie_id", "event_timestamp"]).any()


def test_the_planted_structure_shows_in_the_ratings(folder):
    events = pd.read_parquet(folder / "events.parquet")
    users = pd.read_parquet(folder / "users.parquet").set_index("user_id")
    movies = pd.read_parquet(folder / "movies.parquet").set_index("movie_id")
    young = events["user_id"].map(users["age"]).to_numpy() < 30
    action = events["movie_id"].map(movies["genres"]).str.contains("Action").to_numpy()
    ratings = events["rating"].to_numpy()
    assert ratings[young & action].mean() > ratings[~(young & action)].mean() + 0.3  # the age x genre effect
    assert 0.4 < (ratings >= 4).mean() < 0.85
    shares = events["movie_id"].value_counts(normalize=True)
    assert shares.iloc[0] < 0.2 < shares.iloc[:20].sum()  # a long tail, not one movie taking every event


def test_the_same_arguments_give_the_same_files(tmp_path):
    for name in ("a", "b"):
        synthetic.write_folder(tmp_path / name, 2_000, 50, 20, days=2, seed=3, chunk_events=500)
    for table in ("events", "users", "movies"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / f"{table}.parquet"),
                                      pd.read_parquet(tmp_path / "b" / f"{table}.parquet"))  # fmt: skip


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match=r"`n_events` must be positive. Received: `n_events=0`"):
        synthetic.write_folder(None, 0, 10, 10)
    with pytest.raises(ValueError, match="exceeds the distinct"):
        synthetic.write_folder(None, 10**6, 1, 1, days=1)
    assert [synthetic.parse_count(text) for text in ("100000", "1e7", "100k", "10M")] == [10**5, 10**7, 10**5, 10**7]
    assert np.isclose(synthetic.rank_popularity(np.array([5.0, 1.0, 9.0]), 1.0).sum(), 1.0)
