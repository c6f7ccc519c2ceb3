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
| users | age | number | never null; in the feature spec's range |
| users | gender | string | one of the spec's codes |
| users | occupation | string | one of the spec's codes |
| users | zip_code | string (an integer loses leading zeros) | |
| movies | movie_id | string or integer | never null; unique |
| movies | title | string | |
| movies | release_year | number | may be null (unknown); in the spec's range |
| movies | genres | string, values joined by `\\|` | may be null or empty (no genre); the spec's genre names |

Other columns are ignored; (user, movie, timestamp) must not repeat. The rules are `rules.SOURCE_RULES`: `check`
renders them to SQL and verifies them exactly over every row, before anything is written; a failure raises
`RawSourceError` naming the table, the column and sample rows. The Great Expectations source suite
(`validation.validate_sources`) renders the same rules, adds the day's event count, and runs on the profile
tables and a sample of events (`validation_sample`) for its Data Docs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from deepfm_model.spec.dates import to_utc
from deepfm_model.spec.features import EVENT_TIMESTAMP, MOVIE_KEY, RATING, USER_KEY
from deepfm_model.spec.raw_data import EVENT_COLUMNS, MOVIE_COLUMNS, USER_COLUMNS, RawData
from feature_repo import sql
from feature_repo.rules import SOURCE_RULES, Check, Rule

TABLES = ("events", "users", "movies")
COLUMNS = {"events": EVENT_COLUMNS, "users": USER_COLUMNS, "movies": MOVIE_COLUMNS}
QUOTED_ROWS = 5  # rows quoted per failed check
MEMORY_LIMIT = "3GB"  # DuckDB's working memory per connection; beyond it, DuckDB spills to disk (`session`)
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


def table_files(folder: Path, table: str) -> tuple[str, Path]:
    """Where `table` lies in `folder`: its format (`parquet`, `csv`) and its file, or its folder of files."""
    single_parquet, single_csv, subfolder = folder / f"{table}.parquet", folder / f"{table}.csv", folder / table
    if single_parquet.is_file():
        return "parquet", single_parquet
    if single_csv.is_file():
        return "csv", single_csv
    if subfolder.is_dir():
        for form in ("parquet", "csv"):
            if any(subfolder.rglob(f"*.{form}")):
                return form, subfolder
    raise FileNotFoundError(
        f"Source folder {str(folder)!r} has no table `{table}`: expected {table}.parquet, {table}.csv or a folder "
        f"{table}/ of parquet or CSV files"
    )


def _reader(folder: Path, table: str) -> str:
    form, path = table_files(folder, table)
    if path.is_dir():
        union = ", union_by_name = true"
        path = path / "**" / f"*.{form}"
    else:
        union = ""
    header = ", header = true" if form == "csv" else ""
    return f"read_{form}({sql.literal(path)}{header}{union})"


@contextlib.contextmanager
def session() -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection in UTC, its memory bounded by `MEMORY_LIMIT`, spilling into a temporary folder of its
    own that is removed on close (DuckDB's default spills into `.tmp` under the working directory)."""
    with tempfile.TemporaryDirectory(prefix="deepfm-duckdb-") as spill:
        con = duckdb.connect()
        try:
            con.execute(f"SET TimeZone = 'UTC'; SET memory_limit = '{MEMORY_LIMIT}'; SET threads = {THREADS}")
            con.execute(f"SET temp_directory = {sql.literal(spill)}")
            yield con
        finally:
            con.close()


@contextlib.contextmanager
def connect(raw: RawData | RawSource) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB `session` with views `raw_events`, `raw_users`, `raw_movies` over the tables as delivered.

    `check` then adds the typed views `events`, `users`, `movies` that every reader uses.
    """
    source = as_source(raw)
    with session() as con:
        for table in TABLES:
            if source.frames is not None:
                con.register(f"frame_{table}", getattr(source.frames, table))
                con.execute(f"CREATE VIEW raw_{table} AS SELECT * FROM frame_{table}")
            else:
                con.execute(f"CREATE VIEW raw_{table} AS SELECT * FROM {source.readers[table]}")
        yield con


def read_movies(raw: RawData | RawSource) -> pd.DataFrame:
    """The `movies` table as delivered, its `movie_id` as a string (as the features name it): for display."""
    with connect(raw) as con:
        return con.sql(f"SELECT CAST({MOVIE_KEY} AS VARCHAR) AS {MOVIE_KEY}, title, release_year FROM raw_movies").df()


def check(con: duckdb.DuckDBPyConnection, now: dt.datetime | pd.Timestamp | None = None) -> dict[str, int]:
    """Check the raw tables of `connect` exactly, then create the typed views `events`, `users`, `movies`.

    Columns and types first (a table without them cannot be read further); then every rule of
    `rules.SOURCE_RULES`: null keys, ratings outside 1..5, timestamps after `now`, events of unknown users or
    movies, repeated keys and events, profile codes outside their domains and ranges.

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
    totals = {}
    for table, rules in SOURCE_RULES.items():
        totals[table], broken = _rows_breaking(con, table, rules, now)
        for rule, count in zip(rules, broken, strict=True):
            if rule.check is Check.UNIQUE:
                problem = _repeated(con, table, rule)
            else:
                problem = _rows_where(con, table, rule, now, count, totals[table])
            problems += [problem] if problem else []
    if problems:
        raise RawSourceError(problems)
    return {table: totals[table] for table in TABLES}


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """The typed views `events`, `users`, `movies` over the raw ones: the schema's columns, cast (`TYPES`).

    `check` creates them after its checks pass; tables known to be good (tests, benchmarks) may skip the checks.
    """
    for table, columns in TYPES.items():
        typed = ", ".join(f"CAST({sql.name(c)} AS {target}) AS {sql.name(c)}" for c, (_, target) in columns.items())
        con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT {typed} FROM raw_{table}")


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
            values = [v for (v,) in con.execute(f"SELECT DISTINCT {sql.name(column)} FROM raw_{table} "
                                                f"WHERE {sql.name(column)} IS NOT NULL LIMIT {QUOTED_ROWS}").fetchall()]  # fmt: skip
            problems.append(f"{table}.{column}: has type {kind}, must be one of {list(allowed)}; e.g. {values!r}")
    return problems


def _rows_breaking(con: duckdb.DuckDBPyConnection, table: str, rules: list[Rule], now: pd.Timestamp
                   ) -> tuple[int, list[int | None]]:  # fmt: skip
    """The rows of `table`, and for each rule the rows breaking it (`None`: a rule this pass does not count, a
    `UNIQUE` one or one whose condition holds a subquery): one pass over the table for them all (on Spark, one job
    rather than one per rule)."""
    counted = [rule for rule in rules if rule.check not in (Check.UNIQUE, Check.KNOWN)]
    counts = "".join(f", count(CASE WHEN {rule.violated(now)} THEN 1 END)" for rule in counted)
    total, *broken = con.execute(f"SELECT count(*){counts} FROM {table}").fetchone()
    by_rule = dict(zip(map(id, counted), broken, strict=True))
    return total, [by_rule.get(id(rule)) for rule in rules]


def _rows_where(con: duckdb.DuckDBPyConnection, table: str, rule: Rule, now: pd.Timestamp, count: int | None,
                total: int) -> str | None:  # fmt: skip
    """A problem line when rows of `table` break `rule`: their count (`None`: counted here) and up to `QUOTED_ROWS`
    of them."""
    condition = rule.violated(now)
    if count is None:
        count = con.execute(f"SELECT count(*) FROM {table} WHERE {condition}").fetchone()[0]
    if not count:
        return None
    sample = _records(con.execute(f"SELECT * FROM {table} WHERE {condition} LIMIT {QUOTED_ROWS}"))
    what = f"{rule.what} (after {now.isoformat()})" if rule.check is Check.NOT_AFTER else rule.what
    return f"{table}.{rule.column}: {count} of {total} rows {what}, e.g. {sample}"


def _repeated(con: duckdb.DuckDBPyConnection, table: str, rule: Rule) -> str | None:
    query = rule.repeated_keys(table)
    count = con.execute(f"SELECT count(*), coalesce(sum(times), 0) FROM ({query})").fetchone()
    if not count[0]:
        return None
    keys = ", ".join(sql.name(c) for c in rule.columns)
    sample = _records(con.execute(f"{query} ORDER BY times DESC, {keys} LIMIT {QUOTED_ROWS}"))
    what = "rows repeat" if len(rule.columns) == 1 else "events repeat"
    return f"{table}.{', '.join(rule.columns)}: {count[0]} keys in {count[1]} {what}, e.g. {sample}"


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
    before = f"{EVENT_TIMESTAMP} < {sql.instant(cutoff)}"
    total = con.execute(f"SELECT count(*) FROM events WHERE {before}").fetchone()[0]
    if total <= rows:
        events = con.execute(f"SELECT * FROM events WHERE {before}").df()
    else:
        start = sql.instant(day)
        new_day = f"SELECT * FROM events WHERE {before} AND {EVENT_TIMESTAMP} >= {start} LIMIT {rows}"
        # DuckDB samples the FROM clause before WHERE filters it: the filter goes in a subquery.
        earlier = (f"SELECT * FROM (SELECT * FROM events WHERE {EVENT_TIMESTAMP} < {start}) AS earlier "
                   f"USING SAMPLE reservoir({rows} ROWS) REPEATABLE ({seed})")  # fmt: skip
        events = con.execute(f"({new_day}) UNION ALL ({earlier})").df()
    events = events.sort_values(EVENT_TIMESTAMP, kind="stable").reset_index(drop=True)
    return RawData(events, con.execute("SELECT * FROM users").df(), con.execute("SELECT * FROM movies").df())
