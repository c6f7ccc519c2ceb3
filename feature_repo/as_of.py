"""Features of any (user, movie) pair as a past night served them: a second Feast repo brought to an earlier date.

The full-catalogue evaluation ranks every movie for each user of the test window with the features the online
store held when the window began. The stats and fresh views keep a row for every entity only at the run's cutoff
(the "now" rows that are materialized); at an earlier instant they hold rows only for the entities active that
day (`daily_stats`), so a point-in-time read of the run's own repo at the window's start would find most pairs
empty. `AsOfRepo` keeps a repo of its own (its own sources, file registry and project) whose sources are written
by the nightly `ingest.write_sources` for the earlier logical date: its "now" rows are exactly what the night of
that date materialized, read through the same `store.training_frame` as the training set. The repo is kept
between nights, so a later date only aggregates and folds the days that were added (`daily_stats`,
`fresh_features`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import pandas as pd

from deepfm_model.spec.dates import data_cutoff
from deepfm_model.spec.features import EVENT_TIMESTAMP, LABEL, MOVIE_KEY, PICKED, RATING, USER_KEY
from feature_repo import ingest
from feature_repo import store as feature_store

logger = logging.getLogger(__name__)

PROJECT = "deepfm_as_of"  # its own Feast project: nothing it registers can be mistaken for the served repo's


class AsOfRepo:
    """A Feast repo in `repo_dir` whose sources are those of the night of an earlier logical date.

    Args:
        repo_dir: the repo's folder (created); not the served `feature_repo/`.
    """

    def __init__(self, repo_dir: Path) -> None:
        self.repo_dir = Path(repo_dir)

    def update(self, con: duckdb.DuckDBPyConnection, ds: str) -> None:
        """Bring the repo's sources to the night of `ds` and register its views: the fold over the history up to
        `ds`, the memory-hungry part (about 3.7 GB above what the caller holds at 10M events, 500,000 users).

        Args:
            con: a connection over the raw tables with their typed views (`raw_source.check` made them).
            ds: the logical date whose night's sources are written.
        """
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        feature_store.write_config(self.repo_dir, project=PROJECT)
        ingest.write_sources(con, ds, feature_store.data_dir(self.repo_dir))
        feature_store.apply(feature_store.open_store(self.repo_dir))

    def frame(self, ds: str, pairs: pd.DataFrame) -> pd.DataFrame:
        """The features of `pairs` (user_id, movie_id) as the night of `ds` put them online (`update` to `ds` first).

        Args:
            ds: the logical date: its cutoff (`ds` 00:00 UTC) is the instant the features are read at.
            pairs: the (user, movie) pairs, ids as str.

        Returns:
            `store.TRAINING_COLUMNS` of each pair, in `pairs`' order (`event_timestamp` the cutoff; rating, label
            and picked 0: these are not events).
        """
        rows = pd.DataFrame({USER_KEY: pairs[USER_KEY].astype(str).to_numpy(),
                             MOVIE_KEY: pairs[MOVIE_KEY].astype(str).to_numpy()})  # fmt: skip
        rows[EVENT_TIMESTAMP] = data_cutoff(ds)
        rows[RATING], rows[LABEL], rows[PICKED] = 0, 0, 0
        rows["pair"] = range(len(rows))
        frame = feature_store.training_frame(feature_store.open_store(self.repo_dir), rows)
        logger.info("Features of %d pairs as of %s read from %s", len(rows), ds, self.repo_dir)
        return frame.sort_values("pair").drop(columns="pair").reset_index(drop=True)
