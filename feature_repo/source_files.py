"""Where a Feast repo keeps its data, and each feature view's source in it: the names `ingest` writes and Feast's
sources (`sources.py`) read. Apart from `sources.py` so that the ingest task does not import Feast (3.7 s of a
task process)."""

from __future__ import annotations

from pathlib import Path

from deepfm_model.spec.features import MOVIE_STATS_VIEW, USER_FRESH_VIEW, USER_GENRE_STATS_VIEW, USER_STATS_VIEW

REPO_DIR = Path(__file__).resolve().parent  # the project's own repo: feature_repo/
DATA_DIR_NAME = "data"  # under the repo directory; git-ignored
# Views whose source is a folder of daily files; both offline stores read the glob (DuckDB, Dask).
PARTITIONED_VIEWS = (USER_STATS_VIEW, MOVIE_STATS_VIEW, USER_GENRE_STATS_VIEW, USER_FRESH_VIEW)


def data_dir(repo_dir: Path = REPO_DIR) -> Path:
    """The git-ignored folder of a repo that holds sources, registry and online store."""
    return Path(repo_dir) / DATA_DIR_NAME


def source_file(view: str) -> str:
    """File name of the parquet source that feeds profile view `view`."""
    return f"{view}.parquet"


def source_path(view: str) -> str:
    """Path of the source of `view`, relative to the repo directory: a file, or a glob over daily files."""
    return f"{DATA_DIR_NAME}/{view}/*.parquet" if view in PARTITIONED_VIEWS else f"{DATA_DIR_NAME}/{source_file(view)}"
