"""Validation: Great Expectations suites over the raw sources at ingest and over a training snapshot.

Both suites derive from the feature spec.

`validate_sources` (at ingest, before anything is written): events, users and movies have their columns, keys are
present and unique, ratings lie in 1..5, codes are in their closed domains, events reference known users and
movies, no event is duplicated (same user, movie and second), no timestamp lies in the future, and the run's day
has events (an empty day is how a feed outage looks).

`validate_snapshot` (before training): every column is there with its type, keys and features are never null,
numerics lie in the spec's ranges, categoricals with a closed domain take only `allowed` values (genres: each
`|`-separated token), the label is 0/1 with a positive rate inside a band, no event appears twice, and there are
enough rows. Given the reference stats of the previous accepted snapshot (`record_reference`), it also checks the
row count against a band around the reference's, the label rate against the reference's, and distribution drift
of every key feature (`DRIFT_FEATURES`) by the population stability index:

    PSI = sum_b (p_b - q_b) * ln(p_b / q_b)

over the reference's decile bins (numerics) or categories (closed-domain categoricals), p = current share,
q = reference share, both floored at `PSI_FLOOR`. The threshold, `SuiteConfig.max_psi = 0.25`, is the usual
"significant shift" line (< 0.1 stable, 0.1-0.25 moderate); nightly snapshots are cumulative, so consecutive
ones score near 0 and a real shift stands far above it. The PSI values are validated as a one-row batch
(`psi_<feature>` columns), so they appear in the summary and the Data Docs like any other expectation.

A failure stops the nightly run; the report names each failed expectation with sample bad values, and Data
Docs HTML is written under the given folder only (the GX context is ephemeral: nothing else is written).
Command line, used by `make validate SNAPSHOT=...`:

    python -m feature_repo.validation path/to/snapshot.parquet [--docs-dir DIR] [--reference REF.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepfm_model.spec.dates import DateLike, last_data_day, to_utc
from deepfm_model.spec.features import (
    EVENT_TIMESTAMP,
    FEATURE_NAMES,
    FEATURES,
    FEATURES_BY_NAME,
    LABEL,
    MOVIE_KEY,
    PICKED,
    RATING,
    USER_KEY,
    Kind,
)
from deepfm_model.spec.files import to_python, write_json
from deepfm_model.spec.raw_data import EVENT_COLUMNS, MOVIE_COLUMNS, USER_COLUMNS, RawData
from feature_repo.rules import RATED, SNAPSHOT_RULES, SNAPSHOT_UNIQUE, SOURCE_RULES, Check, where_pandas

logger = logging.getLogger(__name__)

SUITE_NAME = "training_snapshot"
DOCS_SITE = "deepfm"
SAMPLE_SIZE = 5  # bad values quoted per failed expectation
# Events (source suite) and snapshot rows (snapshot suite) the suites run on in memory; larger tables are sampled,
# and their exact checks run in SQL (`raw_source.check`, `snapshot_validation`).
SAMPLE_ROWS = 200_000
SNAPSHOT_COLUMNS = (*FEATURE_NAMES, EVENT_TIMESTAMP, RATING, LABEL, PICKED)
# Key features watched for drift: every numeric input and every categorical with a closed domain.
DRIFT_FEATURES = tuple(
    f.name for f in FEATURES if f.kind is Kind.NUMERIC or (f.kind is Kind.CATEGORICAL and f.allowed is not None)
)
PSI_BINS = 10  # reference deciles; ties (e.g. many zero counts) merge bins
PSI_FLOOR = 1e-4  # share given to an empty bin, so that PSI stays finite
RUN_DAY_COLUMN = "on_run_day"  # derived 0/1 column of the events batch: the event lies on the run's day


@dataclass(frozen=True)
class SuiteConfig:
    """Thresholds of the snapshot suite that are not in the feature spec."""

    min_rows: int = 1000  # fewer labelled events than this cannot train or evaluate anything meaningful
    min_label_rate: float = 0.2  # MovieLens-100K: 0.55 positive; far outside the band means a broken label
    max_label_rate: float = 0.9
    # Row count band around the previous accepted snapshot: snapshots are cumulative and grow by one day a
    # night, so half of the reference means lost data, twice it a replayed or duplicated feed.
    min_row_ratio: float = 0.5
    max_row_ratio: float = 2.0
    max_label_rate_shift: float = 0.1  # |label rate - reference's| above this means the label or the feed changed
    max_psi: float = 0.25  # population stability index per drift feature (module docstring)


@dataclass(frozen=True)
class SourceSuiteConfig:
    """Thresholds of the raw-source suite."""

    min_day_events: int = 1  # events required on the run's day; 0 accepts an empty day (MovieLens has 2)
    # Events' ids must be ids of the profile tables. Off where `raw_source.check` has checked it exactly in SQL:
    # the expectation carries every id, and Great Expectations' cost grows with that list (~70 s at 500k users).
    known_ids: bool = True


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of validating one snapshot.

    Attributes:
        success: every expectation passed.
        summary: readable text: verdict, each failed expectation with sample bad values, the Data Docs path.
        failures: one line per failed expectation (also in `summary`).
        docs_path: the Data Docs page of this validation (or the site index when no page was found).
        evaluated: number of expectations run.
    """

    success: bool
    summary: str
    failures: tuple[str, ...]
    docs_path: Path
    evaluated: int


def build_expectations(
    config: SuiteConfig = SuiteConfig(), reference: dict | None = None, whole: bool = True
) -> list[Any]:
    """The snapshot suite's expectations: the columns and their types, then `rules.SNAPSHOT_RULES`.

    Args:
        config: thresholds that are not in the feature spec.
        reference: stats of the previous accepted snapshot (`record_reference`); adds the row count band and
            the label rate shift. Drift is checked on a separate batch (`drift_expectations`).
        whole: the batch is the whole snapshot. `False` (a sample) leaves out the table-level expectations (row
            count, repeated events, label rate), which `snapshot_validation` then checks exactly in SQL.
    """
    import great_expectations.expectations as gxe

    expectations: list[Any] = [gxe.ExpectColumnToExist(column=column) for column in SNAPSHOT_COLUMNS]
    if whole:
        min_rows, max_rows = row_band(config, reference)
        expectations.append(gxe.ExpectTableRowCountToBeBetween(min_value=min_rows, max_value=max_rows))
        expectations.append(SNAPSHOT_UNIQUE.expectation())
    expectations += [
        gxe.ExpectColumnValuesToBeOfType(column=f.name, type_="float64" if f.kind is Kind.NUMERIC else "str")
        for f in FEATURES
    ]
    expectations += [rule.expectation() for rule in SNAPSHOT_RULES]
    if whole:
        expectations += [
            gxe.ExpectColumnMeanToBeBetween(
                column=LABEL,
                min_value=low,
                max_value=high,
                row_condition=where_pandas(RATED),
                condition_parser="pandas",
            )  # fmt: skip
            for low, high in label_rate_bands(config, reference)
        ]
    return expectations


def row_band(config: SuiteConfig, reference: dict | None) -> tuple[int, int | None]:
    """(min, max) rows of a snapshot: `config.min_rows`, and the band around the reference's when there is one."""
    if reference is None:
        return config.min_rows, None
    rows = reference["rows"]
    return max(config.min_rows, math.ceil(config.min_row_ratio * rows)), math.floor(config.max_row_ratio * rows)


def label_rate_bands(config: SuiteConfig, reference: dict | None) -> list[tuple[float, float]]:
    """The (min, max) bands the label rate must lie in: the fixed one, and the shift from the reference's."""
    bands = [(config.min_label_rate, config.max_label_rate)]
    if reference is not None:
        rate = reference["label_rate"]
        shift = config.max_label_rate_shift
        bands.append((round(max(0.0, rate - shift), 6), round(min(1.0, rate + shift), 6)))
    return bands


def drift_expectations(reference: dict, config: SuiteConfig = SuiteConfig()) -> list[Any]:
    """PSI of each drift feature at most `config.max_psi`: expectations over the one-row `psi_table`."""
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToBeBetween(column=f"psi_{name}", min_value=0.0, max_value=config.max_psi)
        for name in reference["features"]
    ]


def source_expectations(
    users: pd.DataFrame, movies: pd.DataFrame, now: pd.Timestamp, config: SourceSuiteConfig = SourceSuiteConfig()
) -> dict[str, list[Any]]:
    """The raw-source suite, per table (`events`, `users`, `movies`): `rules.SOURCE_RULES` and what only GX says.

    Args:
        users: the users table; its ids are the set events may reference.
        movies: the movies table; likewise.
        now: no event may be stamped after this instant.
        config: thresholds.
    """
    import great_expectations.expectations as gxe

    ids = {  # every id of the profiles: only when an expectation carries them
        "users": sorted(users[USER_KEY].dropna().astype(str)),
        "movies": sorted(movies[MOVIE_KEY].dropna().astype(str)),
    } if config.known_ids else {}  # fmt: skip
    present = {
        "events": [
            *(gxe.ExpectColumnToExist(column=c) for c in EVENT_COLUMNS),
            gxe.ExpectColumnValuesToBeInTypeList(column=RATING, type_list=["int64", "int32", "Int64", "Int32"]),
            gxe.ExpectColumnSumToBeBetween(column=RUN_DAY_COLUMN, min_value=config.min_day_events),
        ],
        "users": [gxe.ExpectColumnToExist(column=c) for c in USER_COLUMNS],
        "movies": [gxe.ExpectColumnToExist(column=c) for c in MOVIE_COLUMNS],
    }
    return {
        table: present[table]
        + [rule.expectation(now, ids) for rule in rules if config.known_ids or rule.check is not Check.KNOWN]
        for table, rules in SOURCE_RULES.items()
    }


def validate_snapshot(
    frame: pd.DataFrame,
    docs_dir: Path,
    config: SuiteConfig = SuiteConfig(),
    reference: dict | Path | None = None,
) -> ValidationReport:
    """Validate a training snapshot and write its Data Docs under `docs_dir`.

    Args:
        frame: the `store.training_frame` output (features, event_timestamp, rating, label).
        docs_dir: folder for the Data Docs site (created); nothing else is written.
        config: thresholds that are not in the feature spec.
        reference: stats of the previous accepted snapshot, or the path `record_reference` wrote them to;
            `None` (first run) skips the checks against it.

    Returns:
        A `ValidationReport`; `success` is False when any expectation failed or could not run.
    """
    if reference is not None and not isinstance(reference, dict):
        reference = json.loads(Path(reference).read_text())
    batches = [("snapshot", frame, build_expectations(config, reference))]
    if reference is not None:
        batches.append(("drift", psi_table(frame, reference), drift_expectations(reference, config)))
    return run_suites(batches, docs_dir, "Snapshot", len(frame))


def validate_sources(
    raw: RawData,
    ds: DateLike,
    docs_dir: Path,
    config: SourceSuiteConfig = SourceSuiteConfig(),
    now: dt.datetime | pd.Timestamp | None = None,
) -> ValidationReport:
    """Validate the raw tables at ingest, before any source is written; Data Docs go under `docs_dir`.

    Args:
        raw: the raw tables as delivered (events of every day, users, movies).
        ds: the run's logical date; its last day of data (`spec.dates.last_data_day`) must have at least
            `config.min_day_events` events.
        docs_dir: folder for the Data Docs site (created); nothing else is written.
        config: thresholds.
        now: no event may be stamped later (UTC; default: the wall clock).

    Returns:
        A `ValidationReport` over the three tables; failures are prefixed with the table name.
    """
    now = to_utc(now if now is not None else pd.Timestamp.now(tz="UTC"))
    day = last_data_day(ds)
    events = raw.events.copy()
    if EVENT_TIMESTAMP in events.columns:
        stamps = pd.to_datetime(events[EVENT_TIMESTAMP], utc=True, errors="coerce")
        events[RUN_DAY_COLUMN] = ((stamps >= day) & (stamps < day + pd.Timedelta(days=1))).astype("int64")
    expectations = source_expectations(raw.users, raw.movies, now, config)
    batches = [("events", events, expectations["events"]), ("users", raw.users, expectations["users"]),
               ("movies", raw.movies, expectations["movies"])]  # fmt: skip
    return run_suites(batches, docs_dir, "Source", len(raw.events))


def _rated_label_rate(frame: pd.DataFrame) -> float | None:
    rated = frame[frame[PICKED] == 1] if PICKED in frame else frame
    return float(rated[LABEL].mean()) if len(rated) else None


def record_reference(frame: pd.DataFrame, path: Path, totals: dict | None = None) -> Path:
    """Write the reference stats of an accepted snapshot (row count, label rate, drift bins) as JSON, atomically.

    The next run passes the file to `validate_snapshot(reference=...)`.

    Args:
        frame: the snapshot, or a sample of it when `totals` are given.
        path: the JSON file.
        totals: `rows` and `label_rate` of the whole snapshot when `frame` is a sample (the bins come from it).

    Returns:
        `path`.
    """
    features: dict[str, dict[str, Any]] = {}
    for name in DRIFT_FEATURES:
        if name not in frame.columns:
            continue
        feature = FEATURES_BY_NAME[name]
        if feature.kind is Kind.NUMERIC:
            values = pd.to_numeric(frame[name], errors="coerce").dropna().to_numpy(dtype="float64")
            edges = np.unique(np.quantile(values, np.linspace(0, 1, PSI_BINS + 1)[1:-1])) if values.size else []
            shares = _bin_shares(values, np.asarray(edges))
            features[name] = {"kind": "numeric", "edges": [float(e) for e in edges], "shares": shares}
        else:
            categories = [*feature.allowed, None]  # None: anything outside the domain
            shares = _category_shares(frame[name], feature.allowed)
            features[name] = {"kind": "categorical", "categories": categories, "shares": shares}
    payload = {
        "rows": len(frame),
        "label_rate": _rated_label_rate(frame),
        **(totals or {}),
        "features": features,
        "recorded_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    return write_json(path, payload)


def psi_table(frame: pd.DataFrame, reference: dict) -> pd.DataFrame:
    """One row, a `psi_<feature>` column per drift feature of `reference`: the PSI of `frame` against it.

    A feature missing from `frame` gets NaN (its drift expectation then fails, next to the missing column).
    """
    row = {}
    for name, stats in reference["features"].items():
        if name not in frame.columns:
            row[f"psi_{name}"] = float("nan")
            continue
        if stats["kind"] == "numeric":
            values = pd.to_numeric(frame[name], errors="coerce").dropna().to_numpy(dtype="float64")
            current = _bin_shares(values, np.asarray(stats["edges"], dtype="float64"))
        else:
            current = _category_shares(frame[name], tuple(c for c in stats["categories"] if c is not None))
        row[f"psi_{name}"] = population_stability_index(current, stats["shares"])
    return pd.DataFrame([row])


def population_stability_index(current: list[float], reference: list[float]) -> float:
    """`sum (p - q) ln(p / q)` over matching bins; shares floored at `PSI_FLOOR`; NaN when `current` is empty."""
    p = np.maximum(np.asarray(current, dtype="float64"), PSI_FLOOR)
    q = np.maximum(np.asarray(reference, dtype="float64"), PSI_FLOOR)
    if not np.isfinite(p).all():
        return float("nan")
    return float(np.sum((p - q) * np.log(p / q)))


def _bin_shares(values: np.ndarray, edges: np.ndarray) -> list[float]:
    """Share of `values` in each bin cut at `edges` (a value equal to an edge goes to the bin above it)."""
    if values.size == 0:
        return [float("nan")] * (len(edges) + 1)
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return [float(c) for c in counts / values.size]


def _category_shares(column: pd.Series, allowed: tuple[str, ...]) -> list[float]:
    """Share of each allowed value, then of everything else (nulls included)."""
    if len(column) == 0:
        return [float("nan")] * (len(allowed) + 1)
    counts = column.astype(object).value_counts(dropna=False)
    shares = [float(counts.get(value, 0)) / len(column) for value in allowed]
    return [*shares, max(0.0, 1.0 - sum(shares))]


def run_suites(batches: list[tuple[str, pd.DataFrame, list[Any]]], docs_dir: Path, title: str,
               rows: int) -> ValidationReport:  # fmt: skip
    """Run each (name, frame, expectations) batch in one ephemeral context; Data Docs under `docs_dir`.

    The batch named `snapshot` is the `SUITE_NAME` suite; failures of the others are prefixed with their name.
    `rows` is the table's row count, for the summary.
    """
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.data_context.types.base import ProgressBarsConfig

    docs_dir = Path(docs_dir).resolve()
    docs_dir.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    for site_name in list(context.get_config().data_docs_sites or {}):
        context.delete_data_docs_site(site_name)  # the default site writes to a temporary folder
    context.add_data_docs_site(
        DOCS_SITE,
        {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    source = context.data_sources.add_pandas(title.lower())
    failures: list[str] = []
    evaluated, success, docs_path = 0, True, None
    for name, frame, expectations in batches:
        suite_name = SUITE_NAME if name == "snapshot" else f"{title.lower()}_{name}"
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(f"{name}_whole")
        suite = context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=expectations))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=suite_name, data=batch, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=suite_name,
                validation_definitions=[definition],
                actions=[UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE])],
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_SIZE},
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": frame})
        (identifier, suite_result), *_ = result.run_results.items()
        prefix = "" if name == "snapshot" else f"{name}: "
        failed = sorted((r for r in suite_result.results if not r.success), key=lambda r: _reading_order(r, frame))
        failures += [prefix + _describe(r, frame.columns) for r in failed]
        evaluated += len(suite_result.results)
        success = success and bool(result.success)
        docs_path = docs_path or _docs_page(context, identifier, docs_dir)
    verdict = "passed" if success else "FAILED"
    lines = [
        f"{title} validation {verdict}: {len(failures)} of {evaluated} expectations failed ({rows} rows).",
        *(f"- {failure}" for failure in failures),
        f"Data Docs: {docs_path}",
    ]
    return ValidationReport(
        success=success,
        summary="\n".join(lines),
        failures=tuple(failures),
        docs_path=docs_path,
        evaluated=evaluated,
    )


def _reading_order(outcome: Any, frame: pd.DataFrame) -> tuple[int, int, str]:
    """Table-level and missing-column failures first, then by column in the frame's order."""
    config = outcome.expectation_config
    column = config.kwargs.get("column")
    columns = list(SNAPSHOT_COLUMNS) + [c for c in frame.columns if c not in SNAPSHOT_COLUMNS]
    position = columns.index(column) if column in columns else -1
    structural = column is None or config.type == "expect_column_to_exist"
    return (0 if structural else 1, position, config.type)


def _describe(outcome: Any, columns: pd.Index) -> str:
    config = outcome.expectation_config
    skipped = ("batch_id", "value_set", "regex", "row_condition", "condition_parser")
    kwargs = {k: v for k, v in config.kwargs.items() if k not in skipped}
    arguments = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    text = f"{config.type}({arguments})"
    condition = config.kwargs.get("row_condition")
    if condition:  # the sampled rows' own rules, or the events' ones: said after the outcome
        where = condition.get("pass_through_filter") if isinstance(condition, dict) else str(condition)
        return f"{_outcome(text, outcome, columns)} (rows where {where})"
    return _outcome(text, outcome, columns)


def _outcome(text: str, outcome: Any, columns: pd.Index) -> str:
    """`text`, then what the outcome of its expectation was."""
    config = outcome.expectation_config
    column = config.kwargs.get("column")
    if column is not None and column not in columns:
        return f"{text}: column {column!r} is missing"
    info = outcome.exception_info or {}
    if info.get("raised_exception"):
        message = str(info.get("exception_message", "")).strip().splitlines()
        return f"{text}: could not run: {message[0] if message else 'unknown error'}"
    details = outcome.result or {}
    if "unexpected_count" in details:
        sample = [to_python(v) for v in details.get("partial_unexpected_list", [])[:SAMPLE_SIZE]]
        total = details.get("element_count", "?")
        return f"{text}: {details['unexpected_count']} of {total} values unexpected, e.g. {sample!r}"
    if "observed_value" in details:
        return f"{text}: observed {to_python(details['observed_value'])!r}"
    return f"{text}: failed"


def _docs_page(context: Any, identifier: Any, docs_dir: Path) -> Path:
    for site in context.get_docs_sites_urls(resource_identifier=identifier, site_names=[DOCS_SITE]):
        url = site.get("site_url") or ""
        if url.startswith("file://"):
            return Path(url.removeprefix("file://"))
    return docs_dir / "index.html"


def main(argv: list[str] | None = None) -> int:
    """Validate a parquet snapshot; exit 0 when valid, 1 (printing the summary) otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("snapshot", type=Path, help="training snapshot parquet file")
    parser.add_argument(
        "--docs-dir", type=Path, default=None, help="Data Docs folder (default: <snapshot folder>/data_docs)"
    )
    parser.add_argument(
        "--reference", type=Path, default=None, help="reference stats of the previous accepted snapshot (JSON)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    frame = pd.read_parquet(args.snapshot)
    docs_dir = args.docs_dir or args.snapshot.resolve().parent / "data_docs"
    report = validate_snapshot(frame, docs_dir, reference=args.reference)
    print(report.summary)
    return 0 if report.success else 1


if __name__ == "__main__":
    sys.exit(main())
