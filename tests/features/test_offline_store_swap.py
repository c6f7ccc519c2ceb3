"""The offline store is configuration: swapping DuckDB for Feast's `file` (Dask) store changes no training row."""

from __future__ import annotations

import pandas as pd

from feature_repo import store

from .conftest import DS, repo_with


def test_file_offline_store_gives_the_same_training_frame(raw, training, events, tmp_path) -> None:
    file_store = repo_with(raw, DS, tmp_path / "file_repo", offline_store={"type": "file"})
    assert file_store.config.offline_store.type == "file"
    pd.testing.assert_frame_equal(store.training_frame(file_store, events), training, check_exact=False)
