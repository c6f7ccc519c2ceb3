"""The source tables of a logical date as frames, for tests that check what `ingest.write_sources` writes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from deepfm_model.spec.dates import DateLike
from deepfm_model.spec.features import USER_GENRE_STATS_VIEW, VIEWS
from deepfm_model.spec.raw_data import RawData
from feature_repo import ingest


def build_sources(raw: RawData, ds: DateLike) -> dict[str, pd.DataFrame]:
    """The source tables for logical date `ds`, keyed by feature view name (what `write_sources` writes)."""
    with tempfile.TemporaryDirectory(prefix="sources-") as folder:
        ingest.write_sources(raw, ds, Path(folder))
        return {view: ingest.read_source(Path(folder), view) for view in (*VIEWS, USER_GENRE_STATS_VIEW)}
