"""Raw sources: a folder of parquet or CSV tables is read through DuckDB, and each kind of bad table is refused
with an error that names the table, the column and sample rows."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from deepfm_model.synthetic import write_folder
from feature_repo import raw_source
from feature_repo.raw_source import RawSource, RawSourceError

NOW = pd.Timestamp("2026-01-01", tz="UTC")


def generated_tables(folder: Path) -> dict[str, pd.DataFrame]:
    """The small generated source the bad-table cases corrupt: 600 events of 40 users and 30 movies, 5 days."""
    write_folder(folder, n_events=600, n_users=40, n_movies=30, days=5, seed=2)
    return {name: pd.read_parquet(folder / f"{name}.parquet") for name in raw_source.TABLES}


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    return generated_tables(tmp_path_factory.mktemp("generated"))


def write_tables(folder: Path, tables: dict[str, pd.DataFrame], form: str = "parquet") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        if form == "parquet":
            table.to_parquet(folder / f"{name}.parquet", index=False)
        elif form == "csv":
            table.to_csv(folder / f"{name}.csv", index=False)
        else:  # a folder of parquet files per table, as a daily export would be
            (folder / name).mkdir()
            for i, part in enumerate((table.iloc[::2], table.iloc[1::2])):
                part.to_parquet(folder / name / f"part-{i}.parquet", index=False)
    return folder


def checked(folder: Path) -> dict[str, int]:
    with raw_source.connect(RawSource.from_folder(folder)) as con:
        return raw_source.check(con, now=NOW)


@pytest.mark.parametrize("form", ["parquet", "csv", "folders"])
def test_a_good_folder_passes_in_every_form(tables, tmp_path, form):
    counts = checked(write_tables(tmp_path / form, tables, form))
    assert counts == {name: len(table) for name, table in tables.items()}


def test_typed_views_follow_the_schema(tables, tmp_path):
    users = tables["users"].assign(user_id=tables["users"]["user_id"].astype(int))  # integer ids are read as text
    events = tables["events"].assign(user_id=tables["events"]["user_id"].astype(int))
    with raw_source.connect(RawSource.from_folder(write_tables(tmp_path, {**tables, "users": users,
                                                                          "events": events}))) as con:  # fmt: skip
        raw_source.check(con, now=NOW)
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_name = 'events'").fetchall())  # fmt: skip
        first = con.execute("SELECT user_id FROM events LIMIT 1").fetchone()[0]
    assert types == {"user_id": "VARCHAR", "movie_id": "VARCHAR", "rating": "BIGINT",
                     "event_timestamp": "TIMESTAMP WITH TIME ZONE"}  # fmt: skip
    assert isinstance(first, str)


def test_a_missing_table_names_it_and_the_forms_looked_for(tables, tmp_path):
    folder = write_tables(tmp_path, {k: v for k, v in tables.items() if k != "movies"})
    with pytest.raises(FileNotFoundError, match=r"no table `movies`: expected movies\.parquet, movies\.csv"):
        RawSource.from_folder(folder)


def _events(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[dict], dict]:
    return lambda tables: {**tables, "events": change(tables["events"].copy())}


def _set(frame: pd.DataFrame, rows: list[int], column: str, value) -> pd.DataFrame:
    frame[column] = frame[column].astype(object) if value is None else frame[column]
    frame.loc[frame.index[rows], column] = value
    return frame


BAD_TABLES: dict[str, tuple[Callable[[dict], dict], list[str]]] = {
    "missing column": (
        _events(lambda e: e.drop(columns=["rating"])),
        [r"events: lacks column\(s\) \['rating'\]; it has \['user_id', 'movie_id', 'event_timestamp'\]"],
    ),
    "wrong type": (
        _events(lambda e: e.assign(event_timestamp=e["event_timestamp"].astype(str))),
        [r"events\.event_timestamp: has type VARCHAR, must be one of \['TIMESTAMP'.*e\.g\. \['1998-01-0"],
    ),
    "fractional ratings": (
        _events(lambda e: e.assign(rating=e["rating"] - 0.5)),
        [r"events\.rating: has type DOUBLE, must be one of \['TINYINT'.*e\.g\. \[\d\.5"],
    ),
    "out-of-range ratings": (
        _events(lambda e: _set(_set(e, [3], "rating", 0), [7], "rating", 9)),
        [r"events\.rating: 2 of 600 rows outside 1\.\.5, e\.g\. \[\{'user_id': '\d+', 'movie_id': '\d+', 'rating': 0"],
    ),
    "null keys": (
        _events(lambda e: _set(e, [0, 1], "movie_id", None)),
        [r"events\.movie_id: 2 of 600 rows null, e\.g\. \[\{'user_id': '\d+', 'movie_id': None"],
    ),
    "null profile key": (
        lambda t: {**t, "users": _set(t["users"].copy(), [5], "user_id", None)},
        [
            r"users\.user_id: 1 of 40 rows null, e\.g\. \[\{'user_id': None, 'age': ",
            r"events\.user_id: \d+ of 600 rows not a user_id of `users`, e\.g\. \[\{'user_id': '6'",
        ],  # its events
    ),  # fmt: skip
    "timestamps in the future": (
        _events(lambda e: _set(e, [-1], "event_timestamp", pd.Timestamp("2031-05-01", tz="UTC"))),
        [
            r"events\.event_timestamp: 1 of 600 rows in the future \(after [^)]+\), "
            r"e\.g\. \[\{.*'event_timestamp': '2031-05-01T00:00:00\+00:00'\}\]"
        ],
    ),  # fmt: skip
    "unknown ids in events": (
        _events(lambda e: _set(_set(e, [2], "user_id", "ghost"), [4], "movie_id", "no-such-movie")),
        [
            r"events\.user_id: 1 of 600 rows not a user_id of `users`, e\.g\. \[\{'user_id': 'ghost'",
            r"events\.movie_id: 1 of 600 rows not a movie_id of `movies`, e\.g\. \[\{'user_id': '\d+', "
            r"'movie_id': 'no-such-movie'",
        ],
    ),  # fmt: skip
    "repeated events": (
        _events(lambda e: pd.concat([e, e.head(2)], ignore_index=True)),
        [r"events\.user_id, movie_id, event_timestamp: 2 keys in 4 events repeat, e\.g\. \[\{'user_id'"],
    ),
    "profile values outside the spec": (
        lambda t: {
            **t,
            "users": _set(_set(t["users"].copy(), [0], "gender", "X"), [1], "age", 200),
            "movies": _set(t["movies"].copy(), [2], "genres", "Action|Space Opera"),
        },
        [
            r"users\.gender: 1 of 40 rows outside the allowed values, e\.g\. \[\{.*'gender': 'X'",
            r"users\.age: 1 of 40 rows outside 1\.\.120, e\.g\. \[\{.*'age': 200\.0",
            r"movies\.genres: 1 of 30 rows outside the allowed values, e\.g\. \[\{.*Space Opera",
        ],
    ),
    "repeated profile": (
        lambda t: {**t, "movies": pd.concat([t["movies"], t["movies"].tail(1)], ignore_index=True)},
        [r"movies\.movie_id: 1 keys in 2 rows repeat, e\.g\. \[\{'movie_id': '30', 'times': 2\}\]"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_TABLES))
def test_a_bad_table_is_refused_naming_table_column_and_rows(tables, tmp_path, case):
    corrupt, patterns = BAD_TABLES[case]
    with pytest.raises(RawSourceError) as failure:
        checked(write_tables(tmp_path, corrupt(tables)))
    message = str(failure.value)
    assert message.startswith("The raw source failed")
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in:\n{message}"
    assert len(failure.value.problems) == len(patterns), message


def test_tables_in_memory_take_the_same_checks(tables):
    from deepfm_model.spec.raw_data import RawData

    events = tables["events"].copy()
    events.loc[events.index[0], "rating"] = 7
    with raw_source.connect(RawData(events, tables["users"], tables["movies"])) as con:
        with pytest.raises(RawSourceError, match=r"events\.rating: 1 of 600 rows outside 1\.\.5"):
            raw_source.check(con, now=NOW)


def test_a_session_spills_into_a_folder_of_its_own_and_removes_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # DuckDB's default spill folder is `.tmp` under the working directory
    monkeypatch.setattr(raw_source, "MEMORY_LIMIT", "128MB")
    with raw_source.session() as con:
        spill = Path(con.execute("SELECT current_setting('temp_directory')").fetchone()[0])
        assert spill.is_dir() and not spill.is_relative_to(tmp_path)
        # A 400 MB table under a 128 MB limit must be offloaded: it holds, and its blocks go to the session's folder.
        con.execute("CREATE TABLE t AS SELECT range AS x, range * 2 AS y FROM range(25000000)")
        assert con.execute("SELECT count(*), sum(y) FROM t").fetchone() == (25_000_000, 25_000_000 * 24_999_999)
        assert any(spill.iterdir())
    assert not spill.exists()
    assert not any(tmp_path.iterdir())
