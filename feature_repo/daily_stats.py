"""The stats sources, computed in DuckDB and kept per day, so that a night only does the new day's work.

Each stats view (`user_stats`, `movie_stats`, `user_genre_stats`) reads a folder of parquet files, one per stamp
(`sources.py`): `data/<view>/<YYYY-MM-DD>.parquet` holds the rows stamped 00:00 UTC of that day. The rule is
`ingest`'s: the row of day D counts the entity's events strictly before D. A past day's file has a row for each
entity with events on that day (the rows training joins to), and the movie stats a row for every movie (the
movies sampled as "not picked", `negatives`, find one too); the file of the run's cutoff (`ds` 00:00 UTC) has a
row for every entity (the "now" rows materialized online). The movie stats also hold the movie's share of the
ratings, and of the positive ratings, of the last `RECENT_DAYS` days.

Under them lie the integer sums the rows are made of:

    data/aggregates/<view>/<YYYY-MM-DD>.parquet   per entity, the sums of that day's events
    data/aggregates/<view>/totals.parquet         per entity, the sums of every event before the manifest's cutoff
    data/aggregates/manifest.json                 that cutoff, and a fingerprint (count, hash) of each day's events

A night fingerprints the days before its cutoff (one DuckDB scan) and compares them with the manifest's: days
that did not change are not aggregated again. For a nightly feed only the new day changed: its daily sums are
computed, and the stats files from that day on are rewritten from the stored totals plus the new sums. Any other
change (another source, late events, an earlier `ds`, changed genres) recomputes from the first day that differs,
so the files always equal a rebuild from scratch, and re-running a date rewrites the same files. Every file is
written under a temporary name and renamed into place; all sums are integers, so the features are exact.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from deepfm_model.spec.features import (
    EVENT_TIMESTAMP,
    GENRES,
    LABEL,
    MOVIE_KEY,
    MOVIE_STATS_VIEW,
    MULTI_VALUE_SEPARATOR,
    POSITIVE_RATING,
    RATING,
    RECENT_DAYS,
    USER_GENRE_COUNTS,
    USER_GENRE_POSITIVES,
    USER_GENRE_STATS_VIEW,
    USER_KEY,
    USER_STATS_VIEW,
    genre_stat_columns,
)
from deepfm_model.spec.files import fsync_dir, move_into_place, write_json
from feature_repo import sql

logger = logging.getLogger(__name__)

AGGREGATES_DIR = "aggregates"
MANIFEST_FILE = "manifest.json"
TOTALS_FILE = "totals.parquet"
LAYOUT = 6  # bump when the files' meaning changes: every day is then recomputed
# Smoothing of the stats: `PSEUDO_COUNT` imaginary ratings at fixed prior values. The priors are constants,
# not estimated from the data, so that no row depends on events after its day.
PSEUDO_COUNT = 5.0
PRIOR_POS_RATE = 0.5
PRIOR_MEAN_RATING = 3.5


@dataclass(frozen=True)
class StatsView:
    """One stats view: its entity, the integer sums it keeps and the features it makes of them.

    Attributes:
        view: the feature view (and folder) name.
        key: the entity column.
        entities: SQL listing every entity that gets a "now" row.
        sums: sum column -> SQL of its per-event value over `labelled` (joined with `genres` when `by_genre`).
        features: feature column -> SQL over the sums, in the source's column order.
        by_genre: the sums need the movie's genres (so they change when the movies' genres do).
        every_day: every entity gets a row on every day with events (not only on its own days), so that any
            (entity, instant) finds a row within the one-day TTL: the movies that training samples as not picked.
        recent_days: when positive, the features may also use `recent_n` and `recent_pos`: the entity's events
            and positive events in the `recent_days` days before the row's day (what is popular now, not over the
            whole history), and `recent_total`, `recent_pos_total`: those of every entity (with `every_day`, every
            entity has a row at each stamp, so the sum over a stamp's rows is the whole window's).
    """

    view: str
    key: str
    entities: str
    sums: dict[str, str]
    features: dict[str, str]
    by_genre: bool = False
    recent_days: int = 0
    every_day: bool = False


def _rating_view(
    view: str, key: str, table: str, prefix: str, recent_days: int = 0, every_day: bool = False
) -> StatsView:
    n = "CAST(n AS DOUBLE)"
    # Shares, not counts: how many ratings a window holds changes with the site's traffic, what share of them a
    # movie gets is what a model can carry from one month to the next.
    share = "1000.0 * coalesce({0}, 0) / greatest({1}, 1)"
    recent = {f"{prefix}_recent_share": share.format("recent_n", "recent_total"),
              f"{prefix}_recent_positive_share": share.format("recent_pos", "recent_pos_total")} if recent_days else {}  # fmt: skip
    return StatsView(
        view=view,
        key=key,
        entities=f"SELECT {key} FROM {table}",
        sums={"n": "1", "pos": LABEL, "total": RATING},
        features={
            f"{prefix}_rating_count": n,
            f"{prefix}_pos_rate": f"(CAST(pos AS DOUBLE) + {PSEUDO_COUNT * PRIOR_POS_RATE!r}) / ({n} + {PSEUDO_COUNT!r})",
            f"{prefix}_mean_rating": f"(CAST(total AS DOUBLE) + {PSEUDO_COUNT * PRIOR_MEAN_RATING!r}) / "
            f"({n} + {PSEUDO_COUNT!r})",
            **recent,
        },
        recent_days=recent_days,
        every_day=every_day,
    )


def _genre_view() -> StatsView:
    sums = {}
    for bit, genre in enumerate(GENRES):
        count_column, pos_column = genre_stat_columns(genre)
        has = f"CAST((coalesce(genre_bits, 0) >> {bit}) & 1 AS BIGINT)"  # events of unknown movies: no genre
        sums[count_column], sums[pos_column] = has, f"{has} * {LABEL}"
    per_genre = [genre_stat_columns(genre) for genre in GENRES]
    return StatsView(
        view=USER_GENRE_STATS_VIEW,
        key=USER_KEY,
        entities=f"SELECT {USER_KEY} FROM users",
        sums=sums,
        features={
            name: "list_value(" + ", ".join(f"CAST({columns[i]} AS DOUBLE)" for columns in per_genre) + ")"
            for i, name in enumerate((USER_GENRE_COUNTS, USER_GENRE_POSITIVES))
        },
        by_genre=True,
    )


STATS_VIEWS: tuple[StatsView, ...] = (
    _rating_view(USER_STATS_VIEW, USER_KEY, "users", "user"),
    _rating_view(MOVIE_STATS_VIEW, MOVIE_KEY, "movies", "movie", recent_days=RECENT_DAYS, every_day=True),
    _genre_view(),
)


def update(con: duckdb.DuckDBPyConnection, cutoff: pd.Timestamp, data_dir: Path,
           days: dict[str, list] | None = None) -> dict[str, int]:  # fmt: skip
    """Bring the stats files under `data_dir` to the events of `con` before `cutoff`, doing only what changed.

    Args:
        con: a connection with the typed views `events`, `users`, `movies` (`raw_source`).
        cutoff: `data_cutoff(ds)`; events at or after it are not counted.
        data_dir: the repo's data folder.
        days: `day_fingerprints(con, cutoff)` when the caller has them (and the views it creates).

    Returns:
        Per view, the number of days whose sums were (re)computed.
    """
    data_dir = Path(data_dir)
    root = data_dir / AGGREGATES_DIR
    root.mkdir(parents=True, exist_ok=True)
    days = day_fingerprints(con, cutoff) if days is None else days
    genres = genres_digest(con)
    manifest = _read_manifest(root)
    engine = engine_version(con)
    same_layout = manifest.get("layout") == LAYOUT and manifest.get("engine") == engine
    old_days = manifest.get("days", {}) if same_layout else {}
    old_cutoff = manifest.get("cutoff") if same_layout else None
    recomputed = {}
    for spec in STATS_VIEWS:
        sums_dir = root / spec.view
        everything = not same_layout or (spec.by_genre and manifest.get("genres") != genres)
        changed = [day for day in days if everything or old_days.get(day) != days[day]
                   or not (sums_dir / f"{day}.parquet").is_file()]  # fmt: skip
        gone = [day for day in old_days if day not in days]  # after the cutoff now, or no longer in the source
        for day in gone:
            (sums_dir / f"{day}.parquet").unlink(missing_ok=True)
        _write_daily_sums(con, spec, changed, len(changed) == len(days), sums_dir, data_dir)
        first = min([*changed, *gone, _day(cutoff)])
        _write_stats(con, spec, sorted(days), first, old_cutoff if not everything else None, cutoff, data_dir)
        recomputed[spec.view] = len(changed)
    write_json(root / MANIFEST_FILE, {"layout": LAYOUT, "engine": engine, "cutoff": _day(cutoff),
                                      "genres": genres, "days": days})  # fmt: skip
    return recomputed


def engine_version(con) -> str:
    """What ran the SQL: `duckdb <version>`, or the connection's own `engine_version` (`spark_engine`).

    The manifest keeps it: the fingerprints are the engine's hashes, so another engine recomputes every day.
    """
    return getattr(con, "engine_version", f"duckdb {duckdb.__version__}")


def day_fingerprints(con: duckdb.DuckDBPyConnection, cutoff: pd.Timestamp) -> dict[str, list]:
    """Each day's `[count, hash]` of the events before `cutoff`; also (re)creates the temp views `labelled`
    (the labelled events before `cutoff`, with their `day`) and `genres` (each movie's genre tokens and bits)."""
    before = f"{EVENT_TIMESTAMP} < {sql.instant(cutoff)}"
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW labelled AS SELECT {USER_KEY}, {MOVIE_KEY}, {RATING}, "
        f"CAST({RATING} >= {POSITIVE_RATING} AS BIGINT) AS {LABEL}, date_trunc('day', {EVENT_TIMESTAMP}) AS day, "
        f"{EVENT_TIMESTAMP} FROM events WHERE {before}"
    )
    # Each movie's genres as bits (bit i: `GENRES[i]`), computed once per movie: per event, a shift and a mask.
    bits = " | ".join(
        f"(CAST(list_contains(tokens, '{genre.replace(chr(39), chr(39) * 2)}') AS INTEGER) << {bit})"
        for bit, genre in enumerate(GENRES)
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE genres AS SELECT {MOVIE_KEY}, tokens, {bits} AS genre_bits FROM (SELECT "
        f"{MOVIE_KEY}, string_split(coalesce(genres, ''), '{MULTI_VALUE_SEPARATOR}') AS tokens FROM movies)"
    )
    days = {
        day: [count, str(digest)]
        for day, count, digest in con.execute(
            f"SELECT strftime(day, '%Y-%m-%d') AS d, count(*), bit_xor(hash({USER_KEY}, {MOVIE_KEY}, {RATING}, "
            f"{EVENT_TIMESTAMP})) FROM labelled GROUP BY d ORDER BY d"
        ).fetchall()
    }
    return days


def genres_digest(con: duckdb.DuckDBPyConnection) -> str:
    """A fingerprint of every movie's genres (the temp table `genres` of `day_fingerprints`)."""
    return str(con.execute(f"SELECT bit_xor(hash({MOVIE_KEY}, tokens)) FROM genres").fetchone()[0])


def _write_daily_sums(con: duckdb.DuckDBPyConnection, spec: StatsView, days: list[str], every_day: bool,
                      sums_dir: Path, data_dir: Path) -> None:  # fmt: skip
    """Per entity and day of `days`, the integer sums of the day's events: `<sums_dir>/<day>.parquet`."""
    if not days:
        return
    sums = ", ".join(f"CAST(sum({value}) AS BIGINT) AS {column}" for column, value in spec.sums.items())
    join = f" LEFT JOIN genres USING ({MOVIE_KEY})" if spec.by_genre else ""
    where = "" if every_day else f" WHERE day IN ({', '.join(sql.instant(day) for day in days)})"
    query = f"SELECT {spec.key}, day, {sums}, strftime(day, '%Y-%m-%d') AS part FROM labelled{join}{where} GROUP BY ALL"
    _write_partitions(con, query, sums_dir, data_dir)


def _write_stats(con: duckdb.DuckDBPyConnection, spec: StatsView, days: list[str], first: str,
                 totals_cutoff: str | None, cutoff: pd.Timestamp, data_dir: Path) -> None:  # fmt: skip
    """Rewrite the stats files of `spec.view` stamped from day `first` to `cutoff`, and the totals as of `cutoff`.

    The totals before `first` are the stored ones when they are as of `first`, else the sums of the daily files
    before it; the rows stamped from `first` on add the daily sums since.
    """
    sums_dir = data_dir / AGGREGATES_DIR / spec.view
    columns = list(spec.sums)
    totals_path = sums_dir / TOTALS_FILE
    earlier = [sums_dir / f"{day}.parquet" for day in days if day < first]
    recent = [sums_dir / f"{day}.parquet" for day in days if day >= first]
    zero = ", ".join(f"CAST(0 AS BIGINT) AS {c}" for c in columns)
    if totals_cutoff == first and totals_path.is_file():
        base = f"SELECT * FROM read_parquet({sql.literal(totals_path)})"
    elif earlier:
        totals = ", ".join(f"CAST(sum({c}) AS BIGINT) AS {c}" for c in columns)
        base = f"SELECT {spec.key}, {totals} FROM read_parquet({sql.files(earlier)}) GROUP BY ALL"
    else:
        base = f"SELECT CAST(NULL AS VARCHAR) AS {spec.key}, {zero} WHERE false"
    since = (
        f"SELECT * FROM read_parquet({sql.files(recent)})"
        if recent
        else (f"SELECT CAST(NULL AS VARCHAR) AS {spec.key}, CAST(NULL AS TIMESTAMPTZ) AS day, {zero} WHERE false")
    )
    staging = data_dir / f".staging-{uuid.uuid4().hex}"
    try:
        added = ", ".join(f"CAST(coalesce(b.{c}, 0) + coalesce(s.{c}, 0) AS BIGINT) AS {c}" for c in columns)
        new_totals = staging / TOTALS_FILE
        staging.mkdir(parents=True)
        con.execute(
            f"COPY (SELECT {spec.key}, {added} FROM ({base}) b FULL OUTER JOIN (SELECT {spec.key}, "
            f"{', '.join(f'sum({c}) AS {c}' for c in columns)} FROM ({since}) GROUP BY ALL) s USING ({spec.key})) "
            f"TO {sql.literal(new_totals)} (FORMAT parquet)"
        )
        # Sums of the days before each day: the running sum up to it (DuckDB streams it) less the day itself.
        running = ", ".join(
            f"CAST(coalesce(b.{c}, 0) + sum(s.{c}) OVER up_to_day - s.{c} AS BIGINT) AS {c}" for c in columns
        )
        rows_since = since
        if spec.every_day and recent:
            # Every entity on every day with events: a row for any pair an event or a sampled movie asks for.
            grid = (f"SELECT e.{spec.key}, d.day FROM (SELECT DISTINCT {spec.key} FROM ({spec.entities}) WHERE "
                    f"{spec.key} IS NOT NULL) e CROSS JOIN (SELECT DISTINCT day FROM ({since})) d")  # fmt: skip
            padded = ", ".join(f"CAST(coalesce(s.{c}, 0) AS BIGINT) AS {c}" for c in columns)
            rows_since = (
                f"SELECT g.{spec.key}, g.day, {padded} FROM ({grid}) g LEFT JOIN ({since}) s USING ({spec.key}, day)"
            )
        history = (
            f"SELECT s.{spec.key}, s.day AS stamp, {running} FROM ({rows_since}) s LEFT JOIN ({base}) b USING ({spec.key}) "
            f"WINDOW up_to_day AS (PARTITION BY s.{spec.key} ORDER BY s.day "
            "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
        )
        now = (
            f"SELECT e.{spec.key}, {sql.instant(cutoff)} AS stamp, "
            f"{', '.join(f'coalesce(t.{c}, 0) AS {c}' for c in columns)} "
            f"FROM (SELECT DISTINCT {spec.key} FROM ({spec.entities} UNION ALL SELECT {spec.key} FROM "
            f"read_parquet({sql.literal(new_totals)})) WHERE {spec.key} IS NOT NULL) e "
            f"LEFT JOIN read_parquet({sql.literal(new_totals)}) t USING ({spec.key})"
        )
        features = ", ".join(f"{expression} AS {name}" for name, expression in spec.features.items())
        rows = f"({history} UNION ALL {now})"
        if spec.recent_days:
            rows = _with_recent(spec, rows, days, first, sums_dir)
        query = (f"SELECT {spec.key}, {features}, stamp AS {EVENT_TIMESTAMP}, strftime(stamp, '%Y-%m-%d') AS part "
                 f"FROM {rows}")  # fmt: skip
        written = _write_partitions(con, query, data_dir / spec.view, data_dir)
        for stale in (data_dir / spec.view).glob("*.parquet"):
            if stale.stem >= first and stale.stem not in written:
                stale.unlink()
        move_into_place(new_totals, totals_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _with_recent(spec: StatsView, rows: str, days: list[str], first: str, sums_dir: Path) -> str:
    """`rows` (entity, stamp, sums) with `recent_n`: the entity's events on the `spec.recent_days` days before
    each row's stamp, summed from the daily sums files (those of the window before `first` included)."""
    since = (pd.Timestamp(first) - pd.Timedelta(days=spec.recent_days)).strftime("%Y-%m-%d")
    files = [sums_dir / f"{day}.parquet" for day in days if day >= since]
    if not files:
        zero = "CAST(0 AS BIGINT)"
        return f"(SELECT *, {zero} AS recent_n, {zero} AS recent_pos, {zero} AS recent_total, {zero} AS recent_pos_total FROM {rows})"
    window = f"INTERVAL {int(spec.recent_days)} DAY"
    recent = (
        f"SELECT r.{spec.key}, r.stamp, CAST(sum(d.n) AS BIGINT) AS recent_n, CAST(sum(d.pos) AS BIGINT) AS recent_pos "
        f"FROM {rows} r "
        f"JOIN read_parquet({sql.files(files)}) d ON d.{spec.key} = r.{spec.key} AND d.day < r.stamp "
        f"AND d.day >= r.stamp - {window} GROUP BY ALL"
    )
    totals = ("sum(coalesce(t.recent_n, 0)) OVER (PARTITION BY r.stamp) AS recent_total, "
              "sum(coalesce(t.recent_pos, 0)) OVER (PARTITION BY r.stamp) AS recent_pos_total")  # fmt: skip
    return f"(SELECT r.*, t.recent_n, t.recent_pos, {totals} FROM {rows} r LEFT JOIN ({recent}) t USING ({spec.key}, stamp))"


def _write_partitions(con: duckdb.DuckDBPyConnection, query: str, target: Path, data_dir: Path) -> set[str]:
    """Write the rows of `query` as `<target>/<part>.parquet`, one file per value of its `part` column."""
    staging = data_dir / f".staging-{uuid.uuid4().hex}"
    try:
        con.execute(f"COPY ({query}) TO {sql.literal(staging)} (FORMAT parquet, PARTITION_BY (part))")
        target.mkdir(parents=True, exist_ok=True)
        written = set()
        for folder in sorted(staging.glob("part=*")):
            part = folder.name.removeprefix("part=")
            files = sorted(folder.glob("*.parquet"))
            if len(files) > 1:  # one file per partition is DuckDB's default; merge if it wrote several
                merged = folder / "merged.parquet"
                con.execute(
                    f"COPY (SELECT * FROM read_parquet({sql.files(files)})) TO {sql.literal(merged)} (FORMAT parquet)"
                )
                files = [merged]
            move_into_place(files[0], target / f"{part}.parquet", sync_dir=False)
            written.add(part)
        fsync_dir(target)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read_manifest(root: Path) -> dict:
    try:
        return json.loads((root / MANIFEST_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _day(stamp: pd.Timestamp) -> str:
    return stamp.strftime("%Y-%m-%d")
