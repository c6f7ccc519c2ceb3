"""The snapshot suite over the snapshot's parquet files: in memory when small, exact SQL plus a sample when large.

A snapshot of at most `validation.SAMPLE_ROWS` rows is read whole and validated by `validation.validate_snapshot`
(what every small run, MovieLens included, always did). A larger one is never loaded: DuckDB computes the exact
figures over every row (row count, label rate, repeated events, and per rule of `rules.SNAPSHOT_RULES` the
rows that break it: nulls, values outside the spec's range or closed domain) into a one-row `exact` batch whose
expectations require them to be zero or inside their bands; the column-value expectations (types, ranges,
domains, with sample bad values) and the drift checks run on a repeatable sample of `SAMPLE_ROWS` rows.
Everything goes through the same Great Expectations run, so the report and the Data Docs look the same in both
cases.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from deepfm_model.spec.features import EVENT_TIMESTAMP, LABEL, MOVIE_KEY, PICKED, USER_KEY
from feature_repo import raw_source, sql, validation
from feature_repo.rules import RATED, SAMPLED, SNAPSHOT_RULES, SNAPSHOT_UNIQUE, where_sql
from feature_repo.validation import SuiteConfig, ValidationReport

SAMPLE_SEED = 0


def validate_snapshot_files(
    paths: list[Path],
    docs_dir: Path,
    config: SuiteConfig | None = None,
    reference: dict | Path | None = None,
    sample_rows: int = validation.SAMPLE_ROWS,
) -> ValidationReport:
    """Validate the snapshot stored in `paths` (its split files); Data Docs under `docs_dir`.

    Args:
        paths: the parquet files that together are the snapshot.
        docs_dir: folder for the Data Docs site (created); nothing else is written.
        config: thresholds that are not in the feature spec (`SuiteConfig()` when `None`).
        reference: stats of the previous accepted snapshot, or the path of them; `None` on the first run.
        sample_rows: the most rows validated in memory.
    """
    config = config or SuiteConfig()
    if reference is not None and not isinstance(reference, dict):
        reference = json.loads(Path(reference).read_text())
    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in paths)
    if rows <= sample_rows:
        return validation.validate_snapshot(read_whole(paths), docs_dir, config, reference)
    with _connect(paths) as con:
        sample = _sample(con, sample_rows)
        exact = exact_table(con)
    batches = [
        ("snapshot", sample, validation.build_expectations(config, reference, whole=False)),
        ("exact", exact, exact_expectations(config, reference)),
    ]
    if reference is not None:
        batches.append(
            ("drift", validation.psi_table(sample, reference), validation.drift_expectations(reference, config))
        )
    return validation.run_suites(batches, docs_dir, "Snapshot", rows)


def record_reference_files(paths: list[Path], path: Path, sample_rows: int = validation.SAMPLE_ROWS) -> Path:
    """`validation.record_reference` of the snapshot in `paths`: exact row count and label rate, bins of a sample."""
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
    if rows <= sample_rows:
        return validation.record_reference(read_whole(paths), path)
    with _connect(paths) as con:
        label_rate = con.execute(f"SELECT {exact_checks()['label_rate'][0]} FROM snapshot").fetchone()[0]
        return validation.record_reference(_sample(con, sample_rows), path, {"rows": rows, "label_rate": label_rate})


def read_whole(paths: list[Path]) -> pd.DataFrame:
    """The snapshot's files as one frame, in order."""
    return pd.concat([pd.read_parquet(path) for path in paths], ignore_index=True)


@contextlib.contextmanager
def _connect(paths: list[Path]) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB `raw_source.session` with the view `snapshot` over the files."""
    with raw_source.session() as con:
        con.execute(f"CREATE VIEW snapshot AS SELECT * FROM read_parquet({sql.files(paths)})")
        yield con


def _sample(con: duckdb.DuckDBPyConnection, rows: int) -> pd.DataFrame:
    sample = con.execute(f"SELECT * FROM snapshot USING SAMPLE reservoir({rows} ROWS) REPEATABLE ({SAMPLE_SEED})").df()
    sample[EVENT_TIMESTAMP] = pd.to_datetime(sample[EVENT_TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    return sample.sort_values(EVENT_TIMESTAMP, kind="stable").reset_index(drop=True)


def exact_checks() -> dict[str, tuple[str, set[str]]]:
    """Name -> (SQL aggregate over the view `snapshot`, the columns it reads) of every exact figure.

    The row count, the rated rows' label rate, and per rule of `rules.SNAPSHOT_RULES` the count of rows that
    break it (`null_<column>`, `out_of_range_<column>`, `unknown_<column>`, suffixed `_where_picked_<0|1>` for a
    rule over rated or sampled rows only).
    """
    checks = {
        "rows": ("count(*)", set()),
        "label_rate": (f"avg({LABEL}) FILTER (WHERE {where_sql(RATED)})", {LABEL, PICKED}),
    }
    for rule in SNAPSHOT_RULES:
        checks[rule.name] = (f"count(*) FILTER (WHERE {rule.violated()})", rule.reads)
    return checks


def exact_table(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The one-row `exact` batch: every figure of `exact_checks`, and `repeated_events` (rows of repeated keys)."""
    checks = exact_checks()
    names = {row[0] for row in con.execute("DESCRIBE snapshot").fetchall()}
    present = {name: aggregate for name, (aggregate, reads) in checks.items() if reads <= names}
    values = con.execute(f"SELECT {', '.join(f'{a} AS {sql.name(n)}' for n, a in present.items())} FROM snapshot")
    row: dict[str, Any] = dict(zip(present, values.fetchone(), strict=True))
    row |= {name: float("nan") for name in checks if name not in present}  # a missing column fails its check
    repeated = SNAPSHOT_UNIQUE.repeated_keys("snapshot")
    row["repeated_events"] = con.execute(f"SELECT coalesce(sum(times), 0) FROM ({repeated})").fetchone()[0]
    row["sampled_rated_before"] = sampled_rated_before(con)
    return pd.DataFrame([{name: float(value) if value is not None else float("nan") for name, value in row.items()}])


def sampled_rated_before(con: duckdb.DuckDBPyConnection) -> int:
    """Sampled rows whose movie the user had rated at or before the row's instant (the sampling promises none)."""
    return con.execute(
        f"SELECT count(*) FROM snapshot s WHERE s.{PICKED} = {SAMPLED[1]} AND EXISTS (SELECT 1 FROM snapshot r WHERE "
        f"r.{PICKED} = {RATED[1]} AND r.{USER_KEY} = s.{USER_KEY} AND r.{MOVIE_KEY} = s.{MOVIE_KEY} AND "
        f"r.{EVENT_TIMESTAMP} <= s.{EVENT_TIMESTAMP})"
    ).fetchone()[0]


def exact_expectations(config: SuiteConfig, reference: dict | None) -> list[Any]:
    """Expectations over `exact_table`: counts of bad rows are 0, rows and label rate inside their bands."""
    import great_expectations.expectations as gxe

    min_rows, max_rows = validation.row_band(config, reference)
    expectations: list[Any] = [gxe.ExpectColumnValuesToBeBetween(column="rows", min_value=min_rows, max_value=max_rows)]
    expectations += [
        gxe.ExpectColumnValuesToBeBetween(column="label_rate", min_value=low, max_value=high)
        for low, high in validation.label_rate_bands(config, reference)
    ]
    counts = [name for name in exact_checks() if name not in ("rows", "label_rate")]
    counts += ["repeated_events", "sampled_rated_before"]
    expectations += [gxe.ExpectColumnValuesToBeBetween(column=name, min_value=0, max_value=0) for name in counts]
    return expectations
