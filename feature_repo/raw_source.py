"""Raw sources: the `events`, `users` and `movies` tables read through DuckDB, and the checks they pass at ingest.

A source is either a folder of files (`DEEPFM_SOURCE=parquet`, `DEEPFM_SOURCE_DIR=<folder>`: a team's own data,
or `python -m deepfm_model.synthetic --out <folder>`) or tables already in memory (`RawData`: MovieLens, the small
synthetic set). Both are opened the same way (`connect`) and read by SQL, so no stage needs every event in one
pandas frame: DuckDB streams the files and spills to disk.

A folder holds each table as `<table>.parquet`, a folder `<table>/` of parquet files (any depth, e.g. one file
per day), `<table>.csv` or a folder `<table>/` of CSV files with a header row. Columns (`spec.raw_data`):

| table | column | type | rule |
| --- | --- | --- | --- |
| events | user_id | string or integer | never null; a `user_id` of `users` |
| events | movie_id | string or integer | never null; a `movie_id` of `movies` |
| events | rating | integer | never null; 1 to 5 |
| events | event_timestamp | timestamp (without a zone: UTC) | never null; not in the future |
| users | user_id | string or integer | never null; unique |
| users | age | number | |
| users | gender | string | |
| users | occupation | string | |
| users | zip_code | string (an integer loses leading zeros) | |
| movies | movie_id | string or integer | never null; unique |
| movies | title | string | |
| movies | release_year | number | may be null (unknown) |
| movies | genres | string, values joined by `\\|` | may be null or empty (no genre) |

Other columns are ignored; (user, movie, timestamp) must not repeat. `check` verifies all of this exactly, in
SQL over every row, before anything is written; a failure raises `RawSourceError` naming the table, the column
and sample rows. The code domains (gender, occupation, genre names), the age and year ranges and the day's
event count are the Great Expectations source suite's (`validation.validate_sources`), run on the profile tables
and a sample of events (`validation_sample`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from deepfm_model.spec.dates import to_utc
from deepfm_model.spec.features import EVENT_TIMESTAMP, MOVIE_KEY, RATING, USER_KEY
from deepfm_model.spec.raw_data import EVENT_COLUMNS, MOVIE_COLUMNS, USER_COLUMNS, RawData

TABLES = ("events", "users", "movies")
COLUMNS = {"events": EVENT_COLUMNS, "users": USER_COLUMNS, "movies": MOVIE_COLUMNS}
QUOTED_ROWS = 5  # rows quoted per failed check
MEMORY_LIMIT = "3GB"  # DuckDB's working memory per connection; beyond it, DuckDB spills to disk
THREADS = 2

_INTEGER = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")
_NUMBER = (*_INTEGER, "FLOAT", "DOUBLE", "DECIMAL")
_TIMESTAMP = ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "TIMESTAMPTZ_NS")
_ID = ("VARCHAR", *_INTEGER)
# The DuckDB types each column may arrive as, and what it is read as.
TYPES: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {
    "events": {USER_KEY: (_ID, "VARCHAR"), MOVIE_KEY: (_ID, "VARCHAR"), RATING: (_INTEGER, "BIGINT"),
               EVENT_TIMESTAMP: (_TIMESTAMP, "TIMESTAMPTZ")},
    "users": {USER_KEY: (_ID, "VARCHAR"), "age": (_NUMBER, "DOUBLE"), "gender": (("VARCHAR",), "VARCHAR"),
              "occupation": (("VARCHAR",), "VARCHAR"), "zip_code": (_ID, "VARCHAR")},
    "movies": {MOVIE_KEY: (_ID, "VARCHAR"), "title": (("VARCHAR",), "VARCHAR"), "release_year": (_NUMBER, "DOUBLE"),
               "genres": (("VARCHAR", '"NULL"'), "VARCHAR")},
}  # fmt: skip


class RawSourceError(ValueError):
    """A raw table breaks the source schema; the message names each table, column and sample rows."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"- {problem}" for problem in problems)
        super().__init__(f"The raw source failed {len(problems)} check(s); nothing was written:\n{lines}")


@dataclass(frozen=True)
class RawSource:
    """Where the three raw tables are read from: DuckDB table expressions (files) or frames in memory.

    Attributes:
        location: the folder, or `"memory"`; for messages.
        readers: per table, the SQL of a DuckDB table function over its files; empty for frames.
        frames: per table, the frame, for a source in memory; `None` for files.
    """

    location: str
    readers: dict[str, str]
    frames: RawData | None = None

    @classmethod
    def from_folder(cls, folder: str | Path) -> RawSource:
        """The source in `folder`; `FileNotFoundError` naming the table and the forms looked for if one is absent."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"Source folder {str(folder)!r} does not exist (`DEEPFM_SOURCE_DIR`)")
        return cls(str(folder), {table: _reader(folder, table) for table in TABLES})

    @classmethod
    def from_raw(cls, raw: RawData) -> RawSource:
        """A source over tables already in memory (MovieLens, the small synthetic set)."""
        return cls("memory", {}, raw)


def as_source(raw: RawData | RawSource) -> RawSource:
    """`raw` as a `RawSource` (tables in memory are wrapped, a source is returned as it is)."""
    return raw if isinstance(raw, RawSource) else RawSource.from_raw(raw)


def _reader(folder: Path, table: str) -> str:
    single_parquet, single_csv, subfolder = folder / f"{table}.parquet", folder / f"{table}.csv", folder / table
    if single_parquet.is_file():
        return f"read_parquet({_quote(single_parquet)})"
    if single_csv.is_file():
        return f"read_csv({_quote(single_csv)}, header = true)"
    if subfolder.is_dir():
        if any(subfolder.rglob("*.parquet")):
            return f"read_parquet({_quote(subfolder / '**' / '*.parquet')}, union_by_name = true)"
        if any(subfolder.rglob("*.csv")):
            return f"read_csv({_quote(subfolder / '**' / '*.csv')}, header = true, union_by_name = true)"
    raise FileNotFoundError(
        f"Source folder {str(folder)!r} has no table `{table}`: expected {table}.parquet, {table}.csv or a folder "
        f"{table}/ of parquet or CSV files"
    )


def _quote(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


@contextlib.contextmanager
def connect(raw: RawData | RawSource, temp_dir: Path | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection with views `raw_events`, `raw_users`, `raw_movies` over the tables as delivered.

    `check` then adds the typed views `events`, `users`, `movies` that every reader uses. Time zone UTC; memory
    bounded by `MEMORY_LIMIT`, spilling to `temp_dir` (DuckDB's default when `None`).
    """
    source = as_source(raw)
    con = duckdb.connect()
    try:
        con.execute(f"SET TimeZone = 'UTC'; SET memory_limit = '{MEMORY_LIMIT}'; SET threads = {THREADS}")
        if temp_dir is not None:
            con.execute(f"SET temp_directory = {_quote(temp_dir)}")
        for table in TABLES:
            if source.frames is not None:
                con.register(f"frame_{table}", getattr(source.frames, table))
                con.execute(f"CREATE VIEW raw_{table} AS SELECT * FROM frame_{table}")
            else:
                con.execute(f"CREATE VIEW raw_{table} AS SELECT * FROM {source.readers[table]}")
        yield con
    finally:
        con.close()


def read_movies(raw: RawData | RawSource) -> pd.DataFrame:
    """The `movies` table as delivered, its `movie_id` as a string (as the features name it): for display."""
    with connect(raw) as con:
        return con.sql(f"SELECT CAST({MOVIE_KEY} AS VARCHAR) AS {MOVIE_KEY}, title, release_year FROM raw_movies").df()


def check(con: duckdb.DuckDBPyConnection, now: dt.datetime | pd.Timestamp | None = None) -> dict[str, int]:
    """Check the raw tables of `connect` exactly, then create the typed views `events`, `users`, `movies`.

    Columns and types first (a table without them cannot be read further); then null keys, ratings outside
    1..5, timestamps after `now`, events of unknown users or movies, repeated keys and repeated events.

    Args:
        con: a connection from `connect`.
        now: no event may be stamped later (default: the wall clock).

    Returns:
        Row counts of the three tables.

    Raises:
        RawSourceError: every failed check, each naming its table, column and sample rows.
    """
    now = to_utc(now if now is not None else pd.Timestamp.now(tz="UTC"))
    problems = _schema_problems(con)
    if problems:
        raise RawSourceError(problems)
    create_views(con)
    checks = [
        *((table, key, f"{_name(key)} IS NULL", "null") for table, key in (("events", USER_KEY),
          ("events", MOVIE_KEY), ("events", RATING), ("events", EVENT_TIMESTAMP), ("users", USER_KEY),
          ("movies", MOVIE_KEY))),
        ("events", RATING, f"{RATING} NOT BETWEEN 1 AND 5", "outside 1..5"),
        ("events", EVENT_TIMESTAMP, f"{EVENT_TIMESTAMP} > TIMESTAMPTZ '{now.isoformat()}'",
         f"in the future (after {now.isoformat()})"),
        ("events", USER_KEY, f"{USER_KEY} NOT IN (SELECT {USER_KEY} FROM users WHERE {USER_KEY} IS NOT NULL)",
         "not a user_id of `users`"),
        ("events", MOVIE_KEY, f"{MOVIE_KEY} NOT IN (SELECT {MOVIE_KEY} FROM movies WHERE {MOVIE_KEY} IS NOT NULL)",
         "not a movie_id of `movies`"),
    ]  # fmt: skip
    problems += [problem for problem in (_rows_where(con, *c) for c in checks) if problem]
    for table, key in (("users", (USER_KEY,)), ("movies", (MOVIE_KEY,)), ("events", (USER_KEY, MOVIE_KEY,
                                                                                      EVENT_TIMESTAMP))):  # fmt: skip
        problems += [problem for problem in [_repeated(con, table, key)] if problem]
    if problems:
        raise RawSourceError(problems)
    return {table: con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """The typed views `events`, `users`, `movies` over the raw ones: the schema's columns, cast (`TYPES`).

    `check` creates them after its checks pass; tables known to be good (tests, benchmarks) may skip the checks.
    """
    for table, columns in TYPES.items():
        typed = ", ".join(f"CAST({_name(c)} AS {target}) AS {_name(c)}" for c, (_, target) in columns.items())
        con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT {typed} FROM raw_{table}")


def _name(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _schema_problems(con: duckdb.DuckDBPyConnection) -> list[str]:
    problems = []
    for table, columns in TYPES.items():
        types = {name: kind for name, kind, *_ in con.execute(f"DESCRIBE raw_{table}").fetchall()}
        missing = [c for c in columns if c not in types]
        if missing:
            problems.append(f"{table}: lacks column(s) {missing}; it has {list(types)}")
        for column, (allowed, _) in columns.items():
            kind = types.get(column)
            if kind is None or kind in allowed or kind.split("(")[0] in allowed:
                continue
            values = [v for (v,) in con.execute(f"SELECT DISTINCT {_name(column)} FROM raw_{table} "
                                                f"WHERE {_name(column)} IS NOT NULL LIMIT {QUOTED_ROWS}").fetchall()]  # fmt: skip
            problems.append(f"{table}.{column}: has type {kind}, must be one of {list(allowed)}; e.g. {values!r}")
    return problems


def _rows_where(con: duckdb.DuckDBPyConnection, table: str, column: str, condition: str, what: str) -> str | None:
    """A problem line when rows of `table` meet `condition`: their count and up to `QUOTED_ROWS` of them."""
    count = con.execute(f"SELECT count(*) FROM {table} WHERE {condition}").fetchone()[0]
    if not count:
        return None
    total = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    sample = _records(con.execute(f"SELECT * FROM {table} WHERE {condition} LIMIT {QUOTED_ROWS}"))
    return f"{table}.{column}: {count} of {total} rows {what}, e.g. {sample}"


def _repeated(con: duckdb.DuckDBPyConnection, table: str, key: tuple[str, ...]) -> str | None:
    columns = ", ".join(_name(c) for c in key)
    query = f"SELECT {columns}, count(*) AS times FROM {table} GROUP BY ALL HAVING count(*) > 1"
    count = con.execute(f"SELECT count(*), coalesce(sum(times), 0) FROM ({query})").fetchone()
    if not count[0]:
        return None
    sample = _records(con.execute(f"{query} ORDER BY times DESC, {columns} LIMIT {QUOTED_ROWS}"))
    what = "rows repeat" if len(key) == 1 else "events repeat"
    return f"{table}.{', '.join(key)}: {count[0]} keys in {count[1]} {what}, e.g. {sample}"


def _records(result: duckdb.DuckDBPyConnection) -> list[dict]:
    names = [d[0] for d in result.description]
    return [{name: _plain(value) for name, value in zip(names, row, strict=True)} for row in result.fetchall()]


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def validation_sample(con: duckdb.DuckDBPyConnection, cutoff: pd.Timestamp, day: pd.Timestamp,
                      rows: int, seed: int = 0) -> RawData:  # fmt: skip
    """The tables the Great Expectations source suite runs on: every event of `day` and a sample of the others.

    When the events before `cutoff` number at most `rows`, all of them (the suite then sees exactly what it
    always saw). Otherwise `day`'s events (the night's new partition, at most `rows`) and a repeatable sample of
    `rows` earlier ones. The profile tables come whole: they grow with entities, not with events.

    Args:
        con: a checked connection (`check`).
        cutoff: events at or after it are left out.
        day: 00:00 UTC of the run's last day of data.
        rows: the most events to sample from each part.
        seed: the sample's seed.
    """
    before = f"event_timestamp < TIMESTAMPTZ '{cutoff.isoformat()}'"
    total = con.execute(f"SELECT count(*) FROM events WHERE {before}").fetchone()[0]
    if total <= rows:
        events = con.execute(f"SELECT * FROM events WHERE {before}").df()
    else:
        start = f"TIMESTAMPTZ '{day.isoformat()}'"
        new_day = f"SELECT * FROM events WHERE {before} AND event_timestamp >= {start} LIMIT {rows}"
        earlier = (f"SELECT * FROM events WHERE event_timestamp < {start} "
                   f"USING SAMPLE reservoir({rows} ROWS) REPEATABLE ({seed})")  # fmt: skip
        events = con.execute(f"({new_day}) UNION ALL ({earlier})").df()
    events = events.sort_values(EVENT_TIMESTAMP, kind="stable").reset_index(drop=True)
    return RawData(events, con.execute("SELECT * FROM users").df(), con.execute("SELECT * FROM movies").df())
