"""The stages of one nightly run, as plain functions of (config, ds) that the DAG's tasks call.

Each stage reads what the stage before it left in the run directory `artifacts/runs/<ds>/` and writes its own
outputs there, so a task can be retried or a date re-run without redoing (or re-pushing) finished work.
The run for logical date `ds` trains on every rating event strictly before `ds` 00:00 UTC.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

logger = logging.getLogger(__name__)


class ValidationFailed(RuntimeError):
    """The training snapshot failed its Great Expectations suite; nothing downstream may run."""


@dataclass(frozen=True)
class PipelineConfig:
    """Where a run reads and writes, and the gates it applies.

    Attributes:
        home: project root.
        source: `"movielens"` (MovieLens-100K, fetched at set-up) or `"synthetic"` (small generated data).
        feature_repo: the Feast repository folder.
        data_cache: folder of the verified MovieLens download.
        artifacts: folder holding `runs/<ds>/` and the `latest` link.
        model_base_path: TF Serving model base path; versions go to `<base>/<model_name>/<n>/`.
        model_name: served model name.
        auc_floor: a candidate below this test AUC is never pushed.
        auc_tolerance: a candidate may trail the serving model's AUC by at most this much.
        epochs: maximum training epochs (early stopping usually ends sooner).
    """

    home: Path
    source: str = "movielens"
    feature_repo: Path | None = None
    data_cache: Path | None = None
    artifacts: Path | None = None
    model_base_path: Path | None = None
    model_name: str = "deepfm"
    auc_floor: float = 0.6
    auc_tolerance: float = 0.01
    epochs: int = 10

    def __post_init__(self) -> None:
        if self.source not in ("movielens", "synthetic"):
            raise ValueError(f"`source` must be 'movielens' or 'synthetic'. Received: `source={self.source!r}`")
        defaults = {
            "feature_repo": self.home / "feature_repo",
            "data_cache": self.home / "data" / "movielens",
            "artifacts": self.home / "artifacts",
            "model_base_path": self.home / "models",
        }
        for name, default in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)

    @classmethod
    def from_env(cls, home: Path) -> PipelineConfig:
        """Config from `DEEPFM_*` environment variables, for the DAG and command lines only."""
        env = os.environ

        def path(name: str) -> Path | None:
            return Path(env[name]) if name in env else None

        return cls(
            home=home,
            source=env.get("DEEPFM_SOURCE", "movielens"),
            feature_repo=path("DEEPFM_FEATURE_REPO"),
            data_cache=path("DEEPFM_DATA_CACHE"),
            artifacts=path("DEEPFM_ARTIFACTS"),
            model_base_path=path("DEEPFM_MODEL_BASE_PATH"),
            auc_floor=float(env.get("DEEPFM_AUC_FLOOR", cls.auc_floor)),
            epochs=int(env.get("DEEPFM_EPOCHS", cls.epochs)),
        )

    def run_dir(self, ds: str) -> Path:
        """The run directory of logical date `ds` (YYYY-MM-DD)."""
        return self.artifacts / "runs" / ds


def _cutoff(ds: str) -> pd.Timestamp:
    return pd.Timestamp(ds, tz="UTC").normalize()


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_suffix(".partial")
    staged.write_text(json.dumps(payload, indent=2, default=str))
    staged.replace(path)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def load_raw(config: PipelineConfig):
    """The raw tables of the configured source."""
    if config.source == "synthetic":
        from deepfm_model import synthetic

        return synthetic.generate()
    from deepfm_model import movielens

    return movielens.load(config.data_cache)
