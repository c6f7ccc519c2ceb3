"""Validation: a Great Expectations suite over a training snapshot, derived from the feature spec.

The suite checks what the model relies on: every column is there with its type, keys and features are never
null, numerics lie in the spec's ranges, categoricals with a closed domain take only `allowed` values (genres:
each `|`-separated token), the label is 0/1 with a positive rate inside a band, and there are enough rows.

A failing snapshot stops the nightly run; `validate_snapshot` returns a one-glance summary naming each failed
expectation with sample bad values, and writes Data Docs HTML under the given folder only (the GX context is
ephemeral: nothing else is written). Command line, used by `make validate SNAPSHOT=...`:

    python -m feature_repo.validation path/to/snapshot.parquet [--docs-dir DIR]
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from deepfm_model.features import (
    EVENT_TIMESTAMP,
    FEATURE_NAMES,
    FEATURES,
    LABEL,
    MULTI_VALUE_SEPARATOR,
    RATING,
    Feature,
    Kind,
)

logger = logging.getLogger(__name__)

SUITE_NAME = "training_snapshot"
DOCS_SITE = "deepfm"
SAMPLE_SIZE = 5  # bad values quoted per failed expectation
SNAPSHOT_COLUMNS = (*FEATURE_NAMES, EVENT_TIMESTAMP, RATING, LABEL)


@dataclass(frozen=True)
class SuiteConfig:
    """Thresholds of the suite that are not in the feature spec."""

    min_rows: int = 1000  # fewer labelled events than this cannot train or evaluate anything meaningful
    min_label_rate: float = 0.2  # MovieLens-100K: 0.55 positive; far outside the band means a broken label
    max_label_rate: float = 0.9


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


def genres_regex(allowed: tuple[str, ...], separator: str = MULTI_VALUE_SEPARATOR) -> str:
    """Regex of a multi-valued field: allowed tokens joined by `separator`, or the empty string (no value)."""
    token = "(?:" + "|".join(re.escape(value) for value in allowed) + ")"
    return rf"^(?:{token}(?:{re.escape(separator)}{token})*)?$"


def build_expectations(config: SuiteConfig = SuiteConfig()) -> list[Any]:
    """The suite's expectations, derived from `features.FEATURES`, in reading order."""
    import great_expectations.expectations as gxe

    expectations: list[Any] = [gxe.ExpectColumnToExist(column=column) for column in SNAPSHOT_COLUMNS]
    expectations.append(gxe.ExpectTableRowCountToBeBetween(min_value=config.min_rows))
    for feature in FEATURES:
        expectations.extend(_feature_expectations(feature))
    expectations += [
        gxe.ExpectColumnValuesToNotBeNull(column=EVENT_TIMESTAMP),
        gxe.ExpectColumnValuesToNotBeNull(column=RATING),
        gxe.ExpectColumnValuesToBeBetween(column=RATING, min_value=1, max_value=5),
        gxe.ExpectColumnValuesToNotBeNull(column=LABEL),
        gxe.ExpectColumnValuesToBeInSet(column=LABEL, value_set=[0, 1]),
        gxe.ExpectColumnMeanToBeBetween(
            column=LABEL, min_value=config.min_label_rate, max_value=config.max_label_rate
        ),
    ]
    return expectations


def _feature_expectations(feature: Feature) -> list[Any]:
    import great_expectations.expectations as gxe

    column = feature.name
    expectations: list[Any] = [gxe.ExpectColumnValuesToNotBeNull(column=column)]
    if feature.kind is Kind.NUMERIC:
        expectations.append(gxe.ExpectColumnValuesToBeOfType(column=column, type_="float64"))
        if feature.min_value is not None or feature.max_value is not None:
            expectations.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=column, min_value=feature.min_value, max_value=feature.max_value
                )
            )
        return expectations
    expectations.append(gxe.ExpectColumnValuesToBeOfType(column=column, type_="str"))
    if feature.allowed is not None and feature.kind is Kind.MULTI_CATEGORICAL:
        expectations.append(gxe.ExpectColumnValuesToMatchRegex(column=column, regex=genres_regex(feature.allowed)))
    elif feature.allowed is not None:
        expectations.append(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(feature.allowed)))
    return expectations


def validate_snapshot(frame: pd.DataFrame, docs_dir: Path, config: SuiteConfig = SuiteConfig()) -> ValidationReport:
    """Validate a training snapshot and write its Data Docs under `docs_dir`.

    Args:
        frame: the `store.training_frame` output (features, event_timestamp, rating, label).
        docs_dir: folder for the Data Docs site (created); nothing else is written.
        config: thresholds that are not in the feature spec.

    Returns:
        A `ValidationReport`; `success` is False when any expectation failed or could not run.
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
    batch = (
        context.data_sources.add_pandas("snapshot")
        .add_dataframe_asset("training_frame")
        .add_batch_definition_whole_dataframe("whole_frame")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME, expectations=build_expectations(config)))
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=SUITE_NAME, data=batch, suite=suite))
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=SUITE_NAME,
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE])],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_SIZE},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    (identifier, suite_result), *_ = result.run_results.items()
    failed = sorted((r for r in suite_result.results if not r.success), key=_reading_order)
    failures = tuple(_describe(r, frame.columns) for r in failed)
    docs_path = _docs_page(context, identifier, docs_dir)
    verdict = "passed" if result.success else "FAILED"
    lines = [
        (
            f"Snapshot validation {verdict}: {len(failures)} of {len(suite_result.results)} expectations failed "
            f"({len(frame)} rows)."
        ),
        *(f"- {failure}" for failure in failures),
        f"Data Docs: {docs_path}",
    ]
    return ValidationReport(
        success=bool(result.success),
        summary="\n".join(lines),
        failures=failures,
        docs_path=docs_path,
        evaluated=len(suite_result.results),
    )


def _reading_order(outcome: Any) -> tuple[int, int, str]:
    """Table-level and missing-column failures first, then by column in snapshot order."""
    config = outcome.expectation_config
    column = config.kwargs.get("column")
    position = SNAPSHOT_COLUMNS.index(column) if column in SNAPSHOT_COLUMNS else -1
    structural = column is None or config.type == "expect_column_to_exist"
    return (0 if structural else 1, position, config.type)


def _describe(outcome: Any, columns: pd.Index) -> str:
    config = outcome.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "value_set", "regex")}
    arguments = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    text = f"{config.type}({arguments})"
    column = config.kwargs.get("column")
    if column is not None and column not in columns:
        return f"{text}: column {column!r} is missing"
    info = outcome.exception_info or {}
    if info.get("raised_exception"):
        message = str(info.get("exception_message", "")).strip().splitlines()
        return f"{text}: could not run: {message[0] if message else 'unknown error'}"
    details = outcome.result or {}
    if "unexpected_count" in details:
        sample = [_plain(v) for v in details.get("partial_unexpected_list", [])[:SAMPLE_SIZE]]
        total = details.get("element_count", "?")
        return f"{text}: {details['unexpected_count']} of {total} values unexpected, e.g. {sample!r}"
    if "observed_value" in details:
        return f"{text}: observed {_plain(details['observed_value'])!r}"
    return f"{text}: failed"


def _plain(value: Any) -> Any:
    """Numpy scalars as Python ones, so that messages read `0.0`, not `np.float64(0.0)`."""
    return value.item() if hasattr(value, "item") and callable(value.item) else value


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    frame = pd.read_parquet(args.snapshot)
    docs_dir = args.docs_dir or args.snapshot.resolve().parent / "data_docs"
    report = validate_snapshot(frame, docs_dir)
    print(report.summary)
    return 0 if report.success else 1


if __name__ == "__main__":
    sys.exit(main())
